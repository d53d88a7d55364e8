/**
 * The browser bundles: the library entry `internvl-ts/web` and the harness's pages (page/*.ts), each one ESM file
 * built by esbuild. onnxruntime-web is not in them: the page imports the build it wants and hands it over.
 *
 * From source (development, tests) a page is bundled when it is served; an installed package serves the bundles
 * `npm run build` wrote next to this module.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type PageName = 'harness_page' | 'demo_page';

/** Bundles one TypeScript entry for the browser (ES2022 modules, minified when asked). */
export async function bundle(entry: string, options: { minify?: boolean } = {}): Promise<Uint8Array> {
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    minify: options.minify ?? false,
    write: false,
    logLevel: 'silent',
    legalComments: 'none',
  });
  return result.outputFiles[0].contents;
}

/** A page script: bundled from its source when there is one (development), else the prebuilt bundle. */
export async function pageScript(name: PageName): Promise<Uint8Array> {
  const source = fileURLToPath(new URL(`./page/${name}.ts`, import.meta.url));
  if (fs.existsSync(source)) return bundle(source);
  return fs.readFileSync(fileURLToPath(new URL(`./page/${name}.js`, import.meta.url)));
}

/** Where onnxruntime-web's `dist/` folder (its ESM builds and `.wasm` files) is installed. */
export function onnxruntimeWebDist(): string {
  // The package's Node entry lies in dist/ beside the browser builds.
  return path.dirname(fileURLToPath(import.meta.resolve('onnxruntime-web')));
}
