/**
 * Text side of InternVL-C/G (CLIP-style) evaluation: the `InternVLTokenizer` of the official clip_benchmark code
 * (a LlamaTokenizer forced to add EOS, 'summarize:' glued in front, fixed length 80) and the retrieval datasets'
 * `pre_caption`.
 */
import { UsageError } from '../../core/errors.js';
import { PY_WHITESPACE } from '../../core/python.js';
import type { Tokenizer } from './tokenizer.js';

export interface ClipTextOptions {
  /** Sequence length every row is truncated or padded to. Default 80. */
  maxLength?: number;
  /** Glued to the text with no space in between. Default 'summarize:'. */
  prefix?: string;
  /** Prepend BOS. Default: the tokenizer's own `addBosToken` setting, else true. */
  addBos?: boolean;
  /** Append EOS. Default true: the official code sets add_eos_token = True. */
  addEos?: boolean;
  /**
   * Id used for padding. Default: the unk id, else 0. The official code sets pad_token = ' ', a string that is no
   * piece, which the slow LlamaTokenizer resolves to the unk id (0 for the LLaMA vocabularies).
   */
  padId?: number;
}

export interface ClipTextBatch {
  /** [texts, maxLength] token ids, right-padded. */
  ids: number[][];
  /** [texts, maxLength]: 1 for real tokens (BOS, text, EOS), 0 for padding. */
  attentionMask: number[][];
}

/**
 * Tokenizes texts as `InternVLTokenizer(texts)` does: prefix + text, truncate the text so that BOS + text + EOS fit
 * `maxLength` (HF adds the special tokens after truncating, so EOS always survives), then right-pad.
 */
export function encodeClipTexts(
  tokenizer: Tokenizer & { readonly addBosToken?: boolean },
  texts: readonly string[],
  options: ClipTextOptions = {},
): ClipTextBatch {
  const maxLength = options.maxLength ?? 80;
  const prefix = options.prefix ?? 'summarize:';
  const addBos = options.addBos ?? tokenizer.addBosToken ?? true;
  const addEos = options.addEos ?? true;
  const padId = options.padId ?? tokenizer.unkTokenId ?? 0;
  if (!Number.isInteger(maxLength) || maxLength < 1)
    throw new UsageError(`encodeClipTexts: maxLength must be a positive integer, got ${maxLength}`);
  const bos = addBos ? tokenizer.bosTokenId : null;
  const eos = addEos ? tokenizer.eosTokenId : null;
  if (addBos && bos === null) throw new UsageError('encodeClipTexts: addBos is set but the tokenizer has no BOS token');
  if (addEos && eos === null) throw new UsageError('encodeClipTexts: addEos is set but the tokenizer has no EOS token');
  const specials = (bos !== null ? 1 : 0) + (eos !== null ? 1 : 0);
  if (specials > maxLength) throw new UsageError(`encodeClipTexts: maxLength ${maxLength} leaves no room for BOS/EOS`);

  const ids: number[][] = [];
  const attentionMask: number[][] = [];
  for (const text of texts) {
    const content = tokenizer.encode(prefix + text, { addSpecialTokens: false }).slice(0, maxLength - specials);
    const row: number[] = [];
    if (bos !== null) row.push(bos);
    for (const id of content) row.push(id);
    if (eos !== null) row.push(eos);
    const real = row.length;
    while (row.length < maxLength) row.push(padId);
    ids.push(row);
    attentionMask.push(row.map((_, i) => (i < real ? 1 : 0)));
  }
  return { ids, attentionMask };
}

/** Python's `\s` for str patterns (str.isspace characters); JS `\s` differs on U+001C–U+001F, U+0085 and U+FEFF. */
const PUNCTUATION_RE = /[.!"()*#:;~]/g;
const WHITESPACE_RUN_RE = new RegExp(`[${PY_WHITESPACE}]{2,}`, 'g');

/**
 * The retrieval datasets' caption cleaning (clip_benchmark `pre_caption`): lowercase, `.!"()*#:;~` become spaces,
 * runs of two or more whitespace characters become one space, trailing newlines and surrounding spaces go, and at
 * most `maxWords` space-separated words are kept.
 */
export function preCaption(caption: string, maxWords = 50): string {
  let s = caption.toLowerCase().replace(PUNCTUATION_RE, ' ');
  s = s.replace(WHITESPACE_RUN_RE, ' ');
  s = s.replace(/\n+$/, '');
  s = s.replace(/^ +| +$/g, '');
  const words = s.split(' ');
  return words.length > maxWords ? words.slice(0, maxWords).join(' ') : s;
}
