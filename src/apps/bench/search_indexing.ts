/**
 * Indexing benchmarks: the index's overhead over bare embedding, and BullMQ workers (1 vs N) against one Redis.
 *
 * The model is an InternVL-14B-224px-shaped checkpoint of random weights with its first ViT blocks only (the full
 * 6B tower does not fit a small machine): each image costs less than with the real model, so the overhead measured
 * here (scanning, hashing, the LanceDB commits, `optimize`) is an upper bound of the real one's share.
 *
 * - bare: read, decode and embed the images in batches (what `embed-image` does), no index;
 * - index: `SearchIndex.add` on a fresh table with the same loaded model and batch size;
 * - queue: `internvl worker` processes (threads split between them) embed the jobs that `add` with a `QueueSink`
 *   enqueues; timed from the first enqueue to the last row committed, with the workers loaded and warmed up.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { UsageError } from '../../core/errors.js';
import type { SessionOptions } from '../../core/session.js';
import { loadImage } from '../../processing/image.js';
import { ClipEmbedder, modelStamp, type IndexWeights } from '../search/embedder.js';
import { QueueSink } from '../search/queue.js';
import { SearchIndex } from '../search/search_index.js';
import { Store, tableName } from '../search/store.js';
import { startRedisServer, stopChild, waitForOutput } from './children.js';
import { writeClipCheckpoint } from './clip.js';
import { median } from './stats.js';
import { round } from './profile.js';

export interface IndexingOptions {
  /** An InternVL-C/G folder; by default a random InternVL-14B-224px-shaped one with `visionLayers` ViT blocks. */
  model?: string;
  visionLayers: number;
  weights: IndexWeights;
  images: number;
  batch: number;
  /** Images per queue job. */
  jobImages: number;
  threads: number;
  /** Bare/index pairs timed (alternating; the best of each counts). */
  runs: number;
  /** Worker counts for the queue part (empty: no queue part). */
  workers: number[];
  /** Run the bare/index comparison. */
  overhead: boolean;
  /** The command line that starts this CLI (`[node, ...execArgv, script]`), for the worker processes. */
  cli: string[];
  workDir: string;
  log: (message: string) => void;
}

export interface IndexingResult {
  model: string;
  weights: IndexWeights;
  images: number;
  imageSize: string;
  batch: number;
  threads: number;
  overhead?: {
    bareImagesPerSecond: number[];
    indexImagesPerSecond: number[];
    bareCpuSecondsPerImage: number[];
    indexCpuSecondsPerImage: number[];
    /** Best index time / best bare time − 1 (wall). */
    overhead: number;
    /** The same from the medians of the runs. */
    overheadMedian: number;
    /** The same in CPU time (best of each). */
    overheadCpu: number;
    bareSecondsPerImage: number;
    /** Seconds per image the index adds (best index − best bare), wall and CPU. */
    addedSecondsPerImage: number;
    addedCpuSecondsPerImage: number;
  };
  queue?: Array<{
    workers: number;
    threadsPerWorker: number;
    jobImages: number;
    seconds: number;
    imagesPerSecond: number;
    rows: number;
  }>;
  peakRssMB: number;
}

// The tokenizer of the bundled InternVL-14B-224px-layout fixture (text is not timed, but the pipeline loads one).
const FIXTURE = fileURLToPath(new URL('../../../test/data/fixtures/clip_e2e/', import.meta.url));
const TOKENIZER_FILES = ['tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json'];
const IMAGE = { width: 640, height: 480 };

function randomModel(dir: string, visionLayers: number): string {
  if (!fs.existsSync(path.join(FIXTURE, 'tokenizer.model')))
    throw new UsageError(
      `bench search: the random model needs the tokenizer of ${FIXTURE} (a checkout); or give --model <InternVL-C/G dir>`,
    );
  writeClipCheckpoint(dir, visionLayers, 2);
  for (const file of TOKENIZER_FILES) fs.copyFileSync(path.join(FIXTURE, file), path.join(dir, file));
  return dir;
}

