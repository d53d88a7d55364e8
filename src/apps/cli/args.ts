/**
 * Argument parsing for the subcommands on top of `node:util` `parseArgs`. A command declares its options once
 * (type, value name, help text, default, required); that one declaration drives the parser, the typed accessors
 * (which take defaults from it) and the `--help` text, so help, defaults and parsing cannot drift apart. Errors are
 * one-line UsageErrors that name the command.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { InternalError, UsageError } from '../../core/errors.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** The value's name in the help: `k` shows as `--top <k>`; a text with `<` in it is shown as it is. */
  value?: string;
  /** What the option does, for `--help` (wrapped to the help's width). */
  help: string;
  /** The value an absent option takes: the accessors return it and the help shows it. */
  default?: string | number;
  /** `required(name)` insists on it; the help says so. */
  required?: boolean;
}

export type Options = Record<string, OptionSpec>;

export interface CommandSpec<O extends Options = Options> {
  /** Full command path for messages (`bench vision`). */
  command: string;
  /** The usage line after `Usage: internvl ` (`classify --model <dir|id> <image>... [options]`). */
  synopsis: string;
  /** Paragraphs between the usage line and the options. */
  description?: string;
  options: O;
  /** Sections after the options (targets, examples). */
  epilog?: string;
  /** Positional arguments allowed (default none). */
  positionals?: { min?: number; max?: number };
}

/** Options many commands share, declared once. */
export const THREADS_OPTION = { type: 'string', value: 'n', help: 'onnxruntime threads (default: all cores)' } as const;
export const QUIET_OPTION = { type: 'boolean', help: 'no progress on stderr' } as const;

type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;
type Range = { min?: number; max?: number };
type Name<O> = keyof O & string;
/** A value of type T, or undefined unless the option declares a default of that type. */
type Defaulted<S, T> = S extends { default: T } ? T : T | undefined;

/** Parsed arguments with typed, validated accessors. */
export class ParsedArgs<O extends Options = Options> {
  constructor(
    readonly spec: CommandSpec<O>,
    readonly values: Values,
    readonly positionals: string[],
  ) {}

  fail(message: string): never {
    throw usageError(this.spec.command, message);
  }

  flag(name: Name<O>): boolean {
    return this.values[name] === true;
  }

  /** Whether the user gave the option (a declared default does not count). */
  given(name: Name<O>): boolean {
    return this.values[name] !== undefined;
  }

  private option(name: string): OptionSpec {
    const option = this.spec.options[name];
    if (!option) throw new InternalError(`internvl ${this.spec.command}: no option --${name} is declared`);
    return option;
  }

  string<K extends Name<O>>(name: K): Defaulted<O[K], string> {
    const value = this.values[name];
    if (value === undefined) {
      const fallback = this.option(name).default;
      return (fallback === undefined ? undefined : String(fallback)) as Defaulted<O[K], string>;
    }
    if (typeof value !== 'string') this.fail(`--${name} needs a value`);
    if (value === '') this.fail(`--${name} must not be empty`);
    return value;
  }

  required(name: Name<O>): string {
    const value = this.string(name);
    if (value === undefined) this.fail(`--${name} is required`);
    return value;
  }

  integer<K extends Name<O>>(name: K, range: Range = {}): Defaulted<O[K], number> {
    const given = this.values[name] !== undefined;
    const text = this.string(name);
    if (text === undefined) return undefined as Defaulted<O[K], number>;
    if (!/^[+-]?\d+$/.test(text)) this.fail(`--${name} must be an integer, got '${text}'`);
    const value = Number(text);
    // A declared default is the command's own choice, not something to check against the user's bounds.
    if (given && range.min !== undefined && value < range.min)
      this.fail(`--${name} must be at least ${range.min}, got ${value}`);
    if (given && range.max !== undefined && value > range.max)
      this.fail(`--${name} must be at most ${range.max}, got ${value}`);
    return value;
  }

  /** A finite number (`--temperature 0.7`). */
  number<K extends Name<O>>(name: K): Defaulted<O[K], number> {
    const text = this.string(name);
    if (text === undefined) return undefined as Defaulted<O[K], number>;
    const value = Number(text);
    if (!Number.isFinite(value)) this.fail(`--${name} must be a number, got '${text}'`);
    return value;
  }

  /**
   * `--threads`: at least 1; more than the machine's cores only oversubscribes them, so it is clamped with a
   * notice on stderr.
   */
  threads(): number | undefined {
    const threads = this.integer('threads' as Name<O>, { min: 1 }) as number | undefined;
    const cores = os.availableParallelism();
    if (threads === undefined || threads <= cores) return threads;
    process.stderr.write(`notice: --threads ${threads} is more than the ${cores} cores; using ${cores}\n`);
    return cores;
  }

