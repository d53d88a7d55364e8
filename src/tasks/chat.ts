/**
 * Multimodal chat, as the official `model.chat()`: images are tiled (`dynamic_preprocess`), the question gets
 * `<image>\n` on the first turn, the conversation template builds the prompt, each `<image>` becomes
 * `<img>` + `<IMG_CONTEXT>`×(256·tiles) + `</img>`, generation stops at the template's separator, and the decoded
 * answer is cut there. Several images are labelled `Image-k: <image>`, video frames `Frame-k: <image>` (one tile
 * each). `*-hf` checkpoints use their Jinja `chat_template` instead of the official templates.
 */
import { UsageError } from '../core/errors.js';
import { files } from '../core/io.js';
import { InternVLChatModel, type LoadOptions } from '../models/internvl_chat.js';
import type { RgbImage } from '../processing/image.js';
import { preprocessForChat } from '../processing/tiling.js';
import { loadTokenizer, type Tokenizer } from '../processing/tokenizers/index.js';
import {
  buildPrompt,
  expandImagePlaceholders,
  extractResponse,
  getTemplate,
  renderHfChatTemplate,
  IMAGE_PLACEHOLDER,
  IMG_CONTEXT_TOKEN,
  type ConversationTemplate,
} from '../processing/templates.js';
import { streamTokens, type GenerationOptions } from './generation.js';

export interface ChatPipeline {
  model: InternVLChatModel;
  tokenizer: Tokenizer;
  /** The official template (remote layout), or null when a Jinja chat_template is used (*-hf). */
  template: ConversationTemplate | null;
  hfChatTemplate: string | null;
  imageContextId: number;
  stopTokenIds: number[];
}

export async function loadChatPipeline(dir: string, options: LoadOptions = {}): Promise<ChatPipeline> {
  const model = await InternVLChatModel.load(dir, options);
  const tokenizer = await loadTokenizer(dir);
  const hfChatTemplate = model.config.layout === 'hf' ? await readChatTemplate(dir) : null;
  const template = hfChatTemplate ? null : getTemplate(model.config.template ?? 'Hermes-2');
  const imageContextId = model.config.imageTokenId ?? tokenizer.tokenToId(IMG_CONTEXT_TOKEN);
  if (imageContextId === undefined) throw new UsageError(`${dir}: the tokenizer has no ${IMG_CONTEXT_TOKEN} token`);
  const stopStrings = template ? template.stopStrings : ['<|im_end|>', '<|end|>', '<|endoftext|>'];
  const stopTokenIds = stopStrings.map((s) => tokenizer.tokenToId(s)).filter((id): id is number => id !== undefined);
  if (tokenizer.eosTokenId !== null && !template) stopTokenIds.push(tokenizer.eosTokenId);
  return { model, tokenizer, template, hfChatTemplate, imageContextId, stopTokenIds };
}

async function readChatTemplate(dir: string): Promise<string | null> {
  const fs = await files.get();
  const jinja = fs.join(dir, 'chat_template.jinja');
  if (await fs.isFile(jinja)) return fs.readText(jinja);
  for (const file of ['chat_template.json', 'tokenizer_config.json']) {
    const full = fs.join(dir, file);
    if (!(await fs.isFile(full))) continue;
    const value = JSON.parse(await fs.readText(full)).chat_template;
    if (typeof value === 'string') return value;
  }
  return null;
}

/** Visual input of a turn: images (each tiled) or video frames (one tile each). */
export interface VisualInput {
  images?: RgbImage[];
  videoFrames?: RgbImage[];
  /** Maximum tiles per image (default: the config's `max_dynamic_patch`, 12 for most models). */
  maxTiles?: number;
}

export interface ChatTurnResult {
  response: string;
  ids: number[];
  promptTokens: number;
}

/** Pixel tiles of every visual, and the tile count of each (one `<image>` each). */
function prepareVisuals(
  pipeline: ChatPipeline,
  visuals: VisualInput,
): { pixels: Float32Array | null; tiles: number[]; labels: string[] } {
  const cfg = pipeline.model.config;
  const tileOptions = (maxTiles: number) => ({
    minTiles: cfg.minDynamicPatch,
    maxTiles,
    tileSize: cfg.imageSize,
    useThumbnail: cfg.useThumbnail,
  });
  const parts: { pixelValues: Float32Array; numTiles: number }[] = [];
  const labels: string[] = [];
  const images = visuals.images ?? [];
  const frames = visuals.videoFrames ?? [];
  if (images.length > 0 && frames.length > 0) throw new UsageError('a turn takes images or a video, not both');
  const maxTiles = cfg.dynamicImageSize ? (visuals.maxTiles ?? cfg.maxDynamicPatch) : 1;
  images.forEach((image, i) => {
    parts.push(preprocessForChat(image, tileOptions(maxTiles)));
    labels.push(images.length > 1 ? `Image-${i + 1}: ${IMAGE_PLACEHOLDER}\n` : `${IMAGE_PLACEHOLDER}\n`);
  });
  frames.forEach((frame, i) => {
    parts.push(preprocessForChat(frame, tileOptions(1)));
    labels.push(`Frame-${i + 1}: ${IMAGE_PLACEHOLDER}\n`);
  });
  if (parts.length === 0) return { pixels: null, tiles: [], labels };
  const pixels = new Float32Array(parts.reduce((n, p) => n + p.pixelValues.length, 0));
  let offset = 0;
  for (const p of parts) {
    pixels.set(p.pixelValues, offset);
    offset += p.pixelValues.length;
  }
  return { pixels, tiles: parts.map((p) => p.numTiles), labels };
}

