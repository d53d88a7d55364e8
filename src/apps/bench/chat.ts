/**
 * Chat benchmark on random weights of a released InternVL-Chat shape: time to first token for one 448 px tile plus
 * a short question (vision encoder + projector, prefill of 256 image + N text tokens, first logits), then greedy
 * decoding with the KV cache, and peak memory, for float32 and quantized weights.
 *
 * The checkpoint is really written (bf16 by default, as released; one shard per layer plus an index, so writing it
 * never holds more than a layer in memory) and loaded through the user path: `InternVLChatModel.load` with
 * `useQuantizedLinears` installed by `configureLlmGraph` / `configureVisionGraph`. Converted and quantized weights
 * go to a weight cache in the work folder; the first load of each configuration fills it (reported separately as
 * `firstLoadSeconds`), and every configuration is then measured in a fresh process whose peak RSS is its own.
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../../core/errors.js';
import { WEIGHT_FORMATS, weightFormatHook, type WeightFormat } from '../../core/quantize/formats.js';
import { writeSafetensors } from '../../core/node/files.js';
import type { DType } from '../../core/safetensors.js';
import type { CausalLM } from '../../models/llm.js';
import { readOnnxProfile, type OnnxProfile, type OpTime } from './profile.js';
import { cpuModel, machineInfo, median, quantile } from './stats.js';

export interface ChatShape {
  name: string;
  /** The released checkpoints with this shape. */
  models: string;
  vision: { layers: number; hidden: number; heads: number; intermediate: number; imageSize: number; patchSize: number };
  llm: {
    family: 'qwen2' | 'internlm2';
    layers: number;
    hidden: number;
    heads: number;
    kvHeads: number;
    headDim: number;
    intermediate: number;
    vocab: number;
    ropeTheta: number;
    rmsNormEps: number;
    tieWordEmbeddings: boolean;
  };
  template: string;
}

const INTERNVIT_300M_448 = { layers: 24, hidden: 1024, heads: 16, intermediate: 4096, imageSize: 448, patchSize: 14 };

export const CHAT_SHAPES: Record<string, ChatShape> = {
  'internvl2-1b': {
    name: 'internvl2-1b',
    models: 'InternVL2-1B (InternViT-300M-448px + Qwen2-0.5B-Instruct)',
    vision: INTERNVIT_300M_448,
    llm: {
      family: 'qwen2',
      layers: 24,
      hidden: 896,
      heads: 14,
      kvHeads: 2,
      headDim: 64,
      intermediate: 4864,
      vocab: 151655,
      ropeTheta: 1e6,
      rmsNormEps: 1e-6,
      tieWordEmbeddings: false,
    },
    template: 'Hermes-2',
  },
  'internvl2-2b': {
    name: 'internvl2-2b',
    models: 'InternVL2-2B (InternViT-300M-448px + internlm2-chat-1_8b)',
    vision: INTERNVIT_300M_448,
    llm: {
      family: 'internlm2',
      layers: 24,
      hidden: 2048,
      heads: 16,
      kvHeads: 8,
      headDim: 128,
      intermediate: 8192,
      vocab: 92553,
      ropeTheta: 1e6,
      rmsNormEps: 1e-5,
      tieWordEmbeddings: false,
    },
    template: 'internlm2-chat',
  },
};

export type PartFormat = WeightFormat;
const PART_FORMATS = WEIGHT_FORMATS;
export type StorageDtype = 'bfloat16' | 'float32';

export interface ChatBenchOptions {
  shape?: string;
  llm?: PartFormat;
  vision?: PartFormat;
  /** Checkpoint storage (default bfloat16, as released). */
  dtype?: StorageDtype;
  /** Text tokens of the question besides the 256 image tokens (default 20). */
  questionTokens?: number;
  /** Greedy tokens timed after the first (default 32). */
  decodeTokens?: number;
  /** Time-to-first-token repetitions after one warm-up (default 5). */
  runs?: number;
  /** Times the `decodeTokens` greedy tokens are decoded from the prompt's cache (default 3). */
  decodeRepeats?: number;
  threads?: number;
  /** Folder holding the random checkpoint and the weight cache; reused when it already has them. */
  workDir?: string;
  /** Only load (fills the weight cache) and report the load time. */
  loadOnly?: boolean;
  /** Run the LLM under onnxruntime's profiler and account for the decode steps' time (`decodeProfile`). */
  profile?: boolean;
  log?: (message: string) => void;
}

