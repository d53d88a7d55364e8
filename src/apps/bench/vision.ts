/**
 * Vision-encoder benchmark on random weights of a released shape.
 *
 * The checkpoint is really written (one safetensors shard per layer plus an index, so that generating it never
 * holds more than one layer in memory and does not inflate the peak RSS being measured) and loaded through the
 * same path as a real model: Checkpoint → InternVisionModel → onnxruntime with in-place weights. Storage dtypes
 * other than float32 go through the runtime's converted-weight cache, as a bf16 release would; compute is float32.
 *
 * Shapes too large for this machine are timed on their first N layers (`layers`); the per-tile time is then
 * extrapolated as embeddings + N-layer cost scaled to all layers, the embedding cost being measured separately on
 * a 0-layer graph. The result says so (`extrapolated`, `layersTimed`, `layersTotal`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../core/errors.js';
import { GraphBuilder } from '../../core/graph.js';
import { ort } from '../../core/node/runtime.js';
import { Checkpoint } from '../../core/safetensors.js';
import { weightFormatHook } from '../../core/quantize/formats.js';
import { extrapolateToDepth, type Extrapolation } from './extrapolate.js';
import { readOnnxProfile, round, type OpTime } from './profile.js';
import { cpuModel, median } from './stats.js';
import { randomFiller, RandomShards, type RandomTensor, type StorageDtype } from './random_checkpoint.js';
import { ConfigSection } from '../../models/config.js';
import {
  buildInternVisionEncoder,
  InternVisionModel,
  parseInternVisionConfig,
  REMOTE_VISION_NAMES,
  type InternVisionConfig,
} from '../../models/intern_vit.js';

export interface VisionShape {
  name: string;
  /** The released checkpoints with this shape. */
  models: string;
  layers: number;
  hiddenSize: number;
  heads: number;
  intermediateSize: number;
  imageSize: number;
  patchSize: number;
  normType: 'layer_norm' | 'rms_norm';
  qkNormalization: boolean;
  qkvBias: boolean;
}

export const VISION_SHAPES: Record<string, VisionShape> = {
  'internvit-300m-448': {
    name: 'internvit-300m-448',
    models: 'InternViT-300M-448px(-V2_5), vision tower of InternVL2/2.5/3 1B–8B',
    layers: 24,
    hiddenSize: 1024,
    heads: 16,
    intermediateSize: 4096,
    imageSize: 448,
    patchSize: 14,
    normType: 'layer_norm',
    qkNormalization: false,
    qkvBias: true,
  },
  'internvit-6b-224': {
    name: 'internvit-6b-224',
    models: 'InternViT-6B-224px, vision tower of InternVL-14B-224px (InternVL-C/G)',
    layers: 48,
    hiddenSize: 3200,
    heads: 25,
    intermediateSize: 12800,
    imageSize: 224,
    patchSize: 14,
    normType: 'rms_norm',
    qkNormalization: true,
    qkvBias: false,
  },
  'internvit-6b-448': {
    name: 'internvit-6b-448',
    models: 'InternViT-6B-448px-V1-5/V2_5, vision tower of InternVL-Chat-V1-5, InternVL2/2.5 26B–78B',
    layers: 45,
    hiddenSize: 3200,
    heads: 25,
    intermediateSize: 12800,
    imageSize: 448,
    patchSize: 14,
    normType: 'rms_norm',
    qkNormalization: true,
    qkvBias: false,
  },
};

export interface BenchVisionOptions {
  shape: string;
  dtype?: StorageDtype;
  /** Execution format of the linears: float32, or int8 (DynamicQuantizeMatMul). */
  weights?: 'fp32' | 'int8';
  batch?: number;
  threads?: number;
  /** Timed runs after one warm-up run (default 3). */
  runs?: number;
  /** Layers to build and time (default: all when they fit in memory, else 4). */
  layers?: number;
  /** onnxruntime weight prepacking; default as the runtime would choose for the FULL model. */
  prepack?: boolean;
  /** Folder for the random checkpoint (default a fresh temp folder, deleted afterwards). */
  workDir?: string;
  keep?: boolean;
  /** Also run the timed graph with onnxruntime profiling and report time per operator type. */
  profile?: boolean;
  log?: (message: string) => void;
}

