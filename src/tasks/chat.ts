/**
 * Multimodal chat, as the official `model.chat()`: images are tiled (`dynamic_preprocess`), the question gets
 * `<image>\n` on the first turn, the conversation template builds the prompt, each `<image>` becomes
 * `<img>` + `<IMG_CONTEXT>`×(256·tiles) + `</img>`, generation stops at the template's separator, and the decoded
 * answer is cut there. Several images are labelled `Image-k: <image>`, video frames `Frame-k: <image>` (one tile
 * each). `*-hf` checkpoints use their Jinja `chat_template` instead of the official templates.
 */
import { ConfigError, UsageError } from '../core/errors.js';
import type { ResolveModelOptions } from '../core/hub.js';
import { files, modelResolver } from '../core/io.js';
import { readOptionalJsonObject } from '../core/json.js';
import type { FloatTensor } from '../core/tensor.js';
import { InternVLChatModel, type LoadOptions } from '../models/internvl_chat.js';
import type { RgbImage } from '../processing/image.js';
import { preprocessForChat } from '../processing/tiling.js';
import { loadTokenizer, type Tokenizer } from '../processing/tokenizers/index.js';
import { extractResponse, getTemplate, IMG_CONTEXT_TOKEN, type ConversationTemplate } from '../processing/templates.js';
import {
  labelTurn,
  renderChatPrompt,
  type PromptFormat,
  type PromptMessage,
  type PromptVisual,
} from './chat_prompt.js';
import { newTokenBudget, streamTokens, type FinishReason, type GenerationOptions, type Prompt } from './generation.js';

export interface ChatPipeline {
  model: InternVLChatModel;
  tokenizer: Tokenizer;
  /** The official template (remote layout), or null when a Jinja chat_template is used (*-hf). */
  template: ConversationTemplate | null;
  hfChatTemplate: string | null;
  imageContextId: number;
  stopTokenIds: number[];
}

/** Loads a model folder or Hugging Face repo id (`OpenGVLab/InternVL2-1B`, `org/name@revision`), as `--model`. */
export async function loadChatPipeline(
  idOrPath: string,
  options: LoadOptions & { hub?: ResolveModelOptions } = {},
): Promise<ChatPipeline> {
  const dir = await (await modelResolver.get())(idOrPath, options.hub);
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
    // A list of named templates (another form tokenizer_config.json allows) is not used: the next file is tried.
    const value = (await readOptionalJsonObject(fs.join(dir, file), { error: ConfigError }))?.chat_template;
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
  finishReason: FinishReason;
}

/** One image (tiled up to `maxTiles`, default the config's `max_dynamic_patch`) or one video frame (one tile). */
export interface VisualItem {
  image: RgbImage;
  kind: PromptVisual['kind'];
  maxTiles?: number;
}

/** The pixel tiles of a conversation's visuals, and what the prompt needs to know of each. */
export interface PreparedVisuals {
  pixels: Float32Array | null;
  visuals: PromptVisual[];
}

/** Tiles every visual as `load_image` / `load_video` do, concatenated in order. */
export function prepareVisuals(pipeline: ChatPipeline, items: readonly VisualItem[]): PreparedVisuals {
  const cfg = pipeline.model.config;
  const parts = items.map((item) => {
    const maxTiles = item.kind === 'frame' || !cfg.dynamicImageSize ? 1 : (item.maxTiles ?? cfg.maxDynamicPatch);
    return preprocessForChat(item.image, {
      minTiles: cfg.minDynamicPatch,
      maxTiles,
      tileSize: cfg.imageSize,
      useThumbnail: cfg.useThumbnail,
    });
  });
  if (parts.length === 0) return { pixels: null, visuals: [] };
  const pixels = new Float32Array(parts.reduce((n, p) => n + p.pixelValues.length, 0));
  let offset = 0;
  for (const p of parts) {
    pixels.set(p.pixelValues, offset);
    offset += p.pixelValues.length;
  }
  return { pixels, visuals: parts.map((p, i) => ({ kind: items[i].kind, tiles: p.numTiles })) };
}

/** How the pipeline's model writes prompts (see `renderChatPrompt`). */
export function promptFormat(pipeline: ChatPipeline): PromptFormat {
  return {
    template: pipeline.template,
    hfChatTemplate: pipeline.hfChatTemplate,
    defaultSystemMessage: pipeline.model.config.systemMessage,
    tokensPerTile: pipeline.model.tokensPerTile,
  };
}