/** A conversation with history, as `chat(..., history=…, return_history=True)` keeps it. */
export class Conversation {
  readonly history: Array<[string, string]> = [];
  private visuals: { pixels: Float32Array | null; tiles: number[]; labels: string[] } | null = null;
  private imageEmbeds: Float32Array | null = null;

  constructor(
    readonly pipeline: ChatPipeline,
    readonly options: { systemMessage?: string } = {},
  ) {}

  /** Sets the images or video of the conversation (sent with every turn, as the official examples do). */
  setVisuals(visuals: VisualInput): void {
    this.visuals = prepareVisuals(this.pipeline, visuals);
    this.imageEmbeds = null;
  }

  /** The exact prompt text of the next turn, placeholders expanded. */
  promptFor(question: string): string {
    const { template, hfChatTemplate, model } = this.pipeline;
    const visuals = this.visuals;
    const text = this.withImagePlaceholders(question);
    let prompt: string;
    if (template) {
      prompt = buildPrompt(template, {
        systemMessage: this.options.systemMessage ?? model.config.systemMessage ?? undefined,
        history: this.history,
        question: text,
      });
    } else {
      const messages = [
        ...(this.options.systemMessage ? [{ role: 'system', content: this.options.systemMessage }] : []),
        ...this.history.flatMap(([q, a]) => [
          { role: 'user', content: q },
          { role: 'assistant', content: a },
        ]),
        { role: 'user', content: text },
      ];
      prompt = renderHfChatTemplate(hfChatTemplate!, messages, { addGenerationPrompt: true });
    }
    const tiles = visuals?.tiles ?? [];
    const placeholders = prompt.split(IMAGE_PLACEHOLDER).length - 1;
    if (placeholders !== tiles.length) {
      throw new UsageError(
        `the conversation has ${placeholders} ${IMAGE_PLACEHOLDER} placeholder(s) but ${tiles.length} image(s)`,
      );
    }
    return expandImagePlaceholders(prompt, tiles, model.tokensPerTile);
  }

  /** Streams the answer as text deltas; the generator returns the whole turn's result and records it in history. */
  async *stream(question: string, generation: GenerationOptions = {}): AsyncGenerator<string, ChatTurnResult> {
    const { model, tokenizer, template, imageContextId, stopTokenIds } = this.pipeline;
    const prompt = this.promptFor(question);
    const ids = tokenizer.encode(prompt);
    if (this.visuals?.pixels && !this.imageEmbeds) {
      this.imageEmbeds = await model.extractFeature(
        this.visuals.pixels,
        this.visuals.tiles.reduce((a, b) => a + b, 0),
      );
    }
    const embeds = model.embedWithImages(ids, imageContextId, ids.includes(imageContextId) ? this.imageEmbeds : null);
    const generated: number[] = [];
    let shown = '';
    const stream = streamTokens(
      model.language,
      { ids, embeds },
      {
        ...generation,
        stopTokenIds: generation.stopTokenIds ?? stopTokenIds,
        suppressTokenIds: [...(generation.suppressTokenIds ?? []), imageContextId],
      },
    );
    for await (const token of stream) {
      generated.push(token);
      const text = this.cut(tokenizer.decode(generated, { skipSpecialTokens: true }));
      // Hold back a trailing replacement character: it is usually half of a multi-byte character.
      const stable = text.endsWith('\uFFFD') ? text.slice(0, -1) : text;
      if (stable.length > shown.length && stable.startsWith(shown)) {
        yield stable.slice(shown.length);
        shown = stable;
      }
    }
    const decoded = tokenizer.decode(generated, { skipSpecialTokens: true });
    const response = template ? extractResponse(template, decoded) : this.cut(decoded).trim();
    this.history.push([this.withImagePlaceholders(question), response]);
    return { response, ids: generated, promptTokens: ids.length };
  }

  /** One whole turn. */
  async ask(question: string, generation: GenerationOptions = {}): Promise<ChatTurnResult> {
    const stream = this.stream(question, generation);
    for (;;) {
      const next = await stream.next();
      if (next.done) return next.value;
    }
  }

  /**
   * The question as the template sees it: on the first turn with visuals and no `<image>` of its own, prefixed with
   * one `<image>\n` (or `Image-k: <image>\n`, `Frame-k: <image>\n` lines) per image, as `chat()` does.
   */
  private withImagePlaceholders(question: string): string {
    const visuals = this.visuals;
    if (!visuals || visuals.tiles.length === 0 || this.history.length > 0 || question.includes(IMAGE_PLACEHOLDER))
      return question;
    return visuals.labels.join('') + question;
  }

  private cut(text: string): string {
    const stops = this.pipeline.template?.stopStrings ?? [];
    for (const stop of stops) {
      const at = text.indexOf(stop);
      if (at >= 0) text = text.slice(0, at);
    }
    return text;
  }
}