export interface BenchVisionResult {
  shape: string;
  dtype: StorageDtype;
  weights: 'fp32' | 'int8';
  computeDtype: 'float32';
  batch: number;
  threads: number;
  imageSize: number;
  tokensPerTile: number;
  layersTimed: number;
  layersTotal: number;
  extrapolated: boolean;
  /**
   * Whole-encoder seconds per tile from the fastest warm run (extrapolated to all layers when `extrapolated`).
   * The fastest, not the mean, because other processes on a shared machine only ever add time. Null (and
   * `contention` says why) when contention made the extrapolation meaningless.
   */
  secondsPerTile: number | null;
  tilesPerSecond: number | null;
  /** The same from the median run. */
  medianSecondsPerTile: number | null;
  /** Seconds of each warm forward pass of the timed graph (layersTimed layers, whole batch). */
  runSeconds: number[];
  /** Per tile, fastest run: one layer, and the embeddings (patch conv + positions, from the 0-layer graph). */
  secondsPerLayerPerTile: number | null;
  embeddingSecondsPerTile: number | null;
  /** Peak resident memory of this process (the timed graph only when extrapolated). */
  peakRssMB: number;
  /** Float32 weights of the timed graph and of the whole encoder. */
  weightsMBTimed: number;
  weightsMBFull: number;
  sessionCreateSeconds: number;
  checkpointWriteSeconds: number;
  prepack: boolean;
  onnxruntime: string;
  cpu: string;
  /** CPU seconds / (wall seconds × threads) over the timed runs: well below 1 means the machine was busy. */
  cpuUtilization: number;
  profile?: OpTime[];
  note?: string;
  /** Why the extrapolated times are null: see extrapolate.ts. */
  contention?: string;
}

/** Parameter count of the encoder with `layers` layers. */
export function visionParameterCount(shape: VisionShape, layers = shape.layers): number {
  const C = shape.hiddenSize;
  const I = shape.intermediateSize;
  const norms = (shape.normType === 'layer_norm' ? 4 : 2) * C + (shape.qkNormalization ? 2 * C : 0);
  const perLayer = 3 * C * C + (shape.qkvBias ? 3 * C : 0) + C * C + C + 2 * C * I + I + C + 2 * C + norms;
  const grid = shape.imageSize / shape.patchSize;
  const embeddings = C + C * 3 * shape.patchSize * shape.patchSize + C + (1 + grid * grid) * C;
  return embeddings + layers * perLayer;
}

function configJson(shape: VisionShape, dtype: StorageDtype): Record<string, unknown> {
  return {
    architectures: ['InternVisionModel'],
    model_type: 'intern_vit_6b',
    hidden_act: 'gelu',
    hidden_size: shape.hiddenSize,
    num_attention_heads: shape.heads,
    num_hidden_layers: shape.layers,
    intermediate_size: shape.intermediateSize,
    image_size: shape.imageSize,
    patch_size: shape.patchSize,
    norm_type: shape.normType,
    layer_norm_eps: 1e-6,
    qk_normalization: shape.qkNormalization,
    qkv_bias: shape.qkvBias,
    num_channels: 3,
    torch_dtype: dtype,
  };
}

