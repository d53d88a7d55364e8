/**
 * Argument parsing for the subcommands on top of `node:util` `parseArgs`, with errors turned into one-line
 * UsageErrors that name the command, and typed accessors that validate numbers and choices.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { UsageError } from '../../core/errors.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
}

export interface CommandSpec {
  /** Full command path for messages (`bench vision`). */
  command: string;
  /** Help text printed by `--help`. */
  usage: string;
  options: Record<string, OptionSpec>;
  /** Positional arguments allowed (default none). */
  positionals?: { min?: number; max?: number };
}

type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

/** Parsed arguments with typed, validated accessors. */
export class ParsedArgs {
  constructor(
    readonly spec: CommandSpec,
    readonly values: Values,
    readonly positionals: string[],
  ) {}

  fail(message: string): never {
    throw usageError(this.spec.command, message);
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }

  string(name: string): string | undefined;
  string(name: string, fallback: string): string;
  string(name: string, fallback?: string): string | undefined {
    const value = this.values[name];
    if (value === undefined) return fallback;
    if (typeof value !== 'string') this.fail(`--${name} needs a value`);
    if (value === '') this.fail(`--${name} must not be empty`);
    return value;
  }

  required(name: string): string {
    const value = this.string(name);
    if (value === undefined) this.fail(`--${name} is required`);
    return value;
  }

  integer(name: string, fallback: number, range?: { min?: number; max?: number }): number;
  integer(name: string, fallback: undefined, range?: { min?: number; max?: number }): number | undefined;
  integer(name: string, fallback: number | undefined, range: { min?: number; max?: number } = {}): number | undefined {
    const text = this.string(name);
    if (text === undefined) return fallback;
    if (!/^[+-]?\d+$/.test(text)) this.fail(`--${name} must be an integer, got '${text}'`);
    const value = Number(text);
    if (range.min !== undefined && value < range.min)
      this.fail(`--${name} must be at least ${range.min}, got ${value}`);
    if (range.max !== undefined && value > range.max) this.fail(`--${name} must be at most ${range.max}, got ${value}`);
    return value;
  }

  /**
   * `--threads`: at least 1; more than the machine's cores only oversubscribes them, so it is clamped with a
   * notice on stderr.
   */
  threads(): number | undefined {
    const threads = this.integer('threads', undefined, { min: 1 });
    const cores = os.availableParallelism();
    if (threads === undefined || threads <= cores) return threads;
    process.stderr.write(`notice: --threads ${threads} is more than the ${cores} cores; using ${cores}\n`);
    return cores;
  }

  choice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const value = this.string(name, fallback);
    if (!(choices as readonly string[]).includes(value))
      this.fail(`--${name} must be one of ${choices.join(', ')}; got '${value}'`);
    return value as T;
  }
}

export function usageError(command: string, message: string): UsageError {
  return new UsageError(`internvl ${command}: ${message} (see 'internvl ${command} --help')`);
}

/**
 * Parses `args` against `spec`. Returns null after printing the usage when `--help`/`-h` is given, so the command
 * returns 0 without doing anything else.
 */
export function parseCommandArgs(spec: CommandSpec, args: string[]): ParsedArgs | null {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(spec.usage.endsWith('\n') ? spec.usage : `${spec.usage}\n`);
    return null;
  }
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({
      args,
      options: spec.options,
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
