/**
 * Byte-level BPE (the GPT-2 / Qwen2 family) in pure TypeScript, built to give the same ids as Hugging Face
 * `tokenizers` (which is what transformers ≥ 5 uses for `Qwen2Tokenizer`), from either a `tokenizer.json` or the
 * slow-tokenizer files (`vocab.json` + `merges.txt` + `tokenizer_config.json` + `added_tokens.json` +
 * `special_tokens_map.json`).
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
 *
 * The regexes of tokenizers are Oniguruma patterns; they are translated to JS (`u` flag): `\s` becomes
 * `\p{White_Space}` (JS `\s` differs on U+0085 and U+FEFF) and `(?i:…)` groups, which Node 20 cannot parse, get
 * their letters spelled out in both cases plus the non-ASCII chars that case-fold onto them (ſ→s, K→k).
 */
import { errorCode, files } from '../../core/io.js';
import { readJsonFile, readOptionalJsonObject } from '../../core/json.js';
import { TokenizerError } from '../../core/errors.js';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './tokenizer.js';
import { PriorityQueue } from './priority_queue.js';
import { cleanUpTokenization } from './cleanup.js';

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
// Regexes

export const QWEN2_PRETOKENIZE_PATTERN = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
/** The pattern of HF's ByteLevel pre-tokenizer with `use_regex: true` (GPT-2). */
export const GPT2_PRETOKENIZE_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;

/** Rust regex `\w` (used by HF for `single_word`), as the inside of a JS class. */
const WORD_CLASS_BODY = String.raw`\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}`;
/** Chars outside ASCII that Unicode simple case folding maps onto an ASCII letter. */
const EXTRA_CASE_FOLDS: Record<string, string> = { k: '\u212A', s: '\u017F' };
const JS_SYNTAX_CHARS = new Set(['^', '$', '\\', '.', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '/']);

/**
 * Oniguruma (tokenizers) → JS `u`-mode regex source. Covers what tokenizer.json files use in practice; anything it
 * cannot express (nested classes, case-insensitive ranges, a global `(?i)`) is refused rather than guessed.
 */
export function translateOnigurumaPattern(src: string): string {
  let out = '';
  let inClass = false;
  let ci = false;
  const groups: boolean[] = [];
  let i = 0;
  const unsupported = (what: string): never => {
    throw new Error(`unsupported regex construct ${what} at offset ${i} in ${JSON.stringify(src)}`);
  };
  while (i < src.length) {
    const c = src[i];
    if (c === '\\') {
      const n = src[i + 1];
      if (n === undefined) unsupported('trailing backslash');
      i += 2;
      switch (n) {
        case 's':
          out += String.raw`\p{White_Space}`;
          continue;
        case 'S':
          out += String.raw`\P{White_Space}`;
          continue;
        case 'd':
          out += String.raw`\p{Nd}`;
          continue;
        case 'D':
          out += String.raw`\P{Nd}`;
          continue;
        case 'w':
          out += inClass ? WORD_CLASS_BODY : `[${WORD_CLASS_BODY}]`;
          continue;
        case 'W':
          if (inClass) unsupported('\\W inside a class');
          out += `[^${WORD_CLASS_BODY}]`;
          continue;
        case 'p':
        case 'P': {
          if (src[i] === '{') {
            const end = src.indexOf('}', i);
            if (end < 0) unsupported('unterminated \\p{');
            const name = src.slice(i + 1, end);
            // Oniguruma accepts `\p{^L}` for negation.
            if (name.startsWith('^')) out += `\\${n === 'p' ? 'P' : 'p'}{${name.slice(1)}}`;
            else out += `\\${n}{${name}}`;
            i = end + 1;
          } else {
            out += `\\${n}{${src[i]}}`;
            i += 1;
          }
          continue;
        }
        default:
          if (/[A-Za-z0-9]/.test(n)) out += `\\${n}`;
          else if (JS_SYNTAX_CHARS.has(n) || (inClass && n === '-')) out += `\\${n}`;
          // u-mode refuses identity escapes of other punctuation: write the char itself.
          else out += n;
          continue;
      }
    }
    if (inClass) {
      if (c === '[') unsupported('nested character class');
      if (c === ']') inClass = false;
      if (ci && /[A-Za-z]/.test(c)) {
        if (src[i - 1] === '-' || src[i + 1] === '-') unsupported('case-insensitive range');
        out += c.toLowerCase() + c.toUpperCase() + (EXTRA_CASE_FOLDS[c.toLowerCase()] ?? '');
      } else {
        out += c;
      }
      i += 1;
      continue;
    }
    if (c === '[') {
      inClass = true;
      out += c;
      i += 1;
      if (src[i] === '^') {
        out += '^';
        i += 1;
      }
      // A `]` right after `[` or `[^` is a literal in Oniguruma.
      if (src[i] === ']') {
        out += '\\]';
        i += 1;
      }
      continue;
    }
    if (c === '(') {
      if (src.startsWith('(?i:', i)) {
        groups.push(ci);
        ci = true;
        out += '(?:';
        i += 4;
        continue;
      }
      if (/^\(\?[imx-]+[:)]/.test(src.slice(i, i + 8))) unsupported('inline option group');
      groups.push(ci);
      out += c;
      i += 1;
      continue;
    }
    if (c === ')') {
      ci = groups.pop() ?? false;
      out += c;
      i += 1;
      continue;
    }
    if (ci && /[A-Za-z]/.test(c)) {
      out += `[${c.toLowerCase()}${c.toUpperCase()}${EXTRA_CASE_FOLDS[c.toLowerCase()] ?? ''}]`;
      i += 1;
      continue;
    }
    out += c;
    i += 1;
  }
  if (inClass) unsupported('unterminated class');
  return out;
}

