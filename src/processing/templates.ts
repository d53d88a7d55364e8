/**
 * InternVL chat prompt templates (those of the official `internvl_chat/internvl/conversation.py`; `vicuna_v1.1` and
 * `llama-2` only exist in its older FastChat-derived version) as data, a prompt builder with the official separator
 * rules, the `<image>` → `<img><IMG_CONTEXT>…</img>` expansion of `chat()`, and Jinja rendering for HF-native
 * (`*-hf`) checkpoints whose tokenizer_config.json carries a `chat_template`.
 *
 * `buildPrompt` reproduces what `model.chat()` feeds the tokenizer: the template's system message (or the one given,
 * as `chat()` sets `template.system_message = self.system_message`), then each history pair, then the question,
 * then the bare assistant role. Like the official code, an empty message (Python falsy) is written as its bare role.
 */
import { Template } from '@huggingface/jinja';
import { ConfigError, TokenizerError, UsageError } from '../core/errors.js';

/** The separator styles the InternVL templates use (subset of the official `SeparatorStyle`). */
export type SeparatorStyle = 'MPT' | 'ADD_COLON_TWO' | 'LLAMA2' | 'INTERNVL_ZH';

export interface ConversationTemplate {
  readonly name: string;
  /** Wraps the system message; `{system_message}` is replaced by it. */
  readonly systemTemplate: string;
  readonly systemMessage: string;
  readonly roles: readonly [user: string, assistant: string];
  readonly style: SeparatorStyle;
  readonly sep: string;
  readonly sep2: string | null;
  /**
   * Strings that end a generated answer. The first is `sep.strip()` (or the closing separator where `sep` is blank),
   * whose token id `chat()` passes to generate() as eos; `chat()` also cuts the decoded answer at it.
   */
  readonly stopStrings: readonly string[];
}

/** S1: the system message of InternVL 1.5 / 2.0 (Hermes-2, internlm2-chat, phi3-chat). */
export const INTERNVL_SYSTEM_MESSAGE =
  '你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。';
/** S2: the system message of InternVL 2.5 / 3 (internvl2_5). */
export const INTERNVL2_5_SYSTEM_MESSAGE =
  '你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。';

const CHATML_ROLES = ['<|im_start|>user\n', '<|im_start|>assistant\n'] as const;

const TEMPLATES: readonly ConversationTemplate[] = [
  {
    name: 'Hermes-2',
    systemTemplate: '<|im_start|>system\n{system_message}',
    systemMessage: INTERNVL_SYSTEM_MESSAGE,
    roles: CHATML_ROLES,
    style: 'MPT',
    sep: '<|im_end|>',
    sep2: null,
    stopStrings: ['<|im_end|>', '<|endoftext|>'],
  },
  {
    // Same text as Hermes-2 at inference; they differ only in the BOS the training code adds.
    name: 'internlm2-chat',
    systemTemplate: '<|im_start|>system\n{system_message}',
    systemMessage: INTERNVL_SYSTEM_MESSAGE,
    roles: CHATML_ROLES,
    style: 'MPT',
    sep: '<|im_end|>',
    sep2: null,
    stopStrings: ['<|im_end|>'],
  },
  {
    name: 'phi3-chat',
    systemTemplate: '<|system|>\n{system_message}',
    systemMessage: INTERNVL_SYSTEM_MESSAGE,
    roles: ['<|user|>\n', '<|assistant|>\n'],
    style: 'MPT',
    sep: '<|end|>',
    sep2: null,
    stopStrings: ['<|end|>'],
  },
  {
    // Unlike Hermes-2 the separator carries a newline.
    name: 'internvl2_5',
    systemTemplate: '<|im_start|>system\n{system_message}',
    systemMessage: INTERNVL2_5_SYSTEM_MESSAGE,
    roles: CHATML_ROLES,
    style: 'MPT',
    sep: '<|im_end|>\n',
    sep2: null,
    stopStrings: ['<|im_end|>'],
  },
  {
    // InternVL-Chat-V1-1. The system message is written without systemTemplate, and the user turn ends with sep2.
    name: 'internvl_zh',
    systemTemplate: '',
    systemMessage: '',
    roles: ['<human>', '<bot>'],
    style: 'INTERNVL_ZH',
    sep: '</s>',
    sep2: ' ',
    stopStrings: ['</s>'],
  },
  {
    name: 'vicuna_v1.1',
    systemTemplate: '{system_message}',
    systemMessage:
      "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles: ['USER', 'ASSISTANT'],
    style: 'ADD_COLON_TWO',
    sep: ' ',
    sep2: '</s>',
    stopStrings: ['</s>'],
  },
  {
    name: 'llama-2',
    systemTemplate: '[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n',
    systemMessage: '',
    roles: ['[INST]', '[/INST]'],
    style: 'LLAMA2',
    sep: ' ',
    sep2: ' </s><s>',
    stopStrings: ['</s>'],
  },
];

const BY_NAME = new Map(TEMPLATES.map((t) => [t.name, t]));

export function listTemplates(): string[] {
  return TEMPLATES.map((t) => t.name);
}

/** A template by its official name (config.json `template`). */
export function getTemplate(name: string): ConversationTemplate {
  const t = BY_NAME.get(name);
  if (!t) {
    throw new ConfigError(
      `unknown chat template ${JSON.stringify(name)}; known templates: ${listTemplates().join(', ')}`,
    );
  }
  return t;
}

