/**
 * Byte-level BPE (the GPT-2 / Qwen2 family) in pure TypeScript, built to give the same ids as Hugging Face
 * `tokenizers` (which is what transformers ≥ 5 uses for `Qwen2Tokenizer`), over a
 * format-independent `ByteLevelBpeSpec` (bpe_loaders.ts builds one from a `tokenizer.json` or the slow-tokenizer
 * files).
 *
 * Encoding follows the HF pipeline step by step:
 * 1. added tokens with `normalized: false` are cut out of the raw text (leftmost-longest exact match, honouring
 *    `single_word`, `lstrip`, `rstrip`);
 * 2. every remaining piece is normalized (NFC for Qwen2) and the `normalized: true` added tokens are cut out of it;
 * 3. the pre-tokenizer splits what is left (Qwen2: one regex; GPT-2: the ByteLevel regex);
 * 4. each word becomes its UTF-8 bytes written with the GPT-2 byte→char table, and BPE merges are applied lowest
 *    rank first (leftmost on ties), exactly the order of the HF priority queue.
 * Decoding maps every token's chars back to bytes (a token with a char outside the table contributes its raw UTF-8,
 * as HF's ByteLevel decoder does) and decodes the whole byte string once, invalid sequences → U+FFFD.
 */
import { TokenizerError } from '../../core/errors.js';
import {
  compilePattern,
  escapeLiteral,
  GPT2_PRETOKENIZE_PATTERN,
  lastCodePoint,
  whiteSpaceRunEnd,
  whiteSpaceRunStart,
  WORD_CHAR,
} from './bpe_regex.js';
import { cleanUpTokenization } from './cleanup.js';
import { PriorityQueue } from './priority_queue.js';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './tokenizer.js';

// ---------------------------------------------------------------------------------------------------------------
// Public types

export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
  /** Matched against the normalized text (true) or the raw text (false). */
  normalized: boolean;
}

export type SplitBehavior = 'Isolated' | 'Removed' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';

/** A pre-tokenizer step that runs before the ByteLevel step, on the normalized text. */
export type PreTokenizerStep =
  | { type: 'split'; regex: RegExp; behavior: SplitBehavior; invert: boolean }
  | { type: 'digits'; individual: boolean };

/** Everything the tokenizer needs, independent of the file format it came from. */
export interface ByteLevelBpeSpec {
  /** The file (or folder) named in error messages. */
  source: string;
  /** The file named when a merge is inconsistent with the vocabulary (default: `source`). */
  mergesSource?: string;
  vocab: Map<string, number>;
  /** In rank order (first = merged first). */
  merges: ReadonlyArray<readonly [string, string]>;
  addedTokens: readonly AddedToken[];
  normalizer: ((text: string) => string) | null;
  preTokenizer: readonly PreTokenizerStep[];
  byteLevel: { addPrefixSpace: boolean; useRegex: boolean };
  /** `model.ignore_merges` (Llama 3): a word that is already a vocab entry is not merged. */
  ignoreMerges: boolean;
  bosToken: string | null;
  eosToken: string | null;
  padToken: string | null;
  unkToken: string | null;
  /**
   * What `addSpecialTokens` adds: the ids of a tokenizer.json post-processor when there is one, else the BOS / EOS
   * as `add_bos_token` / `add_eos_token` say.
   */
  postProcessor: { prefix: readonly number[]; suffix: readonly number[] } | null;
  addBosToken: boolean;
  addEosToken: boolean;
  cleanUpTokenizationSpaces: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// GPT-2 byte ↔ char table

const BYTE_TO_CHAR: string[] = [];
/** Indexed by char code (all table chars are < 512); -1 = not a byte char. */
const CHAR_TO_BYTE = new Int16Array(512).fill(-1);
{
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const code = printable ? b : 256 + extra++;
    BYTE_TO_CHAR[b] = String.fromCharCode(code);
    CHAR_TO_BYTE[code] = b;
  }
}

