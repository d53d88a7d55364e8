/**
 * The pre-tokenizer regexes of byte-level BPE tokenizers. The regexes of tokenizers are Oniguruma patterns; they are
 * translated to JS (`u` flag): `\s` becomes `\p{White_Space}` (JS `\s` differs on U+0085 and U+FEFF) and `(?i:…)`
 * groups, which Node 20 cannot parse, get their letters spelled out in both cases plus the non-ASCII chars that
 * case-fold onto them (ſ→s, K→k). Also the Unicode white-space and word-character tests of added-token matching.
 */
import { TokenizerError } from '../../core/errors.js';

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

export function compilePattern(pattern: string, source: string): RegExp {
  try {
    return new RegExp(translateOnigurumaPattern(pattern), 'gu');
  } catch (err) {
    throw new TokenizerError(`${source}: cannot use the pre-tokenizer regex: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

export function escapeLiteral(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}

const WHITE_SPACE = /^\p{White_Space}$/u;
export const WORD_CHAR = new RegExp(`^[${WORD_CLASS_BODY}]$`, 'u');

export function lastCodePoint(s: string, end: number): string {
  if (end <= 0) return '';
  const lo = s.charCodeAt(end - 1);
  if (lo >= 0xdc00 && lo <= 0xdfff && end >= 2) {
    const hi = s.charCodeAt(end - 2);
    if (hi >= 0xd800 && hi <= 0xdbff) return s.slice(end - 2, end);
  }
  return s[end - 1];
}

/** Start of the run of white space that ends at `end` (Rust `\s*$` on `s[..end]`). */
export function whiteSpaceRunStart(s: string, end: number): number {
  let j = end;
  for (;;) {
    const ch = lastCodePoint(s, j);
    if (ch === '' || !WHITE_SPACE.test(ch)) return j;
    j -= ch.length;
  }
}

/** End of the run of white space that starts at `start` (Rust `^\s*` on `s[start..]`). */
export function whiteSpaceRunEnd(s: string, start: number): number {
  let j = start;
  while (j < s.length) {
    const cp = s.codePointAt(j)!;
    const ch = String.fromCodePoint(cp);
    if (!WHITE_SPACE.test(ch)) break;
    j += ch.length;
  }
  return j;
}
