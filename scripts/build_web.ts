// `npm run build`, after tsc: the browser bundles. `internvl-ts/web` as one ESM file (dist/web/internvl-web.js), and
// the pages `internvl verify --browser` and `internvl web` serve from an installed package (no esbuild at run time).
//
//   node --import tsx scripts/build_web.ts
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundle } from '../src/apps/browser/bundle.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outputs: Array<[entry: string, out: string]> = [
  ['src/web/index.ts', 'dist/web/internvl-web.js'],
  ['src/apps/browser/page/harness_page.ts', 'dist/apps/browser/page/harness_page.js'],
  ['src/apps/browser/page/demo_page.ts', 'dist/apps/browser/page/demo_page.js'],
];
for (const [entry, out] of outputs) {
  const bytes = await bundle(path.join(repo, entry), { minify: true });
  fs.mkdirSync(path.dirname(path.join(repo, out)), { recursive: true });
  fs.writeFileSync(path.join(repo, out), bytes);
  process.stderr.write(`${out}: ${(bytes.byteLength / 1024).toFixed(0)} KiB\n`);
}
