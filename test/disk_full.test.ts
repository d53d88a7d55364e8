/**
 * A full disk or a file-size limit is a clear error naming the file (exit 2), never a truncated file left where a
 * later run would take it: the old file stays as it was, no temporary file is left, and the next run with space
 * succeeds. Full disks are made in a private small tmpfs (`unshare -rm`, needs user namespaces or root); file-size
 * limits with `ulimit -f`. Each is skipped, with the reason, where the machine does not allow it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { writeSafetensors } from '../src/core/node/files.js';
import { DATA, errorLines, REPO, tempDir } from './helpers/cli.js';

const CHILD = path.join(REPO, 'test', 'helpers', 'write_child.ts');
const CLI = path.join(REPO, 'bin', 'internvl-dev.ts');
const work = tempDir('internvl-disk-full-');

function sh(script: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', ['-c', script, 'sh', ...args], { encoding: 'utf8', cwd: REPO, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Why a private tmpfs cannot be mounted here, or undefined when it can. */
function tmpfsUnavailable(): string | undefined {
  const probe = sh('unshare -rm sh -c "mount -t tmpfs -o size=64k tmpfs \\"$1\\" && echo mounted" sh "$1"', [work]);
  return probe.stdout.includes('mounted')
    ? undefined
    : `no private tmpfs (unshare -rm + mount): ${probe.stderr.trim()}`;
}
const noTmpfs = tmpfsUnavailable();

/** Runs `command` (args $2…) in a private tmpfs of `size` mounted at $1, first filled with `fill` bytes. */
function inSmallTmpfs(dir: string, size: string, fill: number, command: string, args: string[]) {
  fs.mkdirSync(dir, { recursive: true });
  const script =
    `mount -t tmpfs -o size=${size} tmpfs "$1" && ` +
    `printf old > "$1/out.safetensors" && printf old > "$1/x.bin" && ` +
    `{ [ ${fill} -eq 0 ] || head -c ${fill} /dev/zero > "$1/filler" 2>/dev/null || true; } && ${command}; code=$?; ` +
    `ls -a "$1" >&2; cat "$1/out.safetensors" "$1/x.bin" >&2; exit $code`;
  return sh(`unshare -rm bash -c '${script.replace(/'/g, `'\\''`)}' bash "$@"`, [dir, ...args]);
}

function assertDiskError(r: { code: number | null; stderr: string }, file: string, extra = ''): void {
  assert.equal(r.code, 2, r.stderr);
  const [line] = errorLines(r.stderr);
  assert.equal(line, `error: no space left writing ${file}${extra}`);
}

test('a file-size limit (ulimit -f) while writing: a one-line error, the old file intact, no temporary file', () => {
  const target = path.join(work, 'limited.bin');
  fs.writeFileSync(target, 'old');
  const r = sh('ulimit -f 64 && exec node --import tsx "$1" atomic "$2" 200000', [CHILD, target]);
  assertDiskError(r, target, ' (the file-size limit was reached)');
  assert.equal(fs.readFileSync(target, 'utf8'), 'old');
  assert.deepEqual(
    fs.readdirSync(work).filter((f) => f.includes('limited.bin')),
    ['limited.bin'],
  );
});

test('a full disk while writing --out of embed-image: exit 2, one line, nothing half-written', {
  skip: noTmpfs,
}, () => {
  const dir = path.join(work, 'full-out');
  const image = path.join(DATA, 'images', 'chelsea.png');
  const model = path.join(DATA, 'fixtures', 'intern_vit_ln');
  const r = inSmallTmpfs(
    dir,
    '64k',
    65536,
    'node --import tsx "$2" embed-image --model "$3" "$4" --out "$1/out.safetensors"',
    [CLI, model, image],
  );
  assertDiskError(r, `${dir}/out.safetensors`);
  // `ls -a` of the tmpfs, then the old file's content: only the filler and the two old files.
  assert.match(r.stderr, /^\.\n\.\.\nfiller\nout\.safetensors\nx\.bin\noldold$/m);
});

test('a full disk while writing the weight cache: a one-line error, no entry left; then a run with space works', {
  skip: noTmpfs,
}, () => {
  const model = path.join(work, 'bf16-model');
  fs.mkdirSync(model, { recursive: true });
  writeSafetensors(path.join(model, 'model.safetensors'), {
    'proj.weight': { dtype: 'BF16', shape: [256, 256], data: new Uint16Array(256 * 256).fill(0x3f80) },
  });
  const dir = path.join(work, 'full-cache');
  // 256×256 float32 weights need 256 KiB; the tmpfs holds 128 KiB.
  const r = inSmallTmpfs(dir, '128k', 0, 'node --import tsx "$2" cache "$3" "$1"', [CHILD, model]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(errorLines(r.stderr)[0], new RegExp(`^error: no space left writing ${dir}/weights-[0-9a-f]{32}\\.bin$`));
  assert.match(r.stderr, /^\.\n\.\.\nout\.safetensors\nx\.bin\noldold$/m, 'no data file, manifest, lock or temp file');
  const roomy = sh('node --import tsx "$1" cache "$2" "$3"', [CHILD, model, path.join(work, 'roomy-cache')]);
  assert.equal(roomy.stdout, 'ok\n', roomy.stderr);
});
