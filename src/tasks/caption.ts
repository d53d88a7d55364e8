/**
 * Image captioning with InternVL-G (`InternVLModel.generate`): QLLaMA reads the 96 queries followed by the prompt
 * (`English caption:`, BOS, no EOS); the queries see each other both ways and cross-attend to the ViT tokens
 * during the prefill, the text is causal and sees the queries; decoding continues from the KV cache without
 * cross-attention. Greedy, or beam search as the paper's evaluation (5 beams, 8 to 30 new tokens).
 */
import * as ort from 'onnxruntime-node';
import type { InternVLClipModel } from '../models/internvl_clip.js';
import { causalAttentionBias, type CausalLM, type DecoderStep, type KvCache } from '../models/llm.js';
import type { RgbImage } from '../processing/image.js';
import { preprocessForClip } from '../processing/tiling.js';
import type { ClipPipeline } from './clip.js';
import { beamSearch, generate, type Decoder, type GenerationResult } from './generation.js';

export interface CaptionOptions {
  prompt?: string;
  /** 1 = greedy. Default 5, as the paper's evaluation. */
  numBeams?: number;
  minNewTokens?: number;
  maxNewTokens?: number;
}

/** QLLaMA steps with the vision inputs the caption prefill needs (and none afterwards). */
class CaptionDecoder implements Decoder {
  constructor(private readonly lm: CausalLM, private readonly model: InternVLClipModel, private readonly visionTokens: Float32Array) {}

  get config() { return this.lm.config; }
  embedTokens(ids: readonly number[]): Float32Array { return this.lm.embedTokens(ids); }
  emptyCache(batch: number): KvCache { return this.lm.emptyCache(batch); }

  step(step: DecoderStep): Promise<{ logits: Float32Array; cache: KvCache }> {
    if (step.cache.length > 0) return this.lm.step({ ...step, extraFeeds: this.model.noVisionFeeds(step.batch, step.seq) });
    const Q = this.model.config.numQueryToken;
    const { batch: B, seq: S } = step;
    const bias = causalAttentionBias(step.attentionMask, B, S, S);
    for (let b = 0; b < B; b++) for (let i = 0; i < Q; i++) bias.fill(0, (b * S + i) * S, (b * S + i) * S + Q);
    const rows = new Float32Array(B * S);
    for (let b = 0; b < B; b++) rows.fill(1, b * S, b * S + Q);
    const Cv = this.model.config.vision.hiddenSize;
    const visionLength = this.visionTokens.length / Cv;
    const vision = new Float32Array(B * this.visionTokens.length);
    for (let b = 0; b < B; b++) vision.set(this.visionTokens, b * this.visionTokens.length);
    return this.lm.step({
      ...step, attentionBias: bias,
      extraFeeds: {
        vision_hidden_states: new ort.Tensor('float32', vision, [B, visionLength, Cv]),
        cross_attention_rows: new ort.Tensor('float32', rows, [B * S, 1]),
      },
    });
  }
}

export async function captionImage(pipeline: ClipPipeline, image: RgbImage, options: CaptionOptions = {}): Promise<{ text: string; ids: number[] }> {
  const { model, tokenizer } = pipeline;
  const S = model.config.imageSize;
  const { tokens } = await model.encodeVision(preprocessForClip(image, 'retrieval', S), 1);
  const lm = await model.captioningDecoder();
  const decoder = new CaptionDecoder(lm, model, tokens);
  const textIds = tokenizer.encode(options.prompt ?? 'English caption:');
  const Q = model.config.numQueryToken;
  const H = model.config.qllama.hiddenSize;
  const embeds = new Float32Array((Q + textIds.length) * H);
  embeds.set(model.checkpoint.readFloat32('query_tokens').data);
  embeds.set(lm.embedTokens(textIds), Q * H);
  const prompt = { ids: [...new Array(Q).fill(0), ...textIds], embeds };
  const eos = tokenizer.eosTokenId;
  const stopTokenIds = eos === null ? [] : [eos];
  const numBeams = options.numBeams ?? 5;
  const maxNewTokens = options.maxNewTokens ?? 30;
  const minNewTokens = options.minNewTokens ?? 8;
  const result: GenerationResult = numBeams > 1
    ? await beamSearch(decoder, prompt, { numBeams, maxNewTokens, minNewTokens, stopTokenIds })
    : await generate(decoder, prompt, { maxNewTokens, minNewTokens, stopTokenIds });
  return { text: tokenizer.decode(result.ids, { skipSpecialTokens: true }).trim(), ids: result.ids };
}
