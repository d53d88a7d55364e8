/** `internvl bench search`: search latency and recall, index overhead, queue workers (JSON on stdout). */
import { stringifySnakeCase } from '../../core/json.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseCommandArgs, QUIET_OPTION, THREADS_OPTION } from './args.js';

const PARTS = ['latency', 'index', 'queue'] as const;

export async function runBenchSearch(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench search',
      synopsis: 'bench search [options]',
      description: `The model of index/queue is InternVL-14B-224px-shaped, random weights, its first --vision-layers ViT blocks only
(or --model). Prints JSON: {machine, latency: [...], indexing: {...}}.`,
      epilog: `Parts (--parts), in one temp folder that is deleted afterwards:
  latency  tables of random unit vectors (--sizes rows, --dim wide) in the index's store: exact search and the ANN
           index it builds (IVF_RQ, one per --bits), p50/p95 latency and recall@k against a brute-force ranking,
           at the store's query defaults and over a sweep of nprobes × refine factors
  index    images/s of 'index' (scan, hash, decode, embed, LanceDB commits, optimize) vs bare embedding (read,
           decode, embed) with the same loaded model: the index's overhead
  queue    images/s of 'index --queue' with 1 vs N 'internvl worker' processes (threads split between them)`,
      options: {
        parts: {
          type: 'string',
          value: 'list',
          help: 'the parts to run, of latency, index, queue',
          default: PARTS.join(','),
        },
        sizes: { type: 'string', value: 'list', help: 'latency: table sizes in rows', default: '100000,1000000' },
        dim: { type: 'string', value: 'n', help: "latency: vector width (InternVL-C/G's)", default: 768 },
        data: {
          type: 'string',
          value: 'd',
          help: 'latency: random (uniform on the sphere) or clustered (around rows/1000 centres)',
          default: 'random',
        },
        queries: { type: 'string', value: 'n', help: 'latency: queries per ANN setting', default: 100 },
        'exact-queries': {
          type: 'string',
          value: 'n',
          help: 'latency: of those, timed with exact search',
          default: 20,
        },
        k: { type: 'string', value: 'n', help: 'latency: results per query', default: 10 },
        nprobes: {
          type: 'string',
          value: 'list',
          help: "latency sweep: partitions probed, numbers or 'all'",
          default: 'all',
        },
        refine: { type: 'string', value: 'list', help: 'latency sweep: refine factors', default: '1,2,4' },
        bits: {
          type: 'string',
          value: 'list',
          help: 'latency: bits per dimension of the index codes, an index per value (1 to 8)',
          default: '8',
        },
        images: { type: 'string', value: 'n', help: 'index/queue: JPEGs (640×480) indexed', default: 48 },
        'vision-layers': {
          type: 'string',
          value: 'n',
          help: 'index/queue: ViT blocks of the random model',
          default: 2,
        },
        model: {
          type: 'string',
          value: 'dir',
          help: 'index/queue: an InternVL-C/G checkpoint instead of the random one',
        },
        weights: { type: 'string', value: 'f', help: 'index/queue: fp32 or int8', default: 'int8' },
        batch: { type: 'string', value: 'n', help: 'index/queue: images per forward pass', default: 8 },
        runs: {
          type: 'string',
          value: 'n',
          help: 'index: bare/index pairs timed, the best of each counts',
          default: 2,
        },
        workers: { type: 'string', value: 'list', help: 'queue: worker counts', default: '1,2' },
        'job-size': { type: 'string', value: 'n', help: 'queue: images per job', default: 8 },
        threads: { ...THREADS_OPTION, help: 'onnxruntime threads, split between workers (default: all cores)' },
        quiet: QUIET_OPTION,
      },
    },
    args,
  );
  if (!parsed) return 0;
  type Name = 'parts' | 'sizes' | 'nprobes' | 'refine' | 'bits' | 'workers';
  const list = (name: Name) =>
    parsed
      .string(name)
      .split(',')
      .map((x) => x.trim());
  const integers = (name: Name, min: number) =>
    list(name).map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < min) parsed.fail(`--${name}: '${x}' is not an integer ≥ ${min}`);
      return n;
    });
  const parts = list('parts');
  const unknown = parts.find((p) => !(PARTS as readonly string[]).includes(p));
  if (unknown) parsed.fail(`--parts: '${unknown}' is not one of ${PARTS.join(', ')}`);
  const nprobes = list('nprobes').map((x) => {
    if (x === 'all') return 'all' as const;
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1) parsed.fail(`--nprobes: '${x}' is not a positive integer or 'all'`);
    return n;
  });
  const refine = integers('refine', 1);
  const bits = integers('bits', 1);
  const tooWide = bits.find((b) => b > 8);
  if (tooWide !== undefined) parsed.fail(`--bits: ${tooWide} is more than 8`);
  const threads = parsed.threads() ?? os.availableParallelism();
  const quiet = parsed.flag('quiet');
  const log = quiet ? () => {} : (m: string) => process.stderr.write(`${m}\n`);
  // Options are all read before any work starts: a bad flag costs nothing.
  const latencyOptions = {
    sizes: integers('sizes', 256),
    dim: parsed.integer('dim', { min: 8 }),
    data: parsed.choice('data', ['random', 'clustered'] as const),
    queries: parsed.integer('queries', { min: 1 }),
    exactQueries: parsed.integer('exact-queries', { min: 1 }),
    k: parsed.integer('k', { min: 1 }),
    bits,
    sweep: nprobes.flatMap((n) => refine.map((refineFactor) => ({ nprobes: n, refineFactor }))),
  };
  if (latencyOptions.exactQueries > latencyOptions.queries) parsed.fail('--exact-queries must not exceed --queries');
  const indexingOptions = {
    model: parsed.string('model'),
    visionLayers: parsed.integer('vision-layers', { min: 1, max: 48 }),
    weights: parsed.choice('weights', ['fp32', 'int8'] as const),
    images: parsed.integer('images', { min: 1 }),
    batch: parsed.integer('batch', { min: 1 }),
    jobImages: parsed.integer('job-size', { min: 1 }),
    runs: parsed.integer('runs', { min: 1 }),
    workers: parts.includes('queue') ? integers('workers', 1) : [],
    overhead: parts.includes('index'),
    threads,
    // Workers are this same CLI (`node [--import tsx] <script>`), started as child processes.
    cli: [process.execPath, ...process.execArgv, process.argv[1]],
    log,
  };
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'internvl-bench-search-'));
  // The tables are gigabytes: an interrupted run removes them too.
  const onSignal = (signal: NodeJS.Signals) => {
    fs.rmSync(workDir, { recursive: true, force: true });
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const { machineInfo } = await import('../bench/stats.js');
    const result: Record<string, unknown> = { machine: await machineInfo() };
    if (parts.includes('latency')) {
      const { benchSearchLatency } = await import('../bench/search_latency.js');
      result.latency = await benchSearchLatency({ ...latencyOptions, workDir, log });
    }
    if (indexingOptions.overhead || indexingOptions.workers.length > 0) {
      const { benchSearchIndexing } = await import('../bench/search_indexing.js');
      result.indexing = await benchSearchIndexing({ ...indexingOptions, workDir });
    }
    process.stdout.write(`${stringifySnakeCase(result, undefined, 2)}\n`);
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}
