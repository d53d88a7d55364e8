/**
 * Child process for the disk-full tests (run under `ulimit -f` or inside a private small tmpfs):
 *   atomic <file> <bytes>     writes <bytes> bytes all-or-nothing to <file>
 *   cache <model> <cacheDir>  builds a session whose bf16 weights go through the weight cache in <cacheDir>
 *   hub <endpoint> <cacheDir> <repo>  downloads <repo> from a (fake) Hub into <cacheDir>, with retries (a disk error must not use them)
 * Errors are reported as the CLI reports them (one line and exit 2 for a user's problem, such as a full disk).
 */
import path from 'node:path';
import { reportError } from '../../src/apps/cli/main.js';
import { writeFileAtomicSync } from '../../src/core/node/atomic_write.js';
import { GraphBuilder } from '../../src/core/graph.js';
import { resolveModelDir } from '../../src/core/hub.js';
import { createSession } from '../../src/core/session.js';
import { Checkpoint } from '../../src/core/safetensors.js';

const [mode, a, b, c] = process.argv.slice(2);
try {
  if (mode === 'atomic') {
    writeFileAtomicSync(a, Buffer.alloc(Number(b), 7));
  } else if (mode === 'cache') {
    const g = new GraphBuilder('disk_full', await Checkpoint.open(a));
    const [, K] = g.weightShape('proj.weight');
    g.output(g.scope('').linear(g.input('x', 'float32', [1, K]), 'proj'), 'y');
    await (await createSession(g, { cacheDir: path.resolve(b), threads: 1 })).release();
  } else if (mode === 'hub') {
    await resolveModelDir(c, { endpoint: a, cacheDir: b, retries: 3 });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  process.stdout.write('ok\n');
} catch (error) {
  process.exitCode = reportError(error);
}