/** The image token embeddings of prepared visuals ([tiles, tokensPerTile, hidden]), or null without visuals. */
export async function encodeVisuals(pipeline: ChatPipeline, prepared: PreparedVisuals): Promise<FloatTensor | null> {
  if (!prepared.pixels) return null;
  return pipeline.model.extractFeature(
    prepared.pixels,
    prepared.visuals.reduce((n, v) => n + v.tiles, 0),
  );
}

/**
 * The token ids of a prompt, checked against the model's context together with the new tokens asked for, so that a
 * prompt that cannot fit fails before the vision encoder runs.
 */
export function tokenizePrompt(pipeline: ChatPipeline, prompt: string, maxNewTokens: number | undefined): number[] {
  const ids = pipeline.tokenizer.encode(prompt);
  const imageTokens = ids.reduce((n, id) => n + (id === pipeline.imageContextId ? 1 : 0), 0);
  newTokenBudget(pipeline.model.language.contextLength, ids.length, maxNewTokens, { imageTokens });
  return ids;
}

/** The prompt's ids and embeddings, image features spliced in at the `<IMG_CONTEXT>` positions. */
export async function embedPrompt(
  pipeline: ChatPipeline,
  ids: number[],
  imageEmbeds: FloatTensor | null,
): Promise<Prompt> {
  const { model, imageContextId } = pipeline;
  const images = ids.includes(imageContextId) ? imageEmbeds : null;
  return { ids, embeds: await model.embedWithImages(ids, imageContextId, images) };
}

/** Generation options of a chat answer: the template's stop tokens unless given, `<IMG_CONTEXT>` never chosen. */
export function chatGenerationOptions(pipeline: ChatPipeline, generation: GenerationOptions): GenerationOptions {
  return {
    ...generation,
    stopTokenIds: generation.stopTokenIds ?? pipeline.stopTokenIds,
    suppressTokenIds: [...(generation.suppressTokenIds ?? []), pipeline.imageContextId],
  };
}

/**
 * The answer's text as tokens arrive: deltas that never end in half a multi-byte character nor in the beginning of
 * a stop string, cut at the first stop string (the template's, and any given).
 */
export class AnswerText {
  private readonly ids: number[] = [];
  private shown = '';
  /** True once a stop string was generated: nothing more will be shown. */
  stopped = false;

  constructor(
    private readonly pipeline: ChatPipeline,
    private readonly extraStops: readonly string[] = [],
  ) {}

  /** Adds a token; returns the newly shown text (often empty). */
  push(id: number): string {
    this.ids.push(id);
    if (this.stopped) return '';
    const { text, stopped } = this.cut(this.pipeline.tokenizer.decode(this.ids, { skipSpecialTokens: true }));
    this.stopped = stopped;
    let stable = text;
    if (!stopped) {
      // Hold back a trailing replacement character (usually half of a multi-byte character) and a tail that may
      // grow into a stop string.
      if (stable.endsWith('\uFFFD')) stable = stable.slice(0, -1);
      stable = stable.slice(0, stable.length - this.pendingStop(stable));
    }
    if (stable.length > this.shown.length && stable.startsWith(this.shown)) {
      const delta = stable.slice(this.shown.length);
      this.shown = stable;
      return delta;
    }
    return '';
  }

  /** The whole answer as `chat()` returns it (cut at the stop strings, stripped). */
  response(): string {
    const decoded = this.pipeline.tokenizer.decode(this.ids, { skipSpecialTokens: true });
    const { template } = this.pipeline;
    const answer = template && this.extraStops.length === 0 ? extractResponse(template, decoded) : null;
    return answer ?? this.cut(decoded).text.trim();
  }

  /** What was shown so far plus the held-back tail, once generation is over. */
  flush(): string {
    const { text } = this.cut(this.pipeline.tokenizer.decode(this.ids, { skipSpecialTokens: true }));
    const delta = text.startsWith(this.shown) ? text.slice(this.shown.length) : '';
    this.shown = text;
    return delta;
  }

  private stops(): readonly string[] {
    return [...(this.pipeline.template?.stopStrings ?? []), ...this.extraStops];
  }