/**
 * Where a decode step's time goes, means per step over all decode steps: onnxruntime's kernels; onnxruntime's own
 * time between them (`model_run` − kernels); the Node binding around it (`session.run` in JavaScript − `model_run`:
 * wrapping feeds, copying outputs out, the thread hop); the embedding look-up; and the decoder's JavaScript
 * (feeds, KV write-back, bookkeeping: the step − all of the above). Timed with the profiler on, which adds a little
 * to every node.
 */
export interface DecodeProfile {
  steps: number;
  msPerStep: number;
  ms: { kernels: number; onnxruntime: number; binding: number; embedding: number; decoderJs: number };
  shares: { kernels: number; onnxruntime: number; binding: number; embedding: number; decoderJs: number };
  /** Kernel time per operator type per step. */
  ops: OpTime[];
}

export interface ChatBenchResult {
  shape: string;
  llm: PartFormat;
  vision: PartFormat;
  dtype: StorageDtype;
  threads: number;
  /** Model load with a warm weight cache (a fresh process; `firstLoadSeconds` includes converting/quantizing). */
  loadSeconds: number;
  firstLoadSeconds?: number;
  promptTokens: number;
  imageTokens: number;
  /** Medians over `runs` warm runs: vision + embedding + prefill + first logits. */
  timeToFirstTokenSeconds: number;
  visionSeconds: number;
  prefillSeconds: number;
  prefillTokensPerSecond: number;
  /** The first request after loading (first-run allocations included). */
  coldTimeToFirstTokenSeconds: number;
  timeToFirstTokenBestSeconds: number;
  /**
   * Medians over the runs during which this process had all its threads' worth of CPU (share ≥ 0.85): what an
   * unshared machine gives. Null when every run competed with other processes.
   */
  cleanTimeToFirstToken: { runs: number; seconds: number; visionSeconds: number; prefillSeconds: number } | null;
  decodeTokens: number;
  decodeRepeats: number;
  /** `decodeTokens` / wall time, median over the repeats. */
  decodeTokensPerSecond: number;
  decodeMsPerTokenMedian: number;
  decodeMsPerTokenP90: number;
  decodeMsPerTokenMin: number;
  /** As `cleanTimeToFirstToken`, per decoding step. */
  cleanDecode: { steps: number; msPerToken: number; tokensPerSecond: number } | null;
  peakRssMB: number;
  /** Bytes of the LLM's matmul weights held for execution (int4+int8 holds both copies; decoding streams the 4-bit one). */
  llmMatmulWeightsMB: number;
  cpu: string;
  /** CPU seconds / (wall seconds × threads), medians: well below 1 means other processes took the cores. */
  cpuShareTimeToFirstToken: number;
  cpuShareDecode: number;
  /** 1-minute load average after the run. */
  loadAverage: number;
  /** With `profile`: the decode steps' time, accounted (timings of the whole run then include the profiler's). */
  decodeProfile?: DecodeProfile;
}

// ---- random checkpoint ---------------------------------------------------------------------------------------

/** A 32-bit xorshift: fast, and plenty for weights that only need to be non-degenerate. */
function randomFiller(seed: number): (out: Float32Array, std: number, offset?: number) => void {
  let s = seed >>> 0 || 0x9e3779b9;
  return (out, std, offset = 0) => {
    // Uniform with the given standard deviation: half-width std·√3.
    const width = 2 * std * Math.sqrt(3);
    for (let i = 0; i < out.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      out[i] = offset + width * ((s >>> 0) / 4294967296 - 0.5);
    }
  };
}

function encode(values: Float32Array, dtype: StorageDtype): ArrayBufferView {
  if (dtype === 'float32') return values;
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const halves = new Uint16Array(values.length);
  for (let i = 0; i < words.length; i++) halves[i] = (words[i] + 0x7fff + ((words[i] >>> 16) & 1)) >>> 16;
  return halves;
}

