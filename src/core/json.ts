/**
 * Reading JSON files (configs, tokenizer configs, chat templates, index files, datasets) with one kind of error: a
 * single line naming the file, and for a syntax error the line, column and the field it is in. JSON.parse's own
 * message has no line number and quotes the text (a multi-line quote breaks the one-line rule, and the bytes of a
 * file that is not what it claims must not be echoed).
 */
import { errorCode, files } from './io.js';

/** The error class a caller's files report with (ConfigError for configs, TokenizerError for tokenizers, …). */
export type FileErrorClass = new (message: string, options?: { cause?: unknown }) => Error;

export interface JsonSyntaxError {
  /** UTF-16 offset into the text. */
  offset: number;
  line: number;
  column: number;
  /** The key path the error is inside (`llm_config.vocab_size`, `added_tokens[3]`), '' at the top. */
  field: string;
  problem: string;
}

class Stop {
  constructor(readonly at: JsonSyntaxError) {}
}

/** Where and why `text` is not JSON (run only after JSON.parse has failed: the cost does not matter). */
export function locateJsonError(text: string): JsonSyntaxError {
  let i = 0;
  const path: string[] = [];
  const stop = (problem: string): never => {
    const before = text.lastIndexOf('\n', i - 1);
    const line = text.slice(0, i).split('\n').length;
    throw new Stop({ offset: i, line, column: i - before, field: path.join('').replace(/^\./, ''), problem });
  };
  const next = () => text[i] ?? '';
  const describe = () => {
    if (i >= text.length) return 'the end of the file';
    const c = next();
    return c < ' ' ? `'${JSON.stringify(c).slice(1, -1)}'` : `'${c}'`;
  };
  const skipSpace = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const expect = (wanted: string, what: string) => {
    skipSpace();
    if (next() !== wanted) stop(`expected ${what}, found ${describe()}`);
    i++;
  };
  const string = (): string => {
    const start = i;
    i++;
    for (;;) {
      if (i >= text.length) stop('a string is not closed');
      const c = text[i];
      if (c === '"') break;
      if (c < ' ') stop('a raw control character (newline, tab) inside a string');
      if (c === '\\') {
        const escaped = text[i + 1] ?? '';
        if (escaped !== '' && '"\\/bfnrt'.includes(escaped)) i += 2;
        else if (escaped === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else stop('an invalid escape in a string');
      } else i++;
    }
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (): void => {
    skipSpace();
    const c = next();
    if (c === '{') {
      i++;
      skipSpace();
      if (next() === '}') {
        i++;
        return;
      }
      for (;;) {
        skipSpace();
        if (next() !== '"') stop(`expected a "quoted" property name, found ${describe()}`);
        path.push(`.${string()}`);
        expect(':', "':'");
        value();
        path.pop();
        skipSpace();
        if (next() === '}') break;
        if (next() !== ',') stop(`expected ',' or '}', found ${describe()}`);
        i++;
      }
      i++;
      return;
    }
    if (c === '[') {
      i++;
      skipSpace();
      if (next() === ']') {
        i++;
        return;
      }
      for (let n = 0; ; n++) {
        path.push(`[${n}]`);
        value();
        path.pop();
        skipSpace();
        if (next() === ']') break;
        if (next() !== ',') stop(`expected ',' or ']', found ${describe()}`);
        i++;
      }
      i++;
      return;
    }
    if (c === '"') {
      string();
      return;
    }
    const number = /-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
    number.lastIndex = i;
    if (/[-\d]/.test(c) && number.test(text)) {
      i = number.lastIndex;
      return;
    }
    for (const word of ['true', 'false', 'null'])
      if (text.startsWith(word, i)) {
        i += word.length;
        return;
      }
    stop(i >= text.length ? 'the text ends where a value should be' : `unexpected ${describe()}`);
  };
  try {
    if (text.trim() === '') stop('the file is empty');
    if (text.startsWith('\ufeff')) stop('the file starts with a byte-order mark (save it as UTF-8 without one)');
    value();
    skipSpace();
    if (i < text.length) stop(`more text after the JSON value: ${describe()}`);
  } catch (error) {
    if (error instanceof Stop) return error.at;
    throw error;
  }
  // JSON.parse failed but the scan did not: should not happen; report the start rather than nothing.
  return { offset: 0, line: 1, column: 1, field: '', problem: 'not accepted by JSON.parse' };
}

/** `problem at line L, column C, in field 'a.b[2]'` (the field as config errors name it). */
export function describeJsonError(error: JsonSyntaxError): string {
  const where = `at line ${error.line}, column ${error.column}`;
  return `${error.problem} ${where}${error.field ? `, in field '${error.field}'` : ''}`;
}

export interface JsonFileOptions {
  /** The error class to fail with: ConfigError for configs, TokenizerError for tokenizer files, … */
  error: FileErrorClass;
  /** What the file is, put before its name in messages (`templates file`). */
  what?: string;
  /** The line the text starts at in its file (JSON Lines), for the line numbers of syntax errors. */
  firstLine?: number;
}

function describeFile(file: string, options: JsonFileOptions): string {
  return options.what ? `${options.what} ${file}` : file;
}

/** JSON.parse, failing with `${name}: not valid JSON (…)` as one line. */
export function parseJson(text: string, name: string, options: JsonFileOptions): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    const at = locateJsonError(text);
    at.line += (options.firstLine ?? 1) - 1;
    throw new options.error(`${describeFile(name, options)}: not valid JSON (${describeJsonError(at)})`, { cause });
  }
}