function compilePattern(pattern: string, source: string): RegExp {
  try {
    return new RegExp(translateOnigurumaPattern(pattern), 'gu');
  } catch (err) {
    throw new TokenizerError(`${source}: cannot use the pre-tokenizer regex: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function escapeLiteral(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}

const WHITE_SPACE = /^\p{White_Space}$/u;
const WORD_CHAR = new RegExp(`^[${WORD_CLASS_BODY}]$`, 'u');

function lastCodePoint(s: string, end: number): string {
  if (end <= 0) return '';
  const lo = s.charCodeAt(end - 1);
  if (lo >= 0xdc00 && lo <= 0xdfff && end >= 2) {
    const hi = s.charCodeAt(end - 2);
    if (hi >= 0xd800 && hi <= 0xdbff) return s.slice(end - 2, end);
  }
  return s[end - 1];
}

/** Start of the run of white space that ends at `end` (Rust `\s*$` on `s[..end]`). */
function whiteSpaceRunStart(s: string, end: number): number {
  let j = end;
  for (;;) {
    const ch = lastCodePoint(s, j);
    if (ch === '' || !WHITE_SPACE.test(ch)) return j;
    j -= ch.length;
  }
}

/** End of the run of white space that starts at `start` (Rust `^\s*` on `s[start..]`). */
function whiteSpaceRunEnd(s: string, start: number): number {
  let j = start;
  while (j < s.length) {
    const cp = s.codePointAt(j)!;
    const ch = String.fromCodePoint(cp);
    if (!WHITE_SPACE.test(ch)) break;
    j += ch.length;
  }
  return j;
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

// ---------------------------------------------------------------------------------------------------------------
// Loading

type Json = unknown;

function isRecord(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

async function exists(file: string): Promise<boolean> {
  return (await files.get()).isFile(file);
}

async function readText(file: string): Promise<string> {
  try {
    return await (await files.get()).readText(file);
  } catch (err) {
    const code = errorCode(err);
    throw new TokenizerError(`${file}: cannot read the file${code ? ` (${code})` : ''}`, { cause: err });
  }
}

function readJson(file: string): Promise<Json> {
  return readJsonFile(file, { error: TokenizerError });
}

function readOptionalJson(file: string): Promise<Record<string, Json> | null> {
  return readOptionalJsonObject(file, { error: TokenizerError });
}

function parseVocab(v: Json, source: string): Map<string, number> {
  if (!isRecord(v)) throw new TokenizerError(`${source}: the vocabulary must be a JSON object of token → id`);
  const vocab = new Map<string, number>();
  for (const key in v) {
    const id = v[key];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new TokenizerError(
        `${source}: vocabulary entry ${JSON.stringify(key)} has invalid id ${JSON.stringify(id)}`,
      );
    }
    vocab.set(key, id);
  }
  if (vocab.size === 0) throw new TokenizerError(`${source}: the vocabulary is empty`);
  return vocab;
}

/** merges.txt as the slow Qwen2/GPT-2 tokenizers read it: a `#version` first line is skipped, blank lines too. */
export function parseMergesTxt(text: string, source: string): Array<[string, string]> {
  const merges: Array<[string, string]> = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(/\s+/);
    if (parts.length !== 2) {
      throw new TokenizerError(
        `${source}: line ${i + 1} is not a merge "left right": ${JSON.stringify(line.slice(0, 80))}`,
      );
    }
    merges.push([parts[0], parts[1]]);
  }
  return merges;
}

function parseJsonMerges(v: Json, source: string): Array<[string, string]> {
  if (!Array.isArray(v)) throw new TokenizerError(`${source}: model.merges must be an array`);
  return v.map((m, i) => {
    if (typeof m === 'string') {
      const sp = m.indexOf(' ');
      if (sp <= 0 || sp === m.length - 1 || m.indexOf(' ', sp + 1) >= 0) {
        throw new TokenizerError(`${source}: model.merges[${i}] is not "left right": ${JSON.stringify(m)}`);
      }
      return [m.slice(0, sp), m.slice(sp + 1)];
    }
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
    throw new TokenizerError(`${source}: model.merges[${i}] must be "left right" or ["left", "right"]`);
  });
}

/** A special-token field of a config: a string, an AddedToken-like object, or null. */
function tokenContent(v: Json): string | null {
  if (typeof v === 'string') return v;
  if (isRecord(v) && typeof v.content === 'string') return v.content;
  return null;
}

function parseAddedToken(v: Json, idFallback: number | undefined, source: string, where: string): AddedToken {
  if (typeof v === 'string') {
    if (idFallback === undefined) throw new TokenizerError(`${source}: ${where} has no id`);
    return {
      id: idFallback,
      content: v,
      special: false,
      lstrip: false,
      rstrip: false,
      singleWord: false,
      normalized: true,
    };
  }
  if (!isRecord(v) || typeof v.content !== 'string') {
    throw new TokenizerError(`${source}: ${where} must be an object with a "content" string`);
  }
  const id = typeof v.id === 'number' ? v.id : idFallback;
  if (id === undefined || !Number.isInteger(id) || id < 0)
    throw new TokenizerError(`${source}: ${where} has no valid id`);
  const special = v.special === true;
  return {
    id,
    content: v.content,
    special,
    lstrip: v.lstrip === true,
    rstrip: v.rstrip === true,
    singleWord: v.single_word === true,
    // HF's default: special tokens match the raw text, others the normalized text.
    normalized: typeof v.normalized === 'boolean' ? v.normalized : !special,
  };
}

function parseNormalizer(v: Json, source: string): ((s: string) => string) | null {
  if (v === null || v === undefined) return null;
  if (!isRecord(v)) throw new TokenizerError(`${source}: normalizer must be an object or null`);
  switch (v.type) {
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD': {
      const form = v.type;
      return (s) => s.normalize(form);
    }
    case 'Lowercase':
      return (s) => s.toLowerCase();
    case 'Sequence': {
      if (!Array.isArray(v.normalizers))
        throw new TokenizerError(`${source}: normalizer Sequence without "normalizers"`);
      const fns = v.normalizers
        .map((n) => parseNormalizer(n, source))
        .filter((f): f is (s: string) => string => f !== null);
      return fns.length === 0 ? null : (s) => fns.reduce((acc, f) => f(acc), s);
    }
    default:
      throw new TokenizerError(
        `${source}: normalizer type ${JSON.stringify(v.type)} is not supported by the byte-level BPE tokenizer`,
      );
  }
}

const SPLIT_BEHAVIORS = new Set<SplitBehavior>([
  'Isolated',
  'Removed',
  'MergedWithPrevious',
  'MergedWithNext',
  'Contiguous',
]);

function parsePreTokenizer(
  v: Json,
  source: string,
): { steps: PreTokenizerStep[]; byteLevel: { addPrefixSpace: boolean; useRegex: boolean } } {
  const flat: Record<string, Json>[] = [];
  const flatten = (p: Json): void => {
    if (!isRecord(p)) throw new TokenizerError(`${source}: pre_tokenizer must be an object`);
    if (p.type === 'Sequence') {
      if (!Array.isArray(p.pretokenizers))
        throw new TokenizerError(`${source}: pre_tokenizer Sequence without "pretokenizers"`);
      p.pretokenizers.forEach(flatten);
    } else {
      flat.push(p);
    }
  };
  if (v === null || v === undefined) {
    throw new TokenizerError(`${source}: no pre_tokenizer; a byte-level BPE needs a ByteLevel pre-tokenizer`);
  }
  flatten(v);
  const last = flat[flat.length - 1];
  if (last?.type !== 'ByteLevel') {
    throw new TokenizerError(`${source}: the pre_tokenizer must end with ByteLevel (this is a byte-level BPE loader)`);
  }
  const steps: PreTokenizerStep[] = [];
  for (const p of flat.slice(0, -1)) {
    if (p.type === 'Split') {
      const pat = p.pattern;
      let regex: RegExp;
      if (isRecord(pat) && typeof pat.Regex === 'string') regex = compilePattern(pat.Regex, source);
      else if (isRecord(pat) && typeof pat.String === 'string') regex = new RegExp(escapeLiteral(pat.String), 'gu');
      else throw new TokenizerError(`${source}: Split pre-tokenizer needs pattern.Regex or pattern.String`);
      const behavior = p.behavior as SplitBehavior;
      if (!SPLIT_BEHAVIORS.has(behavior))
        throw new TokenizerError(`${source}: Split behavior ${JSON.stringify(p.behavior)} is not supported`);
      steps.push({ type: 'split', regex, behavior, invert: p.invert === true });
    } else if (p.type === 'Digits') {
      steps.push({ type: 'digits', individual: p.individual_digits === true });
    } else {
      throw new TokenizerError(
        `${source}: pre_tokenizer type ${JSON.stringify(p.type)} is not supported by the byte-level BPE tokenizer`,
      );
    }
  }
  return {
    steps,
    byteLevel: { addPrefixSpace: last.add_prefix_space === true, useRegex: last.use_regex !== false },
  };
}

function checkDecoder(v: Json, source: string): void {
  const ok = (d: Json): boolean =>
    isRecord(d) &&
    (d.type === 'ByteLevel' ||
      (d.type === 'Sequence' && Array.isArray(d.decoders) && d.decoders.length > 0 && d.decoders.every(ok)));
  if (!ok(v)) throw new TokenizerError(`${source}: the decoder must be ByteLevel (this is a byte-level BPE loader)`);
}

/** Ids the post-processor puts around a single sequence; only ByteLevel and TemplateProcessing are understood. */
function parsePostProcessor(v: Json, source: string): { prefix: number[]; suffix: number[] } | null {
  if (v === null || v === undefined || (isRecord(v) && v.type === 'ByteLevel')) return null;
  if (!isRecord(v)) throw new TokenizerError(`${source}: post_processor must be an object or null`);
  if (v.type === 'Sequence' && Array.isArray(v.processors)) {
    let found: { prefix: number[]; suffix: number[] } | null = null;
    for (const p of v.processors) {
      const r = parsePostProcessor(p, source);
      if (r) found = r;
    }
    return found;
  }
  if (v.type !== 'TemplateProcessing') {
    throw new TokenizerError(`${source}: post_processor type ${JSON.stringify(v.type)} is not supported`);
  }
  const specials = isRecord(v.special_tokens) ? v.special_tokens : {};
  const prefix: number[] = [];
  const suffix: number[] = [];
  let seenSequence = false;
  if (!Array.isArray(v.single)) throw new TokenizerError(`${source}: TemplateProcessing without "single"`);
  for (const piece of v.single) {
    if (isRecord(piece) && isRecord(piece.Sequence)) {
      seenSequence = true;
    } else if (isRecord(piece) && isRecord(piece.SpecialToken) && typeof piece.SpecialToken.id === 'string') {
      const name = piece.SpecialToken.id;
      const entry = specials[name];
      if (!isRecord(entry) || !Array.isArray(entry.ids)) {
        throw new TokenizerError(
          `${source}: TemplateProcessing refers to unknown special token ${JSON.stringify(name)}`,
        );
      }
      (seenSequence ? suffix : prefix).push(...(entry.ids as number[]));
    } else {
      throw new TokenizerError(
        `${source}: TemplateProcessing.single has an entry that is neither Sequence nor SpecialToken`,
      );
    }
  }
  return { prefix, suffix };
}

interface SpecialTokens {
  bos: string | null;
  eos: string | null;
  pad: string | null;
  unk: string | null;
  addBos: boolean;
  addEos: boolean;
  cleanUp: boolean;
}

function specialTokensFrom(config: Record<string, Json> | null, map: Record<string, Json> | null): SpecialTokens {
  const pick = (key: string): string | null => {
    if (config && key in config) return tokenContent(config[key]);
    if (map && key in map) return tokenContent(map[key]);
    return null;
  };
  return {
    bos: pick('bos_token'),
    eos: pick('eos_token'),
    pad: pick('pad_token'),
    unk: pick('unk_token'),
    addBos: config?.add_bos_token === true,
    addEos: config?.add_eos_token === true,
    cleanUp: config?.clean_up_tokenization_spaces === true,
  };
}

/** Build from a parsed `tokenizer.json` (plus, optionally, the `tokenizer_config.json` / `special_tokens_map.json` beside it). */
export function byteLevelBpeFromTokenizerJson(
  json: Json,
  source: string,
  config: Record<string, Json> | null = null,
  specialMap: Record<string, Json> | null = null,
): ByteLevelBpeTokenizer {
  if (!isRecord(json)) throw new TokenizerError(`${source}: expected a JSON object`);
  const model = json.model;
  if (!isRecord(model)) throw new TokenizerError(`${source}: no "model" object`);
  if (model.type !== undefined && model.type !== 'BPE') {
    throw new TokenizerError(`${source}: model.type is ${JSON.stringify(model.type)}, not BPE`);
  }
  // tokenizers writes "" (or null) when these are unused.
  if (model.continuing_subword_prefix || model.end_of_word_suffix) {
    throw new TokenizerError(`${source}: continuing_subword_prefix / end_of_word_suffix are not supported`);
  }
  const vocab = parseVocab(model.vocab, `${source} (model.vocab)`);
  const merges = parseJsonMerges(model.merges, source);
  const { steps, byteLevel } = parsePreTokenizer(json.pre_tokenizer, source);
  checkDecoder(json.decoder, source);
  const post = parsePostProcessor(json.post_processor, source);
  const added = Array.isArray(json.added_tokens)
    ? json.added_tokens.map((t, i) => parseAddedToken(t, undefined, source, `added_tokens[${i}]`))
    : [];
  const sp = specialTokensFrom(config, specialMap);
  const unkFromModel = typeof model.unk_token === 'string' ? model.unk_token : null;
  const spec: ByteLevelBpeSpec = {
    source,
    vocab,
    merges,
    addedTokens: added,
    normalizer: parseNormalizer(json.normalizer, source),
    preTokenizer: steps,
    byteLevel,
    ignoreMerges: model.ignore_merges === true,
    bosToken: sp.bos,
    eosToken: sp.eos,
    padToken: sp.pad,
    unkToken: sp.unk ?? unkFromModel,
    postProcessor: post,
    addBosToken: sp.addBos,
    addEosToken: sp.addEos,
    cleanUpTokenizationSpaces: sp.cleanUp,
  };
  return new ByteLevelBpeTokenizer(spec);
}

const QWEN2_CLASSES = new Set(['Qwen2Tokenizer', 'Qwen2TokenizerFast']);
const GPT2_CLASSES = new Set(['GPT2Tokenizer', 'GPT2TokenizerFast']);

/** Build from the slow-tokenizer files of a folder (`vocab.json`, `merges.txt`, optional configs). */
async function loadFromSlowFiles(dir: string): Promise<ByteLevelBpeTokenizer> {
  const { join } = await files.get();
  const vocabFile = join(dir, 'vocab.json');
  const mergesFile = join(dir, 'merges.txt');
  const configFile = join(dir, 'tokenizer_config.json');
  const [vocabJson, mergesText, config, specialMap, addedJson] = await Promise.all([
    readJson(vocabFile),
    readText(mergesFile),
    readOptionalJson(configFile),
    readOptionalJson(join(dir, 'special_tokens_map.json')),
    readOptionalJson(join(dir, 'added_tokens.json')),
  ]);
  const vocab = parseVocab(vocabJson, vocabFile);
  const merges = parseMergesTxt(mergesText, mergesFile);

  const cls = typeof config?.tokenizer_class === 'string' ? config.tokenizer_class : 'Qwen2Tokenizer';
  const isGpt2 = GPT2_CLASSES.has(cls);
  if (!isGpt2 && !QWEN2_CLASSES.has(cls)) {
    throw new TokenizerError(
      `${configFile}: tokenizer_class ${JSON.stringify(cls)} is not a byte-level BPE this loader knows from vocab.json + merges.txt (Qwen2Tokenizer, GPT2Tokenizer); provide a tokenizer.json`,
    );
  }

  // added_tokens_decoder carries the flags; added_tokens.json only content → id.
  const added = new Map<number, AddedToken>();
  const decoderEntries = config?.added_tokens_decoder;
  if (isRecord(decoderEntries)) {
    for (const [idText, entry] of Object.entries(decoderEntries)) {
      const id = Number(idText);
      if (!Number.isInteger(id))
        throw new TokenizerError(`${configFile}: added_tokens_decoder key ${JSON.stringify(idText)} is not an id`);
      added.set(id, parseAddedToken(entry, id, configFile, `added_tokens_decoder[${idText}]`));
    }
  }
  const specialContents = new Set<string>();
  for (const src of [config, specialMap]) {
    if (!src) continue;
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
      const c = tokenContent(src[key]);
      if (c !== null) specialContents.add(c);
    }
    const extra = src.additional_special_tokens;
    if (Array.isArray(extra))
      for (const t of extra) {
        const c = tokenContent(t);
        if (c !== null) specialContents.add(c);
      }
  }
  if (addedJson) {
    for (const [content, id] of Object.entries(addedJson)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new TokenizerError(
          `${join(dir, 'added_tokens.json')}: ${JSON.stringify(content)} has invalid id ${JSON.stringify(id)}`,
        );
      }
      if (added.has(id)) continue;
      const special = specialContents.has(content);
      added.set(id, { id, content, special, lstrip: false, rstrip: false, singleWord: false, normalized: !special });
    }
  }
  for (const t of added.values()) if (specialContents.has(t.content)) t.special = true;

  const sp = specialTokensFrom(config, specialMap);
  const spec: ByteLevelBpeSpec = {
    source: dir,
    mergesSource: mergesFile,
    vocab,
    merges,
    addedTokens: [...added.values()],
    normalizer: isGpt2 ? null : (s) => s.normalize('NFC'),
    preTokenizer: isGpt2
      ? []
      : [{ type: 'split', regex: compilePattern(QWEN2_PRETOKENIZE_PATTERN, dir), behavior: 'Isolated', invert: false }],
    byteLevel: { addPrefixSpace: isGpt2 && config?.add_prefix_space === true, useRegex: isGpt2 },
    ignoreMerges: false,
    bosToken: sp.bos,
    eosToken: sp.eos,
    padToken: sp.pad,
    unkToken: sp.unk,
    postProcessor: null,
    addBosToken: sp.addBos,
    addEosToken: sp.addEos,
    cleanUpTokenizationSpaces: sp.cleanUp,
  };
  return new ByteLevelBpeTokenizer(spec);
}