/** config.json in the layout of the released InternVLChatModel checkpoints (remote code). */
export function chatConfigJson(shape: ChatShape, dtype: StorageDtype): Record<string, unknown> {
  const v = shape.vision;
  const l = shape.llm;
  const torchDtype = dtype === 'bfloat16' ? 'bfloat16' : 'float32';
  const llmConfig: Record<string, unknown> =
    l.family === 'qwen2'
      ? {
          architectures: ['Qwen2ForCausalLM'],
          model_type: 'qwen2',
          attention_dropout: 0.0,
          bos_token_id: 151643,
          eos_token_id: 151645,
          hidden_act: 'silu',
          hidden_size: l.hidden,
          initializer_range: 0.02,
          intermediate_size: l.intermediate,
          max_position_embeddings: 32768,
          max_window_layers: 21,
          num_attention_heads: l.heads,
          num_hidden_layers: l.layers,
          num_key_value_heads: l.kvHeads,
          rms_norm_eps: l.rmsNormEps,
          rope_theta: l.ropeTheta,
          rope_scaling: null,
          sliding_window: 32768,
          tie_word_embeddings: l.tieWordEmbeddings,
          torch_dtype: torchDtype,
          use_cache: true,
          use_sliding_window: false,
          vocab_size: l.vocab,
        }
      : {
          architectures: ['InternLM2ForCausalLM'],
          model_type: 'internlm2',
          bias: false,
          bos_token_id: 1,
          eos_token_id: 2,
          pad_token_id: 2,
          hidden_act: 'silu',
          hidden_size: l.hidden,
          initializer_range: 0.02,
          intermediate_size: l.intermediate,
          max_position_embeddings: 32768,
          num_attention_heads: l.heads,
          num_hidden_layers: l.layers,
          num_key_value_heads: l.kvHeads,
          rms_norm_eps: l.rmsNormEps,
          rope_scaling: { factor: 2.0, type: 'dynamic' },
          rope_theta: l.ropeTheta,
          tie_word_embeddings: l.tieWordEmbeddings,
          torch_dtype: torchDtype,
          use_cache: true,
          vocab_size: l.vocab,
        };
  return {
    architectures: ['InternVLChatModel'],
    model_type: 'internvl_chat',
    downsample_ratio: 0.5,
    dynamic_image_size: true,
    force_image_size: v.imageSize,
    hidden_size: l.hidden,
    max_dynamic_patch: 12,
    min_dynamic_patch: 1,
    pad2square: false,
    ps_version: 'v2',
    select_layer: -1,
    template: shape.template,
    tie_word_embeddings: false,
    torch_dtype: torchDtype,
    use_backbone_lora: 0,
    use_llm_lora: 0,
    use_thumbnail: true,
    llm_config: llmConfig,
    vision_config: {
      architectures: ['InternVisionModel'],
      model_type: 'intern_vit_6b',
      attention_dropout: 0.0,
      drop_path_rate: 0.0,
      dropout: 0.0,
      hidden_act: 'gelu',
      hidden_size: v.hidden,
      image_size: v.imageSize,
      initializer_factor: 1.0,
      initializer_range: 0.02,
      intermediate_size: v.intermediate,
      layer_norm_eps: 1e-6,
      norm_type: 'layer_norm',
      num_attention_heads: v.heads,
      num_channels: 3,
      num_hidden_layers: v.layers,
      patch_size: v.patchSize,
      qk_normalization: false,
      qkv_bias: true,
      torch_dtype: torchDtype,
      use_flash_attn: false,
    },
  };
}

type Spec = [name: string, dims: number[], std: number, offset?: number];