  choice<K extends Name<O>, T extends string>(
    name: K,
    choices: readonly T[],
  ): Defaulted<O[K], string> & (T | undefined) {
    const fallback = this.option(name).default;
    if (fallback !== undefined && !(choices as readonly unknown[]).includes(fallback))
      throw new InternalError(`internvl ${this.spec.command}: the default of --${name} is not one of its choices`);
    const value = this.string(name);
    if (value !== undefined && !(choices as readonly string[]).includes(value))
      this.fail(`--${name} must be one of ${choices.join(', ')}; got '${value}'`);
    return value as Defaulted<O[K], string> & (T | undefined);
  }
}

export function usageError(command: string, message: string): UsageError {
  return new UsageError(`internvl ${command}: ${message} (see 'internvl ${command} --help')`);
}

/** Width of the help text, and the narrowest and widest column the option descriptions start at. */
const HELP_WIDTH = 118;
const HELP_INDENT = 23;
const MAX_HELP_INDENT = 32;

/**
 * The words of `text` in lines of at most `width` characters (`firstWidth` for the first line); an overlong word
 * keeps a line of its own. Newlines in `text` are kept.
 */
export function wrapText(text: string, width: number, firstWidth = width): string[] {
  const lines: string[] = [];
  for (const paragraph of text.split('\n')) {
    let line = '';
    for (const word of paragraph.split(/ +/).filter(Boolean)) {
      const limit = lines.length === 0 ? firstWidth : width;
      if (line && line.length + 1 + word.length > limit) {
        lines.push(line);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    lines.push(line);
  }
  return lines;
}

/**
 * The option lines of a help text, from the declarations. Descriptions start in one column, wide enough for the
 * flags of the command (at least HELP_INDENT, at most MAX_HELP_INDENT); a longer flag has a line of its own.
 */
export function renderOptions(options: Options): string {
  const lines = Object.entries(options).map(([name, o]) => {
    const value = o.value?.includes('<') ? o.value : `<${o.value ?? 'value'}>`;
    const flag = `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ` ${value}` : ''}`;
    const shown = typeof o.default === 'string' && /\s/.test(o.default) ? `'${o.default}'` : o.default;
    const notes = [shown !== undefined ? ` (default ${shown})` : '', o.required ? ' (required)' : ''];
    return [flag, o.help + notes.join('')];
  });
  lines.push(['-h, --help', 'show this help']);
  const fitting = lines.map(([flag]) => flag.length + 4).filter((width) => width <= MAX_HELP_INDENT);
  const column = Math.max(HELP_INDENT, ...fitting);
  const pad = ' '.repeat(column);
  return lines
    .map(([flag, help]) => {
      const text = wrapText(help, HELP_WIDTH - column).map((line) => pad + line);
      const head = `  ${flag}`;
      if (head.length + 2 > column) return [head, ...text].join('\n');
      text[0] = head.padEnd(column) + text[0].slice(column);
      return text.join('\n');
    })
    .join('\n');
}

/** The whole `--help` text of a command. */
export function renderHelp(spec: CommandSpec): string {
  const parts = [`Usage: internvl ${spec.synopsis}`];
  if (spec.description) parts.push(wrapText(spec.description.trim(), HELP_WIDTH).join('\n'));
  parts.push(`Options:\n${renderOptions(spec.options)}`);
  if (spec.epilog) parts.push(spec.epilog.trim());
  return `${parts.join('\n\n')}\n`;
}

/**
 * Parses `args` against `spec`. Returns null after printing the help when `--help`/`-h` is given, so the command
 * returns 0 without doing anything else.
 */
export function parseCommandArgs<const O extends Options>(spec: CommandSpec<O>, args: string[]): ParsedArgs<O> | null {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(renderHelp(spec));
    return null;
  }
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({
      args,
      // node's parser refuses keys it does not know and `short: undefined`.
      options: Object.fromEntries(
        Object.entries(spec.options).map(([name, { type, short, multiple }]) => [
          name,
          { type, ...(short ? { short } : {}), ...(multiple ? { multiple } : {}) },
        ]),
      ),
      allowPositionals: (spec.positionals?.max ?? 0) > 0,
      strict: true,
    }) as { values: Values; positionals: string[] };
  } catch (error) {
    throw usageError(spec.command, describeParseError(error));
  }
  const { min = 0, max = 0 } = spec.positionals ?? {};
  if (parsed.positionals.length < min)
    throw usageError(spec.command, min === 1 ? 'missing argument' : `needs at least ${min} arguments`);
  if (parsed.positionals.length > max)
    throw usageError(spec.command, `unexpected argument '${parsed.positionals[max]}'`);
  return new ParsedArgs(spec, parsed.values, parsed.positionals);
}

/** node's messages are long and mention internals; keep the part a user needs. */
function describeParseError(error: unknown): string {
  const err = error as NodeJS.ErrnoException;
  const quoted = /'([^']*)'/.exec(err.message ?? '')?.[1];
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option '${quoted ?? err.message}'`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument '${quoted ?? err.message}'`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return (err.message ?? 'invalid option value').replace(/\s+/g, ' ');
    default:
      if (err instanceof TypeError) return err.message.replace(/\s+/g, ' ');
      throw error;
  }
}