/** Photo-sized JPEGs of smooth, distinct patterns (each decodes like a photo of its size; no two share a hash). */
async function writeImages(dir: string, count: number): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const { width, height } = IMAGE;
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const pixels = Buffer.alloc(width * height * 3);
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) {
        const o = (y * width + x) * 3;
        pixels[o] = 128 + 127 * Math.sin((x * (i + 3)) / 97);
        pixels[o + 1] = 128 + 127 * Math.sin((y * (i + 5)) / 61 + i);
        pixels[o + 2] = (x + y + 17 * i) & 255;
      }
    const file = path.join(dir, `image${String(i).padStart(5, '0')}.jpg`);
    await sharp(pixels, { raw: { width, height, channels: 3 } })
      .jpeg({ quality: 85 })
      .toFile(file);
    files.push(file);
  }
  return files;
}

async function bareEmbedding(embedder: ClipEmbedder, files: string[], batch: number): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < files.length; i += batch) {
    const images = [];
    for (const file of files.slice(i, i + batch)) images.push(await loadImage(fs.readFileSync(file), { name: file }));
    await embedder.images(images, batch);
  }
  return (performance.now() - start) / 1000;
}

async function queueRuns(
  options: IndexingOptions,
  modelDir: string,
  imagesDir: string,
  files: string[],
  session: SessionOptions,
): Promise<NonNullable<IndexingResult['queue']>> {
  const redisDir = path.join(options.workDir, 'redis');
  fs.mkdirSync(redisDir, { recursive: true });
  const redis = await startRedisServer(redisDir);
  const stamp = await modelStamp(modelDir, { mode: 'C', weights: options.weights });
  const out: NonNullable<IndexingResult['queue']> = [];
  try {
    for (const count of options.workers) {
      const db = path.join(options.workDir, `db-queue-${count}`);
      const threadsPerWorker = Math.max(1, Math.floor(options.threads / count));
      options.log(`queue: ${count} worker(s), ${threadsPerWorker} thread(s) each: loading`);
      const [node, ...args] = options.cli;
      const workers = Array.from({ length: count }, () =>
        spawn(
          node,
          [
            ...args,
            'worker',
            ...['--queue', redis.url, '--model', modelDir, '--db', db, '--weights', options.weights],
            ...['--batch', String(options.batch), '--threads', String(threadsPerWorker)],
          ],
          { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, INTERNVL_CACHE: session.cacheDir } },
        ),
      );
      try {
        await Promise.all(workers.map((w, i) => waitForOutput(w, /waiting for jobs/, `worker ${i + 1}`)));
        const enqueue = async (table: string, inputs: string[], jobImages: number) => {
          const store = await Store.open(db, table, stamp, { create: true });
          const sink = await QueueSink.connect(redis.url, store, { jobImages });
          return new SearchIndex(store, session)
            .add(inputs, { batchSize: options.batch, sink })
            .finally(() => sink.close());
        };
        // One batch per worker into another table first: each worker's first run (onnxruntime's allocations) is
        // not timed, as the in-process runs had their warm-up.
        await enqueue('warmup_C', files.slice(0, count * options.batch), options.batch);
        const start = performance.now();
        const summary = await enqueue(tableName(modelDir, 'C'), [imagesDir], options.jobImages);
        const seconds = (performance.now() - start) / 1000;
        if (summary.rows !== options.images)
          throw new Error(`queue run with ${count} workers left ${summary.rows} rows, not ${options.images}`);
        out.push({
          workers: count,
          threadsPerWorker,
          jobImages: options.jobImages,
          seconds: round(seconds),
          imagesPerSecond: round(options.images / seconds),
          rows: summary.rows,
        });
        options.log(`  ${(options.images / seconds).toFixed(2)} images/s`);
      } finally {
        await Promise.all(workers.map((w) => stopChild(w)));
      }
    }
  } finally {
    await stopChild(redis.process);
  }
  return out;
}

