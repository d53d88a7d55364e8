/**
 * InternVL-C/G benchmark: image embeddings (mode C, and mode G through QLLaMA) and text embeddings per second for
 * the InternVL-14B-224px shape (InternViT-6B-224 + QLLaMA-7B), on random weights written as a real checkpoint.
 *
 * 14B float32 parameters (56 GB) do not fit a small machine, so the first `visionLayers` ViT blocks and
 * `qllamaLayers` QLLaMA blocks (an even number: a cross-attention block and a plain one per pair) are built and
 * timed, and each stage is extrapolated to the full depth from a second, shallower timing (per-block cost = the
 * difference). Each weight format (float32, int8) is timed the same way, and its embeddings are compared with
 * float32's on the same truncated model: the relative error says whether it keeps parity within 1e-2.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../core/errors.js';
import { useQuantizedLinears } from '../../core/quantize.js';
import { ort } from '../../core/node/runtime.js';
import { extrapolateToDepth } from './extrapolate.js';
import { InternVLClipModel } from '../../models/internvl_clip.js';
import { cpuModel } from './stats.js';
import { round } from './profile.js';
import { randomFiller, RandomShards, type RandomTensor } from './random_checkpoint.js';
import { VISION_SHAPES, writeRandomVisionTensors } from './vision.js';

const VISION = VISION_SHAPES['internvit-6b-224'];
const QLLAMA = { hidden: 4096, heads: 32, intermediate: 11008, layers: 32, vocab: 49954, queries: 96, textLength: 80 };
const CLIP_DIM = 768;

/**
 * Weight formats: `int8` = DynamicQuantizeMatMul (int8 weights per channel, activations per tensor: fastest);
 * `int8-block` = MatMulNBits 8-bit blocks of 32 with int8 activations per block; `int8-weights` = the same
 * weights with float activations (only the weights are rounded: the most accurate int8 storage).
 */
export type ClipWeights = 'float32' | 'int8' | 'int8-block' | 'int8-weights';

const QUANTIZATION: Record<Exclude<ClipWeights, 'float32'>, Parameters<typeof useQuantizedLinears>[1]> = {
  int8: { format: 'int8' },
  'int8-block': { format: 'int8', int8Kernel: 'nbits', accuracyLevel: 4 },
  'int8-weights': { format: 'int8', int8Kernel: 'nbits', accuracyLevel: 0 },
};

export interface BenchClipOptions {
  weights?: ClipWeights[];
  /** ViT blocks to build (default 4; timed at this depth and at half of it). */
  visionLayers?: number;
  /** QLLaMA blocks to build, even (default 4). */
  qllamaLayers?: number;
  batch?: number;
  threads?: number;
  runs?: number;
  workDir?: string;
  log?: (message: string) => void;
}

export interface ClipStageTiming {
  /** Seconds per item extrapolated to the full model; null under contention (see `contention`). */
  seconds: number | null;
  perSecond: number | null;
}

export interface BenchClipResult {
  model: string;
  weights: ClipWeights;
  batch: number;
  threads: number;
  imageC: ClipStageTiming;
  /** Mode G adds QLLaMA over the 96 queries to mode C. */
  imageG: ClipStageTiming;
  text: ClipStageTiming;
  /** max |x − x_fp32| / max |x_fp32| over the truncated model's embeddings (0 for float32). */
  relativeErrorVsFloat32: { imageC: number; imageG: number; text: number };
  layersTimed: { vision: number; qllama: number };
  peakRssMB: number;
  extrapolated: true;
  cpu: string;
  onnxruntime: string;
  /** Why some stage times are null: see extrapolate.ts. */
  contention?: string;
}

