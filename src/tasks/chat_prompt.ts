/**
 * The prompt text of a chat, from OpenAI-style messages (system / user / assistant turns, images attached to any
 * user turn) and the tile count of each image: the official templates of `processing/templates.ts` (or a `*-hf`
 * checkpoint's Jinja `chat_template`), the image labels of the official `chat()` and the `<image>` →
 * `<img><IMG_CONTEXT>…</img>` expansion. Pure: no model, no tokenizer, no I/O.
 *
 * Labels follow `chat()`: one image is `<image>\n` before the text of its turn, several images of the conversation
 * are `Image-k: <image>\n` (k counted over the whole conversation), video frames `Frame-k: <image>\n`. A turn whose
 * text already holds `<image>` placeholders is not labelled: its placeholders take its images in order.
 */
import { UsageError } from '../core/errors.js';
import {
  buildPrompt,
  expandImagePlaceholders,
  IMAGE_PLACEHOLDER,
  renderHfChatTemplate,
  type ConversationTemplate,
} from '../processing/templates.js';

export type PromptRole = 'system' | 'user' | 'assistant';

export interface PromptMessage {
  role: PromptRole;
  text: string;
  /** How many of the visuals (taken in order over the conversation) belong to this user turn (default 0). */
  images?: number;
}

/** One image (tiled) or one video frame (one tile) of the conversation. */
export interface PromptVisual {
  kind: 'image' | 'frame';
  tiles: number;
}

/** How a model writes its prompts. */
export interface PromptFormat {
  /** The official template, or null when `hfChatTemplate` is used. */
  template: ConversationTemplate | null;
  hfChatTemplate: string | null;
  /** The system message when the messages have none (config.json's `system_message`; else the template's). */
  defaultSystemMessage?: string | null;
  /** `<IMG_CONTEXT>` tokens per tile. */
  tokensPerTile: number;
}

/**
 * The text of a user turn with its visuals' labels. `first` is the conversation-wide index of the turn's first
 * visual; `imageCount` the number of images (not frames) in the whole conversation.
 */
export function labelTurn(text: string, visuals: readonly PromptVisual[], first: number, imageCount: number): string {
  if (visuals.length === 0 || text.includes(IMAGE_PLACEHOLDER)) return text;
  const labels = visuals.map((v, i) => {
    const k = first + i + 1;
    if (v.kind === 'frame') return `Frame-${k}: ${IMAGE_PLACEHOLDER}\n`;
    return imageCount > 1 ? `Image-${k}: ${IMAGE_PLACEHOLDER}\n` : `${IMAGE_PLACEHOLDER}\n`;
  });
  return labels.join('') + text;
}

/**
 * The prompt of the next assistant turn: the messages end with a user turn. Consecutive messages of one role are
 * joined with a newline (the templates alternate turns); system messages must come first.
 */
export function renderChatPrompt(
  format: PromptFormat,
  messages: readonly PromptMessage[],
  visuals: readonly PromptVisual[],
): string {
  const turns = mergeTurns(messages);
  const system = turns[0]?.role === 'system' ? turns.shift()!.text : undefined;
  if (turns.length === 0 || turns[turns.length - 1].role !== 'user')
    throw new UsageError('the last message must be a user message');
  const wanted = turns.reduce((n, t) => n + t.images, 0);
  if (wanted !== visuals.length)
    throw new UsageError(`the messages carry ${wanted} image(s) but ${visuals.length} were prepared`);
  const imageCount = visuals.filter((v) => v.kind === 'image').length;
  let next = 0;
  const texts = turns.map((turn) => {
    const own = visuals.slice(next, next + turn.images);
    const text = labelTurn(turn.text, own, next, imageCount);
    next += turn.images;
    return { role: turn.role, text };
  });

  let prompt: string;
  if (format.template) {
    // Merged turns alternate; starting with the user makes them [question, answer] pairs and a last question.
    if (texts[0].role !== 'user') throw new UsageError('the conversation must start with a user message');
    const history: Array<[string, string]> = [];
    for (let i = 0; i + 1 < texts.length; i += 2) history.push([texts[i].text, texts[i + 1].text]);
    prompt = buildPrompt(format.template, {
      systemMessage: system ?? format.defaultSystemMessage ?? undefined,
      history,
      question: texts[texts.length - 1].text,
    });
  } else {
    if (!format.hfChatTemplate) throw new UsageError('the model has neither a chat template nor an official one');
    prompt = renderHfChatTemplate(
      format.hfChatTemplate,
      [...(system !== undefined ? [{ role: 'system', content: system }] : []), ...texts.map(toHfMessage)],
      { addGenerationPrompt: true },
    );
  }
  const placeholders = prompt.split(IMAGE_PLACEHOLDER).length - 1;
  if (placeholders !== visuals.length) {
    throw new UsageError(
      `the conversation has ${placeholders} ${IMAGE_PLACEHOLDER} placeholder(s) but ${visuals.length} image(s)`,
    );
  }
  return expandImagePlaceholders(
    prompt,
    visuals.map((v) => v.tiles),
    format.tokensPerTile,
  );
}

function toHfMessage(turn: { role: PromptRole; text: string }): { role: string; content: string } {
  return { role: turn.role, content: turn.text };
}

function mergeTurns(messages: readonly PromptMessage[]): Array<{ role: PromptRole; text: string; images: number }> {
  const turns: Array<{ role: PromptRole; text: string; images: number }> = [];
  messages.forEach((m, i) => {
    const images = m.images ?? 0;
    if (!Number.isInteger(images) || images < 0) throw new UsageError(`message ${i}: images must be a count`);
    if (images > 0 && m.role !== 'user') throw new UsageError(`message ${i}: only user messages carry images`);
    if (m.role === 'system' && turns.some((t) => t.role !== 'system'))
      throw new UsageError(`message ${i}: a system message must come before the conversation`);
    const last = turns[turns.length - 1];
    if (last && last.role === m.role) {
      last.text = `${last.text}\n${m.text}`;
      last.images += images;
    } else {
      turns.push({ role: m.role, text: m.text, images });
    }
  });
  return turns;
}