/** UTF-8 of a JS string; lone surrogates become U+FFFD like TextEncoder does. */
function utf8Bytes(s: string, out: number[]): void {
  for (let i = 0; i < s.length; i++) {
    let cp = s.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdfff) {
      const lo = s.charCodeAt(i + 1);
      if (cp <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      } else {
        cp = 0xfffd;
      }
    }
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 63));
    else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
    else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
  }
}

/** What HF's ByteLevel decoder turns one token into: its table bytes, or its raw UTF-8 if a char is not in the table. */
function tokenBytes(token: string): Uint8Array {
  const bytes = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const code = token.charCodeAt(i);
    const b = code < 512 ? CHAR_TO_BYTE[code] : -1;
    if (b < 0) {
      const raw: number[] = [];
      utf8Bytes(token, raw);
      return Uint8Array.from(raw);
    }
    bytes[i] = b;
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Min-heap of merge candidates packed as rank·2^32 + position, so that plain number order is HF's (rank, pos).

const POS_SPAN = 2 ** 32;

// ---------------------------------------------------------------------------------------------------------------
// The tokenizer

interface Segment {
  text: string;
  id?: number;
}

interface AddedMatcher {
  regex: RegExp;
  byContent: Map<string, AddedToken>;
}

const CACHE_LIMIT = 50_000;

export class ByteLevelBpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  readonly unkTokenId: number | null;
  readonly addedTokens: readonly AddedToken[];

  private readonly vocab: Map<string, number>;
  private readonly idToPiece: (string | undefined)[];
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly addedById = new Map<number, AddedToken>();
  private readonly rawMatcher: AddedMatcher | null;
  private readonly normalizedMatcher: AddedMatcher | null;
  private readonly normalizer: ((text: string) => string) | null;
  private readonly preTokenizer: readonly PreTokenizerStep[];
  private readonly byteLevelRegex: RegExp | null;
  private readonly addPrefixSpace: boolean;
  private readonly ignoreMerges: boolean;
  private readonly prefixIds: readonly number[];
  private readonly suffixIds: readonly number[];
  private readonly cleanUp: boolean;
  /** pair key (left·keyBase + right) → merge rank */
  private readonly mergeRank = new Map<number, number>();
  /** rank → id of the merged token */
  private readonly mergeResult: Int32Array;
  private readonly keyBase: number;
  /** byte → id of its single-char token, -1 if the vocab lacks it */
  private readonly byteIds = new Int32Array(256);
  private readonly cache = new Map<string, readonly number[]>();
  private readonly bytesById: (Uint8Array | undefined)[] = [];
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(spec: ByteLevelBpeSpec) {
    this.vocab = spec.vocab;
    this.normalizer = spec.normalizer;
    this.preTokenizer = spec.preTokenizer;
    this.byteLevelRegex = spec.byteLevel.useRegex ? compilePattern(GPT2_PRETOKENIZE_PATTERN, spec.source) : null;
    this.addPrefixSpace = spec.byteLevel.addPrefixSpace;
    this.ignoreMerges = spec.ignoreMerges;
    this.cleanUp = spec.cleanUpTokenizationSpaces;

    let maxId = -1;
    this.idToPiece = [];
    for (const [piece, id] of spec.vocab) {
      this.idToPiece[id] = piece;
      if (id > maxId) maxId = id;
    }
    this.keyBase = maxId + 1;

    for (let b = 0; b < 256; b++) this.byteIds[b] = spec.vocab.get(BYTE_TO_CHAR[b]) ?? -1;

    this.mergeResult = new Int32Array(spec.merges.length);
    const mergesSource = spec.mergesSource ?? spec.source;
    spec.merges.forEach(([a, b], rank) => {
      const ia = spec.vocab.get(a);
      const ib = spec.vocab.get(b);
      const merged = spec.vocab.get(a + b);
      if (ia === undefined || ib === undefined) {
        throw new TokenizerError(
          `${mergesSource}: merge ${rank + 1} ("${a} ${b}") uses a token that is not in the vocabulary`,
        );
      }
      if (merged === undefined) {
        throw new TokenizerError(
          `${mergesSource}: merge ${rank + 1} ("${a} ${b}") produces "${a + b}", which is not in the vocabulary`,
        );
      }
      this.mergeRank.set(ia * this.keyBase + ib, rank);
      this.mergeResult[rank] = merged;
    });

    const added = [...spec.addedTokens].sort((x, y) => x.id - y.id);
    for (const t of added) {
      if (!Number.isInteger(t.id) || t.id < 0) {
        throw new TokenizerError(`${spec.source}: added token ${JSON.stringify(t.content)} has invalid id ${t.id}`);
      }
      if (t.content === '') throw new TokenizerError(`${spec.source}: added token ${t.id} has empty content`);
      this.addedByContent.set(t.content, t);
      this.addedById.set(t.id, t);
      if (t.id > maxId) maxId = t.id;
    }
    this.addedTokens = added;
    this.vocabSize = maxId + 1;
    this.rawMatcher = buildMatcher(
      added.filter((t) => !t.normalized),
      (s) => s,
    );
    this.normalizedMatcher = buildMatcher(
      added.filter((t) => t.normalized),
      this.normalizer ?? ((s) => s),
    );

    const idOf = (token: string | null, what: string): number | null => {
      if (token === null) return null;
      const id = this.tokenToId(token);
      if (id === undefined) {
        throw new TokenizerError(
          `${spec.source}: ${what} ${JSON.stringify(token)} is neither in the vocabulary nor an added token`,
        );
      }
      return id;
    };
    this.bosTokenId = idOf(spec.bosToken, 'bos_token');
    this.eosTokenId = idOf(spec.eosToken, 'eos_token');
    this.padTokenId = idOf(spec.padToken, 'pad_token');
    this.unkTokenId = idOf(spec.unkToken, 'unk_token');
    if (spec.postProcessor) {
      this.prefixIds = spec.postProcessor.prefix;
      this.suffixIds = spec.postProcessor.suffix;
    } else {
      this.prefixIds = spec.addBosToken && this.bosTokenId !== null ? [this.bosTokenId] : [];
      this.suffixIds = spec.addEosToken && this.eosTokenId !== null ? [this.eosTokenId] : [];
    }
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.addedById.get(id)?.content ?? this.idToPiece[id];
  }

  /** Whether `id` is an added token flagged special (what `skipSpecialTokens` drops). */
  isSpecialId(id: number): boolean {
    return this.addedById.get(id)?.special ?? false;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const addSpecial = options.addSpecialTokens ?? true;
    const ids: number[] = addSpecial ? [...this.prefixIds] : [];
    for (const raw of splitAdded(text, this.rawMatcher)) {
      if (raw.id !== undefined) {
        ids.push(raw.id);
        continue;
      }
      const normalized = this.normalizer ? this.normalizer(raw.text) : raw.text;
      for (const seg of splitAdded(normalized, this.normalizedMatcher)) {
        if (seg.id !== undefined) {
          ids.push(seg.id);
          continue;
        }
        for (const word of this.preTokenize(seg.text)) {
          for (const id of this.bpe(word)) ids.push(id);
        }
      }
    }
    if (addSpecial) for (const id of this.suffixIds) ids.push(id);
    return ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    let buf = new Uint8Array(256);
    let len = 0;
    for (const id of ids) {
      if (skip && this.isSpecialId(id)) continue;
      const bytes = this.tokenBytesOf(id);
      // Unknown ids are dropped, as HF's decode does.
      if (bytes === undefined) continue;
      if (len + bytes.length > buf.length) {
        const grown = new Uint8Array(Math.max(buf.length * 2, len + bytes.length));
        grown.set(buf.subarray(0, len));
        buf = grown;
      }
      buf.set(bytes, len);
      len += bytes.length;
    }
    let text = this.decoder.decode(buf.subarray(0, len));
    if (this.cleanUp) text = cleanUpTokenization(text);
    return text;
  }

  private tokenBytesOf(id: number): Uint8Array | undefined {
    if (!Number.isInteger(id) || id < 0) return undefined;
    let bytes = this.bytesById[id];
    if (bytes === undefined) {
      const token = this.idToToken(id);
      if (token === undefined) return undefined;
      bytes = tokenBytes(token);
      this.bytesById[id] = bytes;
    }
    return bytes;
  }

  private preTokenize(text: string): string[] {
    let pieces = text === '' ? [] : [text];
    for (const step of this.preTokenizer) {
      const next: string[] = [];
      for (const p of pieces) {
        if (step.type === 'split') splitByRegex(p, step.regex, step.behavior, step.invert, next);
        else
          splitByRegex(p, step.individual ? DIGIT : DIGITS, step.individual ? 'Isolated' : 'Contiguous', false, next);
      }
      pieces = next;
    }
    if (this.addPrefixSpace) pieces = pieces.map((p) => (p.startsWith(' ') ? p : ` ${p}`));
    if (this.byteLevelRegex) {
      const next: string[] = [];
      for (const p of pieces) splitByRegex(p, this.byteLevelRegex, 'Isolated', false, next);
      pieces = next;
    }
    return pieces;
  }

  /** BPE of one pre-tokenized word (given as text, before the byte mapping). */
  private bpe(word: string): readonly number[] {
    const cached = this.cache.get(word);
    if (cached !== undefined) return cached;

    const bytes: number[] = [];
    utf8Bytes(word, bytes);
    let result: number[];
    const whole = this.ignoreMerges ? this.vocab.get(bytes.map((b) => BYTE_TO_CHAR[b]).join('')) : undefined;
    if (whole !== undefined) {
      result = [whole];
    } else {
      const sym: number[] = [];
      for (const b of bytes) {
        const id = this.byteIds[b];
        // A byte missing from the vocab becomes unk, or is dropped when there is none (HF BPE without unk_token).
        if (id >= 0) sym.push(id);
        else if (this.unkTokenId !== null) sym.push(this.unkTokenId);
      }
      result = sym.length < 2 ? sym : this.merge(sym);
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, result);
    return result;
  }

  private merge(sym: number[]): number[] {
    const n = sym.length;
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const heap = new PriorityQueue<number>((a, b) => a < b);
    const { mergeRank, mergeResult, keyBase } = this;
    for (let i = 0; i + 1 < n; i++) {
      const rank = mergeRank.get(sym[i] * keyBase + sym[i + 1]);
      if (rank !== undefined) heap.push(rank * POS_SPAN + i);
    }
    while (heap.size > 0) {
      const top = heap.pop();
      const pos = top % POS_SPAN;
      const rank = (top - pos) / POS_SPAN;
      if (sym[pos] < 0) continue;
      const right = next[pos];
      if (right < 0) continue;
      // Stale entry: the pair at `pos` has changed since it was queued.
      const current = mergeRank.get(sym[pos] * keyBase + sym[right]);
      if (current === undefined || mergeResult[current] !== mergeResult[rank]) continue;

      sym[pos] = mergeResult[rank];
      sym[right] = -1;
      const after = next[right];
      next[pos] = after;
      if (after >= 0) prev[after] = pos;

      const before = prev[pos];
      if (before >= 0) {
        const r = mergeRank.get(sym[before] * keyBase + sym[pos]);
        if (r !== undefined) heap.push(r * POS_SPAN + before);
      }
      if (after >= 0) {
        const r = mergeRank.get(sym[pos] * keyBase + sym[after]);
        if (r !== undefined) heap.push(r * POS_SPAN + pos);
      }
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }
}

const DIGIT = /\p{N}/gu;
const DIGITS = /\p{N}+/gu;

function buildMatcher(tokens: readonly AddedToken[], normalize: (s: string) => string): AddedMatcher | null {
  if (tokens.length === 0) return null;
  const byContent = new Map<string, AddedToken>();
  for (const t of tokens) {
    const key = normalize(t.content);
    if (key !== '' && !byContent.has(key)) byContent.set(key, t);
  }
  if (byContent.size === 0) return null;
  // Longest first makes JS alternation leftmost-longest, like HF's Aho-Corasick (MatchKind::LeftmostLongest).
  const keys = [...byContent.keys()].sort((a, b) => b.length - a.length);
  return { regex: new RegExp(keys.map(escapeLiteral).join('|'), 'g'), byContent };
}

/** HF `AddedVocabulary::find_matches` + `split_with_indices`. */
function splitAdded(text: string, matcher: AddedMatcher | null): Segment[] {
  if (matcher === null || text === '') return text === '' ? [] : [{ text }];
  const out: Segment[] = [];
  const re = matcher.regex;
  re.lastIndex = 0;
  let startOffset = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const token = matcher.byContent.get(m[0])!;
    let start = m.index;
    let stop = start + m[0].length;
    if (token.singleWord) {
      const before = lastCodePoint(text, start);
      const after = stop < text.length ? String.fromCodePoint(text.codePointAt(stop)!) : '';
      const startOk = start === 0 || !WORD_CHAR.test(before);
      const stopOk = stop === text.length || !WORD_CHAR.test(after);
      if (!startOk || !stopOk) continue;
    }
    if (token.lstrip) start = Math.max(whiteSpaceRunStart(text, start), startOffset);
    if (token.rstrip) {
      stop = whiteSpaceRunEnd(text, stop);
      re.lastIndex = stop;
    }
    if (startOffset < start) out.push({ text: text.slice(startOffset, start) });
    out.push({ text: text.slice(start, stop), id: token.id });
    startOffset = stop;
  }
  if (startOffset < text.length) out.push({ text: text.slice(startOffset) });
  return out;
}