/** A random bf16 InternVL-14B-224px-shaped checkpoint (no tokenizer) with its first ViT and QLLaMA blocks only. */
export function writeClipCheckpoint(dir: string, visionLayers: number, qllamaLayers: number): void {
  const shards = new RandomShards(dir, 'bfloat16', 11);
  writeRandomVisionTensors(shards, VISION, visionLayers, 'vision_model.');
  const H = QLLAMA.hidden;
  const Cv = VISION.hiddenSize;
  // std 1/√fan_in: unit-variance activations.
  const w = (fanIn: number) => 1 / Math.sqrt(fanIn);
  const pooling = (prefix: string, D: number): RandomTensor[] => [
    ...['norm1_q', 'norm1_k', 'norm1_v'].flatMap((n): RandomTensor[] => [
      [`${prefix}.${n}.weight`, [D], 0.06, 1],
      [`${prefix}.${n}.bias`, [D], 0.06],
    ]),
    ...['q', 'k', 'v'].flatMap((n): RandomTensor[] => [
      [`${prefix}.cross_attn.${n}.weight`, [D, D], w(D)],
      [`${prefix}.cross_attn.${n}_bias`, [D], 0.06],
    ]),
    [`${prefix}.cross_attn.proj.weight`, [CLIP_DIM, D], w(D)],
    [`${prefix}.cross_attn.proj.bias`, [CLIP_DIM], 0.06],
  ];
  shards.write('heads.safetensors', [
    ...pooling('clip_projector', Cv),
    ...pooling('clip_projector2', H),
    ['query_tokens', [1, QLLAMA.queries, H], 0.3],
    ['text_projection', [H, CLIP_DIM], w(H)],
    ['logit_scale', [], 0, Math.log(1 / 0.07)],
    ['qllama.model.embed_tokens.weight', [QLLAMA.vocab, H], 0.3],
    ['qllama.model.norm.weight', [H], 0.06, 1],
  ]);
  for (let i = 0; i < qllamaLayers; i++) {
    const p = `qllama.model.layers.${i}`;
    const specs: RandomTensor[] = [
      [`${p}.input_layernorm.weight`, [H], 0.06, 1],
      [`${p}.post_attention_layernorm.weight`, [H], 0.06, 1],
      ...['q', 'k', 'v', 'o'].map((n): RandomTensor => [`${p}.self_attn.${n}_proj.weight`, [H, H], w(H)]),
      [`${p}.mlp.gate_proj.weight`, [QLLAMA.intermediate, H], w(H)],
      [`${p}.mlp.up_proj.weight`, [QLLAMA.intermediate, H], w(H)],
      [`${p}.mlp.down_proj.weight`, [H, QLLAMA.intermediate], w(QLLAMA.intermediate)],
    ];
    if (i % 2 === 0) {
      specs.push(
        [`${p}.cross_attn.norm1.weight`, [H], 0.06, 1],
        [`${p}.cross_attn.norm2.weight`, [Cv], 0.06, 1],
        [`${p}.cross_attn.q_proj.weight`, [H, H], w(H)],
        [`${p}.cross_attn.o_proj.weight`, [H, H], w(H)],
        [`${p}.cross_attn.k_proj.weight`, [H, Cv], w(Cv)],
        [`${p}.cross_attn.v_proj.weight`, [H, Cv], w(Cv)],
      );
    }
    shards.write(`qllama-layer-${String(i).padStart(2, '0')}.safetensors`, specs);
  }
  shards.writeIndex();
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['InternVLModel'],
      model_type: 'internvl',
      clip_embed_dim: CLIP_DIM,
      attn_pool_num_heads: 16,
      num_query_token: QLLAMA.queries,
      force_image_size: null,
      vision_config: {
        architectures: ['InternVisionModel'],
        hidden_act: 'gelu',
        hidden_size: Cv,
        num_attention_heads: VISION.heads,
        num_hidden_layers: visionLayers,
        intermediate_size: VISION.intermediateSize,
        image_size: VISION.imageSize,
        patch_size: VISION.patchSize,
        norm_type: 'rms_norm',
        layer_norm_eps: 1e-6,
        qk_normalization: true,
        qkv_bias: false,
      },
      qllama_config: {
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        hidden_act: 'silu',
        hidden_size: H,
        num_attention_heads: QLLAMA.heads,
        num_hidden_layers: qllamaLayers,
        intermediate_size: QLLAMA.intermediate,
        vocab_size: QLLAMA.vocab,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 2048,
        cross_attention_frequency: 2,
        num_query_token: QLLAMA.queries,
        bos_token_id: 1,
        eos_token_id: 2,
        pad_token_id: 0,
      },
    }),
  );
}

/** Relative difference of two embedding sets. */
function relativeError(actual: Float32Array, reference: Float32Array): number {
  let maxErr = 0;
  let maxRef = 0;
  reference.forEach((r, i) => {
    maxErr = Math.max(maxErr, Math.abs(actual[i] - r));
    maxRef = Math.max(maxRef, Math.abs(r));
  });
  return maxErr / (maxRef || 1);
}

interface StageSeconds {
  vision: number;
  /** QLLaMA over the 96 queries, after the vision tower. */
  queries: number;
  text: number;
}

async function timeStages(
  dir: string,
  weights: ClipWeights,
  options: Required<Pick<BenchClipOptions, 'batch' | 'threads' | 'runs'>> & { cacheDir: string },
  pixels: Float32Array,
  ids: number[][],
  log: (m: string) => void,
): Promise<{ seconds: StageSeconds; outputs: { c: Float32Array; g: Float32Array; text: Float32Array } }> {
  const configure =
    weights === 'float32'
      ? undefined
      : (g: Parameters<typeof useQuantizedLinears>[0]) => useQuantizedLinears(g, QUANTIZATION[weights]);
  const model = await InternVLClipModel.load(dir, {
    session: { threads: options.threads, cacheDir: options.cacheDir },
    configureVisionGraph: configure,
    configureQllamaGraph: configure,
  });
  try {
    const fastest = async (label: string, work: () => Promise<unknown>) => {
      await work();
      let best = Infinity;
      for (let r = 0; r < options.runs; r++) {
        const start = performance.now();
        await work();
        best = Math.min(best, (performance.now() - start) / 1000);
      }
      log(`  ${label}: ${best.toFixed(3)} s`);
      return best;
    };
    const B = options.batch;
    const vision = await fastest('vision + InternVL-C head', () => model.encodeVision(pixels, B));
    const { tokens } = await model.encodeVision(pixels, B);
    const queries = await fastest('QLLaMA queries', () => model.queryFeatures(tokens));
    const text = await fastest('text', () => model.encodeText(ids));
    const outputs = {
      c: (await model.encodeImage(pixels, B, 'C')).data,
      g: (await model.encodeImage(pixels, B, 'G')).data,
      text: (await model.encodeText(ids)).embeds.data,
    };
    return { seconds: { vision, queries, text }, outputs };
  } finally {
    await model.release();
  }
}

