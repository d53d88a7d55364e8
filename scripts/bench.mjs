#!/usr/bin/env node
// `npm run bench`: the benchmarks of docs/benchmarks.md, each in a fresh process (peak RSS is per process), from
// source through tsx so that no build is needed. Prints one JSON array on stdout; progress goes to stderr.
//
//   node scripts/bench.mjs [--runs N] [--only <shape or target>] [--threads N]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, only: { type: 'string' }, threads: { type: 'string' } },
});

// The 6B encoder (24 GB of float32 weights) does not fit a small machine: 4 layers are timed and extrapolated.
// `bench chat` runs each llm/vision configuration in its own process already; `bench clip` extrapolates from
// truncated InternVL-14B-shaped checkpoints; `bench accuracy` measures each weight format on the golden fixtures;
// `bench search` times search over 100k and 1M vectors, the index's overhead and 1 vs 2 queue workers (it starts a
// redis-server).
const fixtures = path.join(repo, 'test', 'data', 'fixtures');
const fixtureDirs = fs.readdirSync(fixtures).map((name) => path.join(fixtures, name));
const BENCHMARKS = [
  ['vision', ['--shape', 'internvit-300m-448', '--dtype', 'float32', '--batch', '1']],
  ['vision', ['--shape', 'internvit-300m-448', '--dtype', 'float32', '--batch', '1', '--weights', 'int8']],
  ['vision', ['--shape', 'internvit-6b-224', '--dtype', 'float32', '--batch', '1', '--layers', '4']],
  ['chat', ['--shape', 'internvl2-1b', '--configs', 'fp32/fp32,int4/fp32,int4/int8,int4+int8/int8,int8/int8']],
  ['clip', ['--weights', 'float32,int8,int8-block']],
  ['serve', ['--weights', 'int4', '--concurrency', '4', '--soak', '200']],
  ['accuracy', fixtureDirs],
  ['accuracy', ['--all-linears', ...fixtureDirs]],
  ['search', []],
];

function run(args, target = 'vision') {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(repo, 'bin', 'internvl-dev.ts'), 'bench', target, ...args],
      {
        cwd: repo,
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(JSON.parse(stdout))
        : reject(new Error(`bench ${target} ${args.join(' ')} exited with ${code}`)),
    );
  });
}

const results = [];
for (const [target, args] of BENCHMARKS) {
  if (values.only && !args.includes(values.only) && values.only !== target) continue;
  // `bench serve` sizes its run by requests, not runs; `bench accuracy` times nothing.
  const runs = target === 'serve' || target === 'accuracy' ? [] : ['--runs', values.runs];
  const extra = [...runs, ...(values.threads ? ['--threads', values.threads] : [])];
  process.stderr.write(`\n== internvl bench ${target} ${[...args, ...extra].join(' ')}\n`);
  results.push(await run([...args, ...extra], target));
}
process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