/** HF `NormalizedString::split` with a regex pattern; empty pieces are dropped as HF drops them. */
function splitByRegex(text: string, regex: RegExp, behavior: SplitBehavior, invert: boolean, out: string[]): void {
  const parts: Array<[number, number, boolean]> = [];
  let last = 0;
  regex.lastIndex = 0;
  for (let m = regex.exec(text); m !== null; m = regex.exec(text)) {
    const s = m.index;
    const e = s + m[0].length;
    if (e === s) {
      // Skip empty matches one code point at a time, as find_iter does.
      regex.lastIndex = s + (text.codePointAt(s)! > 0xffff ? 2 : 1);
      continue;
    }
    if (last < s) parts.push([last, s, invert]);
    parts.push([s, e, !invert]);
    last = e;
  }
  if (last < text.length) parts.push([last, text.length, invert]);

  let spans: Array<[number, number]>;
  switch (behavior) {
    case 'Isolated':
      spans = parts.map(([s, e]) => [s, e]);
      break;
    case 'Removed':
      spans = parts.filter((p) => !p[2]).map(([s, e]) => [s, e]);
      break;
    case 'MergedWithPrevious': {
      spans = [];
      let prevMatch = false;
      for (const [s, e, isMatch] of parts) {
        if (isMatch && !prevMatch && spans.length > 0) spans[spans.length - 1][1] = e;
        else spans.push([s, e]);
        prevMatch = isMatch;
      }
      break;
    }
    case 'MergedWithNext': {
      spans = [];
      let prevMatch = false;
      for (let k = parts.length - 1; k >= 0; k--) {
        const [s, e, isMatch] = parts[k];
        if (isMatch && !prevMatch && spans.length > 0) spans[spans.length - 1][0] = s;
        else spans.push([s, e]);
        prevMatch = isMatch;
      }
      spans.reverse();
      break;
    }
    case 'Contiguous': {
      spans = [];
      let prevMatch = false;
      for (const [s, e, isMatch] of parts) {
        if (isMatch && prevMatch && spans.length > 0) spans[spans.length - 1][1] = e;
        else spans.push([s, e]);
        prevMatch = isMatch;
      }
      break;
    }
  }
  for (const [s, e] of spans) if (e > s) out.push(text.slice(s, e));
}