export async function benchClip(options: BenchClipOptions = {}): Promise<BenchClipResult[]> {
  const log = options.log ?? (() => {});
  const deep = { vision: options.visionLayers ?? 4, qllama: options.qllamaLayers ?? 4 };
  if (deep.qllama % 2 !== 0 || deep.qllama < 2)
    throw new UsageError(
      '--qllama-layers must be even and at least 2 (a cross-attention block and a plain one per pair)',
    );
  if (deep.vision < 2) throw new UsageError('--vision-layers must be at least 2');
  const shallow = { vision: (deep.vision / 2) >> 0 || 1, qllama: Math.max(2, (deep.qllama / 2) & ~1) };
  if (shallow.qllama === deep.qllama) throw new UsageError('--qllama-layers must be at least 4 to extrapolate');
  const batch = options.batch ?? 1;
  const threads = options.threads ?? os.availableParallelism();
  const runs = options.runs ?? 2;
  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'internvl-bench-clip-'));
  const S = VISION.imageSize;
  const pixels = new Float32Array(batch * 3 * S * S);
  randomFiller(5)(pixels, 1.15);
  const ids = Array.from({ length: batch }, (_, b) =>
    Array.from({ length: QLLAMA.textLength }, (_, t) => (t < 20 + b ? 3 + ((t * 7919 + b) % 40000) : 0)),
  );
  try {
    const dirs = { deep: path.join(workDir, 'deep'), shallow: path.join(workDir, 'shallow') };
    log(
      `writing random bf16 InternVL-14B-224px-shaped checkpoints (${deep.vision}/${shallow.vision} ViT blocks, ${deep.qllama}/${shallow.qllama} QLLaMA blocks)`,
    );
    writeClipCheckpoint(dirs.deep, deep.vision, deep.qllama);
    writeClipCheckpoint(dirs.shallow, shallow.vision, shallow.qllama);
    const results: BenchClipResult[] = [];
    let reference: { c: Float32Array; g: Float32Array; text: Float32Array } | null = null;
    for (const weights of options.weights ?? ['float32', 'int8']) {
      const common = { batch, threads, runs, cacheDir: path.join(workDir, `cache-${weights}`) };
      log(`${weights}: ${deep.vision} ViT / ${deep.qllama} QLLaMA blocks`);
      const a = await timeStages(dirs.deep, weights, common, pixels, ids, log);
      log(`${weights}: ${shallow.vision} ViT / ${shallow.qllama} QLLaMA blocks`);
      const b = await timeStages(dirs.shallow, weights, common, pixels, ids, log);
      const extrapolate = (deepSeconds: number, shallowSeconds: number, part: 'vision' | 'qllama', full: number) =>
        extrapolateToDepth(
          { layers: shallow[part], seconds: shallowSeconds },
          { layers: deep[part], seconds: deepSeconds },
          full,
        );
      const vision = extrapolate(a.seconds.vision, b.seconds.vision, 'vision', VISION.layers);
      const queries = extrapolate(a.seconds.queries, b.seconds.queries, 'qllama', QLLAMA.layers);
      const text = extrapolate(a.seconds.text, b.seconds.text, 'qllama', QLLAMA.layers);
      const contention = [vision, queries, text].find((e) => e.contention)?.contention;
      reference ??= weights === 'float32' ? a.outputs : null;
      const stage = (seconds: number | null): ClipStageTiming =>
        seconds === null
          ? { seconds: null, perSecond: null }
          : { seconds: round(seconds / batch), perSecond: round(batch / seconds) };
      results.push({
        model: 'InternVL-14B-224px (InternViT-6B-224 + QLLaMA-7B), random bf16 checkpoint',
        weights,
        batch,
        threads,
        imageC: stage(vision.seconds),
        imageG: stage(vision.seconds === null || queries.seconds === null ? null : vision.seconds + queries.seconds),
        text: stage(text.seconds),
        relativeErrorVsFloat32: reference
          ? {
              imageC: round(relativeError(a.outputs.c, reference.c)),
              imageG: round(relativeError(a.outputs.g, reference.g)),
              text: round(relativeError(a.outputs.text, reference.text)),
            }
          : { imageC: NaN, imageG: NaN, text: NaN },
        layersTimed: deep,
        peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
        extrapolated: true,
        cpu: cpuModel(),
        onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
        ...(contention ? { contention } : {}),
      });
    }
    return results;
  } finally {
    if (!options.workDir) fs.rmSync(workDir, { recursive: true, force: true });
  }
}