export async function benchSearchIndexing(options: IndexingOptions): Promise<IndexingResult> {
  const { log } = options;
  const modelDir = options.model ?? randomModel(path.join(options.workDir, 'model'), options.visionLayers);
  log(`writing ${options.images} ${IMAGE.width}×${IMAGE.height} JPEGs`);
  const imagesDir = path.join(options.workDir, 'images');
  const files = await writeImages(imagesDir, options.images);
  const session: SessionOptions = { threads: options.threads, cacheDir: path.join(options.workDir, 'cache') };
  const result: IndexingResult = {
    model: options.model ?? `InternVL-14B-224px shape, random weights, ${options.visionLayers} of 48 ViT blocks`,
    weights: options.weights,
    images: options.images,
    imageSize: `${IMAGE.width}×${IMAGE.height} JPEG`,
    batch: options.batch,
    threads: options.threads,
    peakRssMB: 0,
  };
  if (options.overhead) {
    const stamp = await modelStamp(modelDir, { mode: 'C', weights: options.weights });
    log(`loading the model (${options.weights})`);
    const embedder = await ClipEmbedder.load(stamp, session);
    try {
      await bareEmbedding(embedder, files.slice(0, options.batch), options.batch); // warm-up
      // Wall time and this process's CPU time (onnxruntime's threads included) per pass: on a shared machine the
      // CPU time is the steadier of the two.
      const timed = async (work: () => Promise<unknown>) => {
        const [wall, cpu] = [performance.now(), process.cpuUsage()];
        await work();
        const used = process.cpuUsage(cpu);
        return { wall: (performance.now() - wall) / 1000, cpu: (used.user + used.system) / 1e6 };
      };
      const bare: Array<{ wall: number; cpu: number }> = [];
      const indexed: Array<{ wall: number; cpu: number }> = [];
      for (let r = 0; r < options.runs; r++) {
        bare.push(await timed(() => bareEmbedding(embedder, files, options.batch)));
        log(`run ${r + 1}: bare ${bare[r].wall.toFixed(1)} s (${bare[r].cpu.toFixed(1)} s CPU)`);
        const db = path.join(options.workDir, `db-index-${r}`);
        const store = await Store.open(db, tableName(modelDir, 'C'), stamp, { create: true });
        const index = new SearchIndex(store, session, embedder);
        indexed.push(await timed(() => index.add([imagesDir], { batchSize: options.batch })));
        log(`run ${r + 1}: index ${indexed[r].wall.toFixed(1)} s (${indexed[r].cpu.toFixed(1)} s CPU)`);
        fs.rmSync(db, { recursive: true, force: true });
      }
      const n = options.images;
      const best = (runs: Array<{ wall: number; cpu: number }>, key: 'wall' | 'cpu') =>
        Math.min(...runs.map((x) => x[key]));
      result.overhead = {
        bareImagesPerSecond: bare.map((x) => round(n / x.wall)),
        indexImagesPerSecond: indexed.map((x) => round(n / x.wall)),
        bareCpuSecondsPerImage: bare.map((x) => round(x.cpu / n)),
        indexCpuSecondsPerImage: indexed.map((x) => round(x.cpu / n)),
        overhead: round(best(indexed, 'wall') / best(bare, 'wall') - 1),
        overheadMedian: round(median(indexed.map((x) => x.wall)) / median(bare.map((x) => x.wall)) - 1),
        overheadCpu: round(best(indexed, 'cpu') / best(bare, 'cpu') - 1),
        bareSecondsPerImage: round(best(bare, 'wall') / n),
        addedSecondsPerImage: round((best(indexed, 'wall') - best(bare, 'wall')) / n),
        addedCpuSecondsPerImage: round((best(indexed, 'cpu') - best(bare, 'cpu')) / n),
      };
    } finally {
      await embedder.release();
    }
  }
  if (options.workers.length > 0) result.queue = await queueRuns(options, modelDir, imagesDir, files, session);
  result.peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
  return result;
}