/** The random tensors of the first `layers` layers of `shape` (keys under `prefix`), one shard per layer. */
export function writeRandomVisionTensors(shards: RandomShards, shape: VisionShape, layers: number, prefix = ''): void {
  const C = shape.hiddenSize;
  const I = shape.intermediateSize;
  const grid = shape.imageSize / shape.patchSize;
  // std 1/√fan_in: unit-variance activations, nothing degenerate.
  const w = (fanIn: number) => 1 / Math.sqrt(fanIn);
  const under = (specs: RandomTensor[]) => specs.map(([name, ...rest]): RandomTensor => [prefix + name, ...rest]);
  shards.write(
    `${prefix}model-embeddings.safetensors`,
    under([
      ['embeddings.class_embedding', [1, 1, C], 0.15],
      ['embeddings.patch_embedding.weight', [C, 3, shape.patchSize, shape.patchSize], w(3 * shape.patchSize ** 2)],
      ['embeddings.patch_embedding.bias', [C], 0.06],
      ['embeddings.position_embedding', [1, 1 + grid * grid, C], 0.15],
    ]),
  );
  for (let i = 0; i < layers; i++) {
    const p = `encoder.layers.${i}`;
    const specs: RandomTensor[] = [
      [`${p}.norm1.weight`, [C], 0.06, 1],
      [`${p}.attn.qkv.weight`, [3 * C, C], w(C)],
      [`${p}.attn.proj.weight`, [C, C], w(C)],
      [`${p}.attn.proj.bias`, [C], 0.06],
      [`${p}.ls1`, [C], 0.06],
      [`${p}.norm2.weight`, [C], 0.06, 1],
      [`${p}.mlp.fc1.weight`, [I, C], w(C)],
      [`${p}.mlp.fc1.bias`, [I], 0.06],
      [`${p}.mlp.fc2.weight`, [C, I], w(I)],
      [`${p}.mlp.fc2.bias`, [C], 0.06],
      [`${p}.ls2`, [C], 0.06],
    ];
    if (shape.normType === 'layer_norm') specs.push([`${p}.norm1.bias`, [C], 0.06], [`${p}.norm2.bias`, [C], 0.06]);
    if (shape.qkvBias) specs.push([`${p}.attn.qkv.bias`, [3 * C], 0.06]);
    if (shape.qkNormalization)
      specs.push([`${p}.attn.q_norm.weight`, [C], 0.06, 1], [`${p}.attn.k_norm.weight`, [C], 0.06, 1]);
    shards.write(`${prefix}model-layer-${String(i).padStart(3, '0')}.safetensors`, under(specs));
  }
}