export interface PromptInput {
  /** Replaces the template's system message (what `chat()` does with `model.system_message`). */
  systemMessage?: string;
  /** Earlier turns, oldest first, as [question, answer]. */
  history?: ReadonlyArray<readonly [string, string]>;
  question: string;
}

/** The prompt text `chat()` builds, ending with the assistant role so that the model answers next. */
export function buildPrompt(template: ConversationTemplate, input: PromptInput): string {
  const systemMessage = input.systemMessage ?? template.systemMessage;
  const messages: Array<[string, string | null]> = [];
  for (const [q, a] of input.history ?? []) {
    messages.push([template.roles[0], q], [template.roles[1], a]);
  }
  messages.push([template.roles[0], input.question], [template.roles[1], null]);

  const systemPrompt = template.systemTemplate.replace('{system_message}', systemMessage);
  const { sep } = template;
  const sep2 = template.sep2 ?? '';
  let ret: string;
  switch (template.style) {
    case 'MPT':
      ret = systemPrompt + sep;
      for (const [role, msg] of messages) ret += msg ? role + msg + sep : role;
      return ret;
    case 'ADD_COLON_TWO':
      return colonTurns(systemPrompt, messages, [sep, sep2]);
    case 'INTERNVL_ZH':
      return colonTurns(systemMessage, messages, [sep2, sep]);
    case 'LLAMA2': {
      const seps = [sep, sep2];
      ret = systemMessage ? systemPrompt : '[INST] ';
      messages.forEach(([, msg], i) => {
        const tag = template.roles[i % 2];
        if (!msg) ret += tag;
        else if (i === 0) ret += `${msg} `;
        else ret += `${tag} ${msg}${seps[i % 2]}`;
      });
      return ret;
    }
  }
}

/** `{prefix}{sep0}{role}: {msg}{sep(i)}…{role}:` — the colon styles, separators alternating per message. */
function colonTurns(prefix: string, messages: ReadonlyArray<[string, string | null]>, seps: [string, string]): string {
  let ret = prefix + seps[0];
  messages.forEach(([role, msg], i) => {
    ret += msg ? `${role}: ${msg}${seps[i % 2]}` : `${role}:`;
  });
  return ret;
}

/**
 * The answer as `chat()` returns it: the decoded text (special tokens skipped) cut at the first stop string, then
 * stripped of surrounding white space.
 */
export function extractResponse(template: ConversationTemplate, decoded: string): string {
  const stop = template.stopStrings[0];
  const cut = stop ? decoded.split(stop)[0] : decoded;
  return cut.trim();
}

export const IMG_START_TOKEN = '<img>';
export const IMG_END_TOKEN = '</img>';
export const IMG_CONTEXT_TOKEN = '<IMG_CONTEXT>';
export const IMAGE_PLACEHOLDER = '<image>';

/**
 * Replace each `<image>` in turn by `<img>` + `<IMG_CONTEXT>`×(tokensPerTile·tiles) + `</img>`, one entry of
 * `tilesPerImage` per placeholder, as `chat()` / `batch_chat()` do with `num_patches_list`.
 */
export function expandImagePlaceholders(prompt: string, tilesPerImage: readonly number[], tokensPerTile = 256): string {
  if (!Number.isInteger(tokensPerTile) || tokensPerTile <= 0) {
    throw new UsageError(`tokensPerTile must be a positive integer, got ${tokensPerTile}`);
  }
  const parts = prompt.split(IMAGE_PLACEHOLDER);
  const found = parts.length - 1;
  if (found !== tilesPerImage.length) {
    throw new UsageError(
      `the prompt has ${found} ${IMAGE_PLACEHOLDER} placeholder(s) but ${tilesPerImage.length} image(s) were given`,
    );
  }
  let out = parts[0];
  tilesPerImage.forEach((tiles, i) => {
    if (!Number.isInteger(tiles) || tiles <= 0) {
      throw new UsageError(`image ${i + 1} has ${tiles} tiles; expected a positive integer`);
    }
    out += IMG_START_TOKEN + IMG_CONTEXT_TOKEN.repeat(tiles * tokensPerTile) + IMG_END_TOKEN + parts[i + 1];
  });
  return out;
}

export interface ChatMessage {
  role: string;
  /** Plain text, or the content list of HF multimodal templates (`{type: 'image'}`, `{type: 'text', text}`). */
  content: string | ReadonlyArray<Record<string, unknown>>;
}

export interface HfChatTemplateOptions {
  addGenerationPrompt: boolean;
  /** Special tokens a template may refer to (`bos_token`, `eos_token`, …), as transformers passes them. */
  specialTokens?: Record<string, string | null | undefined>;
  /** Any other variable the template reads. */
  variables?: Record<string, unknown>;
}

/** Render a tokenizer_config.json `chat_template` the way `apply_chat_template(..., tokenize=False)` does. */
export function renderHfChatTemplate(
  jinjaTemplate: string,
  messages: readonly ChatMessage[],
  options: HfChatTemplateOptions,
): string {
  let template: Template;
  try {
    template = new Template(jinjaTemplate);
  } catch (err) {
    throw new TokenizerError(`chat_template cannot be parsed: ${(err as Error).message}`, { cause: err });
  }
  const context: Record<string, unknown> = {
    ...options.variables,
    ...options.specialTokens,
    messages,
    add_generation_prompt: options.addGenerationPrompt,
  };
  try {
    return template.render(context);
  } catch (err) {
    throw new TokenizerError(`chat_template failed to render: ${(err as Error).message}`, { cause: err });
  }
}
