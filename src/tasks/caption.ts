/**
 * Image captioning with InternVL-G (`InternVLModel.generate`): the caption decoder reads the image's queries, then
 * the prompt `English caption:` (BOS, no EOS), then continues from the KV cache. Greedy, or beam
 * search as the paper's evaluation (5 beams, 8 to 30 new tokens).
 */
import type { RgbImage } from '../processing/image.js';
import { preprocessForClip } from '../processing/tiling.js';
import type { ClipPipeline } from './clip.js';
import { beamSearch, generate, type GenerationResult } from './generation.js';

/** The paper's evaluation settings, the defaults of {@link captionImage}. */
export const CAPTION_DEFAULTS = { prompt: 'English caption:', numBeams: 5, minNewTokens: 8, maxNewTokens: 30 } as const;

export interface CaptionOptions {
  prompt?: string;
  /** 1 = greedy. */
  numBeams?: number;
  minNewTokens?: number;
  maxNewTokens?: number;
}

export async function captionImage(
  pipeline: ClipPipeline,
  image: RgbImage,
  options: CaptionOptions = {},
): Promise<{ text: string; ids: number[] }> {
  const { model, tokenizer } = pipeline;
  const S = model.config.imageSize;
  const { tokens } = await model.encodeVision(preprocessForClip(image, 'retrieval', S), 1);
  const decoder = await model.captionDecoder(tokens);
  const prompt = { ids: tokenizer.encode(options.prompt ?? CAPTION_DEFAULTS.prompt) };
  const eos = tokenizer.eosTokenId;
  const stopTokenIds = eos === null ? [] : [eos];
  const numBeams = options.numBeams ?? CAPTION_DEFAULTS.numBeams;
  const maxNewTokens = options.maxNewTokens ?? CAPTION_DEFAULTS.maxNewTokens;
  const minNewTokens = options.minNewTokens ?? CAPTION_DEFAULTS.minNewTokens;
  const result: GenerationResult =
    numBeams > 1
      ? await beamSearch(decoder, prompt, { numBeams, maxNewTokens, minNewTokens, stopTokenIds })
      : await generate(decoder, prompt, { maxNewTokens, minNewTokens, stopTokenIds });
  return { text: tokenizer.decode(result.ids, { skipSpecialTokens: true }).trim(), ids: result.ids };
}