/** A random InternVisionModel checkpoint of `shape` with its first `layers` layers; returns the bytes written. */
export function writeRandomVisionCheckpoint(
  dir: string,
  shape: VisionShape,
  options: { layers: number; dtype: StorageDtype; seed?: number },
): number {
  const shards = new RandomShards(dir, options.dtype, options.seed);
  writeRandomVisionTensors(shards, shape, options.layers);
  shards.writeIndex();
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(configJson(shape, options.dtype), null, 2)}\n`);
  return shards.bytes;
}

async function timeModel(
  model: InternVisionModel,
  pixels: Float32Array,
  dims: [number, number, number, number],
  runs: number,
  log: (m: string) => void,
  label: string,
): Promise<{ times: number[]; cpuSeconds: number }> {
  await model.forward(pixels, dims); // warm-up: first-run allocations and the position-embedding resize
  const times: number[] = [];
  const cpuStart = process.cpuUsage();
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    await model.forward(pixels, dims);
    times.push((performance.now() - start) / 1000);
    log(`${label} run ${r + 1}/${runs}: ${times[r].toFixed(3)} s`);
  }
  const cpu = process.cpuUsage(cpuStart);
  return { times, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

export async function benchVision(options: BenchVisionOptions): Promise<BenchVisionResult> {
  const shape = VISION_SHAPES[options.shape];
  if (!shape) throw new UsageError(`unknown shape '${options.shape}'; known: ${Object.keys(VISION_SHAPES).join(', ')}`);
  const log = options.log ?? (() => {});
  const dtype = options.dtype ?? 'float32';
  const batch = options.batch ?? 1;
  const threads = options.threads ?? os.availableParallelism();
  const runs = options.runs ?? 3;
  const fullBytes = visionParameterCount(shape) * 4;
  // The session holds float32 weights, plus a prepacked copy of the matrices when prepacking is on.
  const fits = fullBytes * 2 < 0.7 * os.totalmem();
  const layersTimed = options.layers ?? (fits ? shape.layers : Math.min(4, shape.layers));
  if (layersTimed > shape.layers)
    throw new UsageError(`--layers ${layersTimed}: ${shape.name} has ${shape.layers} layers`);
  if (!(layersTimed >= 1)) throw new UsageError(`--layers must be at least 1`);
  const extrapolated = layersTimed < shape.layers;
  if (options.layers === undefined && extrapolated) {
    log(
      `${shape.name}: ${(fullBytes / 2 ** 30).toFixed(1)} GiB of float32 weights do not fit in memory; timing ${layersTimed} layers and extrapolating`,
    );
  }
  const prepack = options.prepack ?? fullBytes < 2 ** 31;
  if (options.profile && (dtype !== 'float32' || (options.weights ?? 'fp32') !== 'fp32'))
    throw new UsageError('--profile needs --dtype float32 and fp32 weights (weights used in place)');

  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `internvl-bench-${shape.name}-`));
  const modelDir = path.join(workDir, 'model');
  try {
    log(`writing random ${dtype} checkpoint (${layersTimed} of ${shape.layers} layers) to ${modelDir}`);
    let start = performance.now();
    writeRandomVisionCheckpoint(modelDir, shape, { layers: layersTimed, dtype });
    const checkpointWriteSeconds = (performance.now() - start) / 1000;

    const checkpoint = await Checkpoint.open(modelDir);
    const config = parseInternVisionConfig(
      new ConfigSection(configJson(shape, dtype), path.join(modelDir, 'config.json')),
    );
    const session = { threads, prepack, cacheDir: path.join(workDir, 'cache') };
    const size = shape.imageSize;
    const dims: [number, number, number, number] = [batch, 3, size, size];
    const pixels = new Float32Array(batch * 3 * size * size);
    randomFiller(7)(pixels, 1.15);

    log(`creating session (${layersTimed} layers, ${threads} threads, prepack ${prepack ? 'on' : 'off'})`);
    start = performance.now();
    const configureGraph = weightFormatHook(options.weights ?? 'fp32');
    const model = await InternVisionModel.load(checkpoint, config, {
      graph: { numLayers: layersTimed },
      session,
      configureGraph,
    });
    const sessionCreateSeconds = (performance.now() - start) / 1000;
    let timed: { times: number[]; cpuSeconds: number };
    try {
      timed = await timeModel(model, pixels, dims, runs, log, `${layersTimed} layers`);
    } finally {
      await model.release();
    }
    const runSeconds = timed.times;
    const fastest = Math.min(...runSeconds);
    const typical = median(runSeconds);
    const cpuUtilization = timed.cpuSeconds / (runSeconds.reduce((a, b) => a + b, 0) * threads);

    let embeddingSeconds: number | null = null;
    // Whole encoder for one batch, from a timing of the layersTimed-layer graph.
    let wholeEncoder = (seconds: number): Extrapolation => ({ seconds, perLayerSeconds: seconds / layersTimed });
    if (extrapolated) {
      const embeddingsOnly = await InternVisionModel.load(checkpoint, config, {
        graph: { numLayers: 0 },
        session,
        configureGraph,
      });
      try {
        embeddingSeconds = Math.min(
          ...(await timeModel(embeddingsOnly, pixels, dims, runs, log, 'embeddings only')).times,
        );
      } finally {
        await embeddingsOnly.release();
      }
      const embeddings = { layers: 0, seconds: embeddingSeconds };
      wholeEncoder = (seconds) => extrapolateToDepth(embeddings, { layers: layersTimed, seconds }, shape.layers);
    }
    const best = wholeEncoder(fastest);
    const typicalEncoder = wholeEncoder(typical);
    const perTile = (seconds: number | null) => (seconds === null ? null : round(seconds / batch));
    // Before profiling, whose second session would count too.
    const peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
    let profile: OpTime[] | undefined;
    if (options.profile) {
      log('profiling one more warm run per timed run');
      profile = await profileOps(
        checkpoint,
        config,
        modelDir,
        workDir,
        { layers: layersTimed, threads, prepack, runs },
        pixels,
        dims,
      );
    }
    const grid = size / shape.patchSize;
    return {
      shape: shape.name,
      dtype,
      weights: options.weights ?? 'fp32',
      computeDtype: 'float32',
      batch,
      threads,
      imageSize: size,
      tokensPerTile: 1 + grid * grid,
      layersTimed,
      layersTotal: shape.layers,
      extrapolated,
      secondsPerTile: perTile(best.seconds),
      tilesPerSecond: best.seconds === null ? null : round(batch / best.seconds),
      medianSecondsPerTile: perTile(typicalEncoder.seconds),
      runSeconds: runSeconds.map(round),
      secondsPerLayerPerTile: perTile(best.perLayerSeconds),
      embeddingSecondsPerTile: embeddingSeconds === null ? null : round(embeddingSeconds / batch),
      peakRssMB,
      weightsMBTimed: Math.round((visionParameterCount(shape, layersTimed) * 4) / 2 ** 20),
      weightsMBFull: Math.round(fullBytes / 2 ** 20),
      sessionCreateSeconds: round(sessionCreateSeconds),
      checkpointWriteSeconds: round(checkpointWriteSeconds),
      prepack,
      onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
      cpu: cpuModel(),
      cpuUtilization: round(cpuUtilization),
      ...(profile ? { profile } : {}),
      ...((best.contention ?? typicalEncoder.contention)
        ? { contention: best.contention ?? typicalEncoder.contention }
        : {}),
      ...(extrapolated
        ? {
            note: `timed ${layersTimed} of ${shape.layers} layers; secondsPerTile = embeddings + ${shape.layers} × per-layer time (extrapolated); peakRssMB is for the ${layersTimed}-layer graph`,
          }
        : {}),
    };
  } finally {
    if (!options.keep && !options.workDir) fs.rmSync(workDir, { recursive: true, force: true });
  }
}

/**
 * The same graph in a session with onnxruntime's profiler on (the runtime's sessions do not expose it), timed over
 * `runs` warm passes: kernel time per operator type, largest first.
 */
async function profileOps(
  checkpoint: Checkpoint,
  config: InternVisionConfig,
  modelDir: string,
  workDir: string,
  options: { layers: number; threads: number; prepack: boolean; runs: number },
  pixels: Float32Array,
  dims: [number, number, number, number],
): Promise<OpTime[]> {
  const g = new GraphBuilder('intern_vit', checkpoint);
  const { lastHiddenState } = buildInternVisionEncoder(g, g.scope(''), config, REMOTE_VISION_NAMES, {
    numLayers: options.layers,
  });
  g.output(lastHiddenState, 'last_hidden_state', 'float32');
  const bytes = g.toModelBytes((r) => ({
    location: path.basename(r.inPlace!.source.path!),
    offset: r.inPlace!.offset,
    length: r.inPlace!.length,
  }));
  const prefix = path.join(workDir, 'ort-profile');
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: options.threads,
    interOpNumThreads: 1,
    enableProfiling: true,
    profileFilePrefix: prefix,
    extra: {
      session: {
        model_external_initializers_file_folder_path: modelDir,
        ...(options.prepack ? {} : { disable_prepacking: '1' }),
      },
    },
  });
  const positions = await checkpoint.readFloat32('embeddings.position_embedding');
  const feeds = {
    pixel_values: new ort.Tensor('float32', pixels, dims),
    position_embedding: new ort.Tensor('float32', positions.data, positions.dims),
  };
  try {
    for (let r = 0; r <= options.runs; r++) await session.run(feeds);
    session.endProfiling();
  } finally {
    await session.release();
  }
  // The first run is the warm-up: leave its kernels out.
  return readOnnxProfile(workDir, 'ort-profile', 1).ops;
}