/**
 * Load a byte-level BPE tokenizer from a checkpoint folder: `tokenizer.json` when present (with the
 * `tokenizer_config.json` / `special_tokens_map.json` beside it for BOS/EOS/pad), else `vocab.json` + `merges.txt`.
 */
export async function loadBpeTokenizer(dir: string): Promise<ByteLevelBpeTokenizer> {
  const { join } = await files.get();
  const jsonFile = join(dir, 'tokenizer.json');
  if (await exists(jsonFile)) {
    const [json, config, specialMap] = await Promise.all([
      readJson(jsonFile),
      readOptionalJson(join(dir, 'tokenizer_config.json')),
      readOptionalJson(join(dir, 'special_tokens_map.json')),
    ]);
    return byteLevelBpeFromTokenizerJson(json, jsonFile, config, specialMap);
  }
  const haveVocab = await exists(join(dir, 'vocab.json'));
  const haveMerges = await exists(join(dir, 'merges.txt'));
  if (!haveVocab && !haveMerges) {
    throw new TokenizerError(
      `${dir}: no tokenizer.json and no vocab.json + merges.txt (not a byte-level BPE tokenizer folder)`,
    );
  }
  if (!haveVocab) throw new TokenizerError(`${join(dir, 'vocab.json')}: missing (merges.txt is there)`);
  if (!haveMerges) throw new TokenizerError(`${join(dir, 'merges.txt')}: missing (vocab.json is there)`);
  return loadFromSlowFiles(dir);
}