/** Writes config.json and a random checkpoint of `shape` (sharded per layer, with an index) to `dir`. */
export function writeRandomChatCheckpoint(
  dir: string,
  shape: ChatShape,
  options: { dtype: StorageDtype; seed?: number },
): number {
  const fill = randomFiller(options.seed ?? 1);
  const stDtype: DType = options.dtype === 'bfloat16' ? 'BF16' : 'F32';
  const weightMap: Record<string, string> = {};
  let bytes = 0;
  const writeShard = (file: string, specs: Spec[]) => {
    const tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }> = {};
    for (const [name, dims, std, offset] of specs) {
      const values = new Float32Array(dims.reduce((a, b) => a * b, 1));
      fill(values, std, offset);
      const data = encode(values, options.dtype);
      tensors[name] = { dtype: stDtype, shape: dims, data };
      weightMap[name] = file;
      bytes += data.byteLength;
    }
    writeSafetensors(path.join(dir, file), tensors, { format: 'pt' });
  };
  fs.mkdirSync(dir, { recursive: true });
  const { vision: v, llm: l } = shape;
  const grid = v.imageSize / v.patchSize;
  const W = 0.02;
  // Norm gains around 1 and small biases: activations stay in a normal float range through all layers.
  writeShard('model-vision-embeddings.safetensors', [
    ['vision_model.embeddings.class_embedding', [1, 1, v.hidden], W],
    ['vision_model.embeddings.patch_embedding.weight', [v.hidden, 3, v.patchSize, v.patchSize], W],
    ['vision_model.embeddings.patch_embedding.bias', [v.hidden], W],
    ['vision_model.embeddings.position_embedding', [1, 1 + grid * grid, v.hidden], W],
  ]);
  for (let i = 0; i < v.layers; i++) {
    const p = `vision_model.encoder.layers.${i}`;
    writeShard(`model-vision-${String(i).padStart(3, '0')}.safetensors`, [
      [`${p}.norm1.weight`, [v.hidden], 0.1, 1],
      [`${p}.norm1.bias`, [v.hidden], W],
      [`${p}.attn.qkv.weight`, [3 * v.hidden, v.hidden], W],
      [`${p}.attn.qkv.bias`, [3 * v.hidden], W],
      [`${p}.attn.proj.weight`, [v.hidden, v.hidden], W],
      [`${p}.attn.proj.bias`, [v.hidden], W],
      [`${p}.ls1`, [v.hidden], 0.1, 0.5],
      [`${p}.norm2.weight`, [v.hidden], 0.1, 1],
      [`${p}.norm2.bias`, [v.hidden], W],
      [`${p}.mlp.fc1.weight`, [v.intermediate, v.hidden], W],
      [`${p}.mlp.fc1.bias`, [v.intermediate], W],
      [`${p}.mlp.fc2.weight`, [v.hidden, v.intermediate], W],
      [`${p}.mlp.fc2.bias`, [v.hidden], W],
      [`${p}.ls2`, [v.hidden], 0.1, 0.5],
    ]);
  }
  writeShard('model-projector.safetensors', [
    ['mlp1.0.weight', [4 * v.hidden], 0.1, 1],
    ['mlp1.0.bias', [4 * v.hidden], W],
    ['mlp1.1.weight', [l.hidden, 4 * v.hidden], W],
    ['mlp1.1.bias', [l.hidden], W],
    ['mlp1.3.weight', [l.hidden, l.hidden], W],
    ['mlp1.3.bias', [l.hidden], W],
  ]);
  const qwen = l.family === 'qwen2';
  const root = 'language_model.model';
  writeShard('model-llm-embeddings.safetensors', [
    [`${root}.${qwen ? 'embed_tokens' : 'tok_embeddings'}.weight`, [l.vocab, l.hidden], W],
  ]);
  for (let i = 0; i < l.layers; i++) {
    const p = `${root}.layers.${i}`;
    const q = l.heads * l.headDim;
    const kv = l.kvHeads * l.headDim;
    const specs: Spec[] = qwen
      ? [
          [`${p}.input_layernorm.weight`, [l.hidden], 0.1, 1],
          [`${p}.self_attn.q_proj.weight`, [q, l.hidden], W],
          [`${p}.self_attn.q_proj.bias`, [q], W],
          [`${p}.self_attn.k_proj.weight`, [kv, l.hidden], W],
          [`${p}.self_attn.k_proj.bias`, [kv], W],
          [`${p}.self_attn.v_proj.weight`, [kv, l.hidden], W],
          [`${p}.self_attn.v_proj.bias`, [kv], W],
          [`${p}.self_attn.o_proj.weight`, [l.hidden, q], W],
          [`${p}.post_attention_layernorm.weight`, [l.hidden], 0.1, 1],
          [`${p}.mlp.gate_proj.weight`, [l.intermediate, l.hidden], W],
          [`${p}.mlp.up_proj.weight`, [l.intermediate, l.hidden], W],
          [`${p}.mlp.down_proj.weight`, [l.hidden, l.intermediate], W],
        ]
      : [
          [`${p}.attention_norm.weight`, [l.hidden], 0.1, 1],
          [`${p}.attention.wqkv.weight`, [q + 2 * kv, l.hidden], W],
          [`${p}.attention.wo.weight`, [l.hidden, q], W],
          [`${p}.ffn_norm.weight`, [l.hidden], 0.1, 1],
          [`${p}.feed_forward.w1.weight`, [l.intermediate, l.hidden], W],
          [`${p}.feed_forward.w3.weight`, [l.intermediate, l.hidden], W],
          [`${p}.feed_forward.w2.weight`, [l.hidden, l.intermediate], W],
        ];
    writeShard(`model-llm-${String(i).padStart(3, '0')}.safetensors`, specs);
  }
  writeShard('model-llm-head.safetensors', [
    [`${root}.norm.weight`, [l.hidden], 0.1, 1],
    [`language_model.${qwen ? 'lm_head' : 'output'}.weight`, [l.vocab, l.hidden], W],
  ]);
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    `${JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }, null, 2)}\n`,
  );
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(chatConfigJson(shape, options.dtype), null, 2)}\n`);
  return bytes;
}

/** Writes the checkpoint unless `dir` already holds one of the same shape and dtype (config.json is written last). */
export function ensureRandomChatCheckpoint(
  dir: string,
  shape: ChatShape,
  dtype: StorageDtype,
  log: (m: string) => void,
): void {
  const configPath = path.join(dir, 'config.json');
  const wanted = JSON.stringify(chatConfigJson(shape, dtype));
  if (fs.existsSync(configPath) && JSON.stringify(JSON.parse(fs.readFileSync(configPath, 'utf8'))) === wanted) return;
  fs.rmSync(dir, { recursive: true, force: true });
  log(`writing a random ${dtype} ${shape.name} checkpoint to ${dir}`);
  const start = performance.now();
  const bytes = writeRandomChatCheckpoint(dir, shape, { dtype });
  log(`  ${(bytes / 2 ** 30).toFixed(2)} GiB in ${((performance.now() - start) / 1000).toFixed(1)} s`);
}

// ---- one measured configuration ------------------------------------------------------------------------------

const configureWith = weightFormatHook;

function argmax(values: Float32Array, offset: number, width: number): number {
  let best = 0;
  for (let j = 1; j < width; j++) if (values[offset + j] > values[offset + best]) best = j;
  return best;
}

const round = (x: number, digits = 4) => Number(x.toFixed(digits));

/** CPU share above which a sample counts as measured on an unshared machine. */
const CLEAN_SHARE = 0.85;

/** Bytes per matmul weight as executed: float32, or the quantized codes plus scales and zero points. */
function llmMatmulBytes(shape: ChatShape, format: PartFormat): number {
  const l = shape.llm;
  const q = l.heads * l.headDim;
  const kv = l.kvHeads * l.headDim;
  const perLayer = l.hidden * (q + 2 * kv) + q * l.hidden + 3 * l.hidden * l.intermediate;
  const values = l.layers * perLayer + l.vocab * l.hidden;
  // int4 block 32: 16 bytes of codes + 4 of scale + ½ of zero point; int8 per channel: 1 byte per value.
  const perValue = { fp32: 4, int4: 20.5 / 32, int8: 1, 'int4+int8': 1 + 20.5 / 32 }[format];
  return values * perValue;
}

/**
 * Measures one configuration in this process. Call it in a fresh process per configuration for a meaningful
 * `peakRssMB` (`main` does).
 */
export async function runChatBenchmark(options: ChatBenchOptions): Promise<ChatBenchResult | { loadSeconds: number }> {
  const shape = CHAT_SHAPES[options.shape ?? 'internvl2-1b'];
  if (!shape) throw new UsageError(`unknown shape '${options.shape}'; known: ${Object.keys(CHAT_SHAPES).join(', ')}`);
  const log = options.log ?? (() => {});
  const llm = options.llm ?? 'int4';
  const vision = options.vision ?? 'int8';
  const dtype = options.dtype ?? 'bfloat16';
  const threads = options.threads ?? os.availableParallelism();
  const questionTokens = options.questionTokens ?? 20;
  const decodeTokens = options.decodeTokens ?? 32;
  const runs = options.runs ?? 5;
  const decodeRepeats = options.decodeRepeats ?? 3;
  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `internvl-bench-chat-${shape.name}-`));
  const modelDir = path.join(workDir, `model-${dtype}`);
  ensureRandomChatCheckpoint(modelDir, shape, dtype, log);
  const cacheDir = path.join(workDir, 'cache');

  const { InternVLChatModel } = await import('../../models/internvl_chat.js');
  log(`loading ${shape.name}: LLM ${llm}, vision ${vision}, ${threads} threads`);
  const start = performance.now();
  const profilePrefix = `ort-profile-decode-${process.pid}`;
  const model = await InternVLChatModel.load(modelDir, {
    session: { threads, cacheDir },
    llmSession: {
      threads,
      cacheDir,
      ...(options.profile ? { profileFilePrefix: path.join(workDir, profilePrefix) } : {}),
    },
    configureLlmGraph: configureWith(llm),
    configureVisionGraph: configureWith(vision),
  });
  const loadSeconds = (performance.now() - start) / 1000;
  const accounting = options.profile ? accountDecodeSteps(model.language) : null;
  if (options.loadOnly) {
    await model.release();
    return { loadSeconds: round(loadSeconds, 3) };
  }
  try {
    const size = shape.vision.imageSize;
    const pixels = new Float32Array(3 * size * size);
    randomFiller(7)(pixels, 1);
    const vocab = shape.llm.vocab;
    const imageTokenId = vocab - 1;
    const _H = shape.llm.hidden;
    // Question text around the image block, ids away from the special tokens at the end of the vocabulary.
    const text = Array.from({ length: questionTokens }, (_, i) => 1000 + ((i * 7919) % (vocab - 2000)));
    const half = questionTokens >> 1;
    const ids = [...text.slice(0, half), ...Array(model.tokensPerTile).fill(imageTokenId), ...text.slice(half)];
    const S = ids.length;

    /** Wall time and the CPU share this process got over it: below ~0.85 of all threads, others took cores. */
    const measure = async <T>(work: () => Promise<T>): Promise<{ value: T; seconds: number; utilization: number }> => {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const value = await work();
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      return { value, seconds, utilization: (cpu.user + cpu.system) / 1e6 / (seconds * threads) };
    };
    // One decoder for the whole benchmark: slot 0 holds the prompt, slot 1 each decode repeat's copy of it.
    const decoder = model.language.batchDecoder({ maxSequences: 2, maxLength: S + decodeTokens });
    let promptSequence = decoder.addSequence();
    const decodeSequence = decoder.addSequence();
    const firstToken = async () => {
      decoder.removeSequence(promptSequence);
      promptSequence = decoder.addSequence();
      const t0 = performance.now();
      const features = await model.extractFeature(pixels, 1);
      const t1 = performance.now();
      const embeds = await model.embedWithImages(ids, imageTokenId, features);
      const logits = await decoder.prefill(promptSequence, { embeds });
      const token = argmax(logits, 0, vocab);
      const t2 = performance.now();
      return { token, vision: (t1 - t0) / 1000, prefill: (t2 - t1) / 1000 };
    };
    log('time to first token: cold run');
    const cold = await measure(firstToken);
    const warm: Array<Awaited<ReturnType<typeof measure<Awaited<ReturnType<typeof firstToken>>>>>> = [];
    for (let r = 0; r < runs; r++) {
      const run = await measure(firstToken);
      warm.push(run);
      log(
        `  run ${r + 1}/${runs}: ${run.seconds.toFixed(3)} s (vision ${run.value.vision.toFixed(3)}, prefill ${run.value.prefill.toFixed(3)}; CPU share ${run.utilization.toFixed(2)})`,
      );
    }

    // Decoding restarts from the prompt's cache each repeat, so every repeat times the same positions.
    const prompt = warm[warm.length - 1].value;
    if (accounting) accounting.from = accounting.runs;
    const steps: Array<{ seconds: number; utilization: number }> = [];
    const repeatSeconds: number[] = [];
    for (let repeat = 0; repeat < decodeRepeats; repeat++) {
      let { token } = prompt;
      decoder.copySequence(promptSequence, decodeSequence);
      const started = performance.now();
      for (let i = 0; i < decodeTokens; i++) {
        const step = await measure(() => decoder.decode([decodeSequence], [token]));
        token = argmax(step.value[0], 0, vocab);
        steps.push({ seconds: step.seconds, utilization: step.utilization });
      }
      repeatSeconds.push((performance.now() - started) / 1000);
      log(`  decode ${repeat + 1}/${decodeRepeats}: ${(decodeTokens / repeatSeconds[repeat]).toFixed(1)} tokens/s`);
    }
    const stepMs = steps.map((st) => st.seconds * 1000);
    let decodeProfile: DecodeProfile | undefined;
    if (accounting) {
      model.language.endProfiling();
      const profile = readOnnxProfile(workDir, profilePrefix, accounting.from!);
      decodeProfile = decodeProfileOf(stepMs, accounting, profile);
    }
    const cleanSteps = steps.filter((st) => st.utilization >= CLEAN_SHARE).map((st) => st.seconds * 1000);
    const cleanRuns = warm.filter((w) => w.utilization >= CLEAN_SHARE);
    const decodeSeconds = median(repeatSeconds);
    return {
      shape: shape.name,
      llm,
      vision,
      dtype,
      threads,
      loadSeconds: round(loadSeconds, 3),
      promptTokens: S,
      imageTokens: model.tokensPerTile,
      timeToFirstTokenSeconds: round(median(warm.map((w) => w.seconds))),
      visionSeconds: round(median(warm.map((w) => w.value.vision))),
      prefillSeconds: round(median(warm.map((w) => w.value.prefill))),
      prefillTokensPerSecond: round(S / median(warm.map((w) => w.value.prefill)), 1),
      coldTimeToFirstTokenSeconds: round(cold.seconds),
      timeToFirstTokenBestSeconds: round(Math.min(...warm.map((w) => w.seconds))),
      cleanTimeToFirstToken: cleanRuns.length
        ? {
            runs: cleanRuns.length,
            seconds: round(median(cleanRuns.map((w) => w.seconds))),
            visionSeconds: round(median(cleanRuns.map((w) => w.value.vision))),
            prefillSeconds: round(median(cleanRuns.map((w) => w.value.prefill))),
          }
        : null,
      decodeTokens,
      decodeRepeats,
      decodeTokensPerSecond: round(decodeTokens / decodeSeconds, 2),
      decodeMsPerTokenMedian: round(median(stepMs), 2),
      decodeMsPerTokenP90: round(quantile(stepMs, 0.9), 2),
      decodeMsPerTokenMin: round(Math.min(...stepMs), 2),
      cleanDecode: cleanSteps.length
        ? {
            steps: cleanSteps.length,
            msPerToken: round(median(cleanSteps), 2),
            tokensPerSecond: round(1000 / median(cleanSteps), 2),
          }
        : null,
      peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
      llmMatmulWeightsMB: Math.round(llmMatmulBytes(shape, llm) / 2 ** 20),
      cpu: cpuModel(),
      cpuShareTimeToFirstToken: round(median(warm.map((w) => w.utilization)), 3),
      cpuShareDecode: round(median(steps.map((st) => st.utilization)), 3),
      loadAverage: round(os.loadavg()[0], 2),
      ...(decodeProfile ? { decodeProfile } : {}),
    };
  } finally {
    await model.release();
  }
}

/** JavaScript-side times of the decode steps: the embedding look-ups and the graph runs from run `from` on. */
interface StepAccounting {
  /** Graph runs so far. */
  runs: number;
  /** The first decode step's run (the profile's runs before it are skipped); null while not decoding. */
  from: number | null;
  embeddingMs: number;
  sessionRunMs: number;
}

/**
 * Wraps the model's embedding look-up and graph run to count and time them (the decoder calls each once per
 * step). For benchmarks only: the model object stays changed for the rest of its life.
 */
function accountDecodeSteps(lm: CausalLM): StepAccounting {
  const accounting: StepAccounting = { runs: 0, from: null, embeddingMs: 0, sessionRunMs: 0 };
  const timed =
    <A extends unknown[], R>(work: (...args: A) => Promise<R>, field: 'embeddingMs' | 'sessionRunMs') =>
    async (...args: A): Promise<R> => {
      const t0 = performance.now();
      try {
        return await work(...args);
      } finally {
        if (accounting.from !== null) accounting[field] += performance.now() - t0;
        if (field === 'sessionRunMs') accounting.runs++;
      }
    };
  lm.embedTokens = timed(lm.embedTokens.bind(lm), 'embeddingMs');
  lm.run = timed(lm.run.bind(lm), 'sessionRunMs');
  return accounting;
}

function decodeProfileOf(stepMs: number[], accounting: StepAccounting, profile: OnnxProfile): DecodeProfile {
  const steps = stepMs.length;
  const perStep = (total: number) => round(total / steps, 3);
  const total = stepMs.reduce((a, b) => a + b, 0);
  const modelRun = profile.modelRunMs.reduce((a, b) => a + b, 0);
  const kernels = profile.kernelMs * profile.runs;
  const ms = {
    kernels: perStep(kernels),
    onnxruntime: perStep(modelRun - kernels),
    binding: perStep(accounting.sessionRunMs - modelRun),
    embedding: perStep(accounting.embeddingMs),
    decoderJs: perStep(total - accounting.sessionRunMs - accounting.embeddingMs),
  };
  const share = (x: number) => round((x * steps) / total, 3);
  return {
    steps,
    msPerStep: perStep(total),
    ms,
    shares: {
      kernels: share(ms.kernels),
      onnxruntime: share(ms.onnxruntime),
      binding: share(ms.binding),
      embedding: share(ms.embedding),
      decoderJs: share(ms.decoderJs),
    },
    ops: profile.ops,
  };
}

// ---- the matrix of configurations, one process each ------------------------------------------------------------

export interface ChatMatrixOptions extends Omit<ChatBenchOptions, 'llm' | 'vision' | 'loadOnly'> {
  /** Configurations as `llm/vision` pairs, e.g. `fp32/fp32`, `int4/int8`. */
  configs: Array<{ llm: PartFormat; vision: PartFormat }>;
  /** Keep the work folder (checkpoint and weight cache) for later runs. */
  keep?: boolean;
}

/** Runs one configuration in a child process of this module and returns what it reports. */
export function runChatChild(options: ChatBenchOptions): Promise<ChatBenchResult | { loadSeconds: number }> {
  const { log, ...serializable } = options;
  return new Promise((resolve, reject) => {
    // The child's stdout goes to stderr: stdout carries only the JSON report.
    const child = fork(fileURLToPath(import.meta.url), ['--child'], { stdio: ['ignore', 2, 2, 'ipc'] });
    let result: ChatBenchResult | { loadSeconds: number } | undefined;
    let failure: string | undefined;
    child.on('message', (message: { result?: ChatBenchResult; error?: string }) => {
      if (message.error) failure = message.error;
      else result = message.result;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (result) resolve(result);
      else reject(new Error(failure ?? `benchmark child exited with ${signal ?? code}`));
    });
    child.send(serializable);
  });
}

export async function runChatMatrix(
  options: ChatMatrixOptions,
): Promise<{ machine: Record<string, unknown>; results: ChatBenchResult[] }> {
  const log = options.log ?? (() => {});
  const shape = CHAT_SHAPES[options.shape ?? 'internvl2-1b'];
  if (!shape) throw new UsageError(`unknown shape '${options.shape}'; known: ${Object.keys(CHAT_SHAPES).join(', ')}`);
  const workDir = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `internvl-bench-chat-${shape.name}-`));
  const dtype = options.dtype ?? 'bfloat16';
  try {
    // Written here once, so that no child's peak RSS includes generating it.
    ensureRandomChatCheckpoint(path.join(workDir, `model-${dtype}`), shape, dtype, log);
    const results: ChatBenchResult[] = [];
    for (const config of options.configs) {
      const base = { ...options, ...config, workDir, log: undefined };
      log(`${shape.name} LLM ${config.llm} / vision ${config.vision}: first load (fills the weight cache when cold)`);
      const first = await runChatChild({ ...base, loadOnly: true });
      log(`  first load ${first.loadSeconds.toFixed(1)} s; measuring in a fresh process`);
      const result = (await runChatChild(base)) as ChatBenchResult;
      result.firstLoadSeconds = first.loadSeconds;
      results.push(result);
      log(
        `  TTFT ${result.timeToFirstTokenSeconds.toFixed(3)} s (clean: ${result.cleanTimeToFirstToken?.seconds.toFixed(3) ?? 'none'}), ` +
          `decode ${result.decodeTokensPerSecond.toFixed(1)} tokens/s (clean: ${result.cleanDecode?.tokensPerSecond.toFixed(1) ?? 'none'}), peak RSS ${result.peakRssMB} MB`,
      );
    }
    return { machine: await machineInfo(), results };
  } finally {
    if (!options.keep && !options.workDir) fs.rmSync(workDir, { recursive: true, force: true });
    else log(`work folder kept: ${workDir}`);
  }
}

export function parseConfigs(text: string): Array<{ llm: PartFormat; vision: PartFormat }> {
  return text.split(',').map((pair) => {
    const [llm, vision = 'fp32'] = pair.trim().split('/');
    if (!(PART_FORMATS as readonly string[]).includes(llm) || !(PART_FORMATS as readonly string[]).includes(vision)) {
      throw new UsageError(`configuration '${pair}' is not llm/vision with each of ${PART_FORMATS.join(', ')}`);
    }
    return { llm: llm as PartFormat, vision: vision as PartFormat };
  });
}

export const DEFAULT_CONFIGS = 'fp32/fp32,int4/fp32,int4/int8,int4+int8/int8';

/**
 * `node --import tsx src/apps/bench/chat.ts [shape] [configs]` or `main(['internvl2-1b', 'int4/int8'])` from
 * scripts/bench.mjs: prints the matrix's JSON on stdout, progress on stderr.
 */
export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  const [shape = 'internvl2-1b', configs = DEFAULT_CONFIGS] = argv;
  const report = await runChatMatrix({
    shape,
    configs: parseConfigs(configs),
    log: (m) => process.stderr.write(`${m}\n`),
    workDir: process.env.INTERNVL_BENCH_WORKDIR,
  });
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return 0;
}

const isEntry = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isEntry && process.argv[2] === '--child') {
  process.once('message', (options: ChatBenchOptions) => {
    runChatBenchmark({ ...options, log: (m) => process.stderr.write(`${m}\n`) })
      .then((result) => process.send!({ result }, () => process.exit(0)))
      .catch((error: Error) => process.send!({ error: error.stack ?? error.message }, () => process.exit(1)));
  });
} else if (isEntry) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      process.stderr.write(`${(error as Error).stack}\n`);
      process.exitCode = 1;
    },
  );
}