/** A JSON file through the file-system seam; an unreadable file fails with `${file}: cannot read (ENOENT)`. */
export async function readJsonFile(file: string, options: JsonFileOptions): Promise<unknown> {
  let text: string;
  try {
    text = await (await files.get()).readText(file);
  } catch (cause) {
    const why = errorCode(cause) ?? (cause as Error).message;
    throw new options.error(`${describeFile(file, options)}: cannot read (${why})`, { cause });
  }
  return parseJson(text, file, options);
}

/** {@link readJsonFile} of a file whose top level must be an object. */
export async function readJsonObject(file: string, options: JsonFileOptions): Promise<Record<string, unknown>> {
  const value = await readJsonFile(file, options);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new options.error(`${describeFile(file, options)}: expected a JSON object, got ${jsonType(value)}`);
  }
  return value as Record<string, unknown>;
}

/** {@link readJsonObject}, or null when there is no such file. */
export async function readOptionalJsonObject(
  file: string,
  options: JsonFileOptions,
): Promise<Record<string, unknown> | null> {
  if (!(await (await files.get()).isFile(file))) return null;
  return readJsonObject(file, options);
}

/** What a JSON value is, for messages: 'an array', 'a string', 'null'. */
export function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return type === 'object' ? 'an object' : type === 'number' ? 'a number' : `a ${type}`;
}

/**
 * `camelCase` → `snake_case` (`peakRssMB` → `peak_rss_mb`), the one key vocabulary of every JSON the CLI prints.
 * Keys that are not identifiers (tensor names such as `out.C.ret.scores`, file names) are data and kept.
 */
export function snakeCaseKey(key: string): string {
  if (!/^[a-z][A-Za-z0-9]*$/.test(key)) return key;
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase();
}

/** JSON.stringify with every identifier key in snake_case (see {@link snakeCaseKey}), for reports on stdout. */
export function stringifySnakeCase(
  value: unknown,
  replacer?: (key: string, value: unknown) => unknown,
  indent?: number,
): string {
  const convert = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(convert);
    if (v === null || typeof v !== 'object' || ArrayBuffer.isView(v)) return v;
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [snakeCaseKey(k), convert(x)]));
  };
  return JSON.stringify(convert(value), replacer, indent);
}