  private cut(text: string): { text: string; stopped: boolean } {
    let stopped = false;
    for (const stop of this.stops()) {
      const at = stop ? text.indexOf(stop) : -1;
      if (at >= 0) {
        text = text.slice(0, at);
        stopped = true;
      }
    }
    return { text, stopped };
  }

  /** Length of the longest tail of `text` that is a proper prefix of a stop string. */
  private pendingStop(text: string): number {
    let longest = 0;
    for (const stop of this.stops())
      for (let n = Math.min(stop.length - 1, text.length); n > longest; n--)
        if (text.endsWith(stop.slice(0, n))) longest = n;
    return longest;
  }
}

/**
 * A conversation with history, as `chat(..., history=…, return_history=True)` keeps it. Turns run one at a time:
 * a turn started while another streams waits for it (its prompt then holds the earlier answer).
 */
export class Conversation {
  readonly history: Array<[string, string]> = [];
  private prepared: PreparedVisuals = { pixels: null, visuals: [] };
  private imageEmbeds: FloatTensor | null = null;
  private lastTurn: Promise<void> = Promise.resolve();

  constructor(
    readonly pipeline: ChatPipeline,
    readonly options: { systemMessage?: string } = {},
  ) {}

  /** Sets the images or video of the conversation (sent with every turn, as the official examples do). */
  setVisuals(visuals: VisualInput): void {
    const images = visuals.images ?? [];
    const frames = visuals.videoFrames ?? [];
    if (images.length > 0 && frames.length > 0) throw new UsageError('a turn takes images or a video, not both');
    this.prepared = prepareVisuals(this.pipeline, [
      ...images.map((image) => ({ image, kind: 'image' as const, maxTiles: visuals.maxTiles })),
      ...frames.map((image) => ({ image, kind: 'frame' as const })),
    ]);
    this.imageEmbeds = null;
  }

  /** The exact prompt text of the next turn, placeholders expanded. */
  promptFor(question: string): string {
    const count = this.prepared.visuals.length;
    // The visuals belong to the first turn, as `chat()` puts them in the first question.
    const messages: PromptMessage[] = [
      ...(this.options.systemMessage ? [{ role: 'system' as const, text: this.options.systemMessage }] : []),
      ...this.history.flatMap(([q, a], i): PromptMessage[] => [
        { role: 'user', text: q, images: i === 0 ? count : 0 },
        { role: 'assistant', text: a },
      ]),
      { role: 'user', text: question, images: this.history.length === 0 ? count : 0 },
    ];
    return renderChatPrompt(promptFormat(this.pipeline), messages, this.prepared.visuals);
  }

  /** Streams the answer as text deltas; the generator returns the whole turn's result and records it in history. */
  async *stream(question: string, generation: GenerationOptions = {}): AsyncGenerator<string, ChatTurnResult> {
    const previous = this.lastTurn;
    let done = () => {};
    this.lastTurn = new Promise((resolve) => {
      done = resolve;
    });
    try {
      await previous;
      const ids = tokenizePrompt(this.pipeline, this.promptFor(question), generation.maxNewTokens);
      this.imageEmbeds ??= await encodeVisuals(this.pipeline, this.prepared);
      const input = await embedPrompt(this.pipeline, ids, this.imageEmbeds);
      const answer = new AnswerText(this.pipeline);
      const stream = streamTokens(
        this.pipeline.model.language,
        input,
        chatGenerationOptions(this.pipeline, generation),
      );
      const generated: number[] = [];
      let finishReason: FinishReason;
      for (;;) {
        const next = await stream.next();
        if (next.done) {
          finishReason = next.value;
          break;
        }
        generated.push(next.value);
        const delta = answer.push(next.value);
        if (delta) yield delta;
      }
      const tail = answer.flush();
      if (tail) yield tail;
      const response = answer.response();
      this.history.push([
        this.history.length === 0 ? labelTurn(question, this.prepared.visuals, 0, this.imageCount()) : question,
        response,
      ]);
      return { response, ids: generated, promptTokens: input.ids.length, finishReason };
    } finally {
      done();
    }
  }

  /** One whole turn. */
  async ask(question: string, generation: GenerationOptions = {}): Promise<ChatTurnResult> {
    const stream = this.stream(question, generation);
    for (;;) {
      const next = await stream.next();
      if (next.done) return next.value;
    }
  }

  private imageCount(): number {
    return this.prepared.visuals.filter((v) => v.kind === 'image').length;
  }
}
