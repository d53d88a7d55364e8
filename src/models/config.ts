/**
 * Reading config.json: typed field access whose errors name the file and the field.
 * Each model family turns its section into typed args in its own file; this module only detects which family a
 * checkpoint folder holds.
 */
import { files } from '../core/io.js';
import { readJsonObject } from '../core/json.js';
import { ConfigError, ModelLoadError } from '../core/errors.js';

export type RawConfig = Record<string, unknown>;

/** A config section with the file and key path it came from, for error messages. */
export class ConfigSection {
  constructor(
    readonly raw: RawConfig,
    readonly file: string,
    readonly at: string = '',
  ) {}

  private where(key: string): string {
    return `${this.file}: field '${this.at ? `${this.at}.` : ''}${key}'`;
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  number(key: string, fallback?: number): number {
    const value = this.raw[key];
    if (value === undefined || value === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${this.where(key)} is missing`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value))
      throw new ConfigError(`${this.where(key)} must be a number, got ${JSON.stringify(value)}`);
    return value;
  }

  /** Sizes that some configs write as [h, w] (the *-hf vision config). */
  size(key: string, fallback?: number): number {
    const value = this.raw[key];
    if (Array.isArray(value) && value.length === 2 && value[0] === value[1] && typeof value[0] === 'number')
      return value[0];
    return this.number(key, fallback);
  }

  integer(key: string, fallback?: number): number {
    const value = this.number(key, fallback);
    if (!Number.isInteger(value)) throw new ConfigError(`${this.where(key)} must be an integer, got ${value}`);
    return value;
  }

  /** Sizes, counts, ids of dimensions: an integer ≥ 1. */
  positiveInteger(key: string, fallback?: number): number {
    const value = this.integer(key, fallback);
    if (value < 1) throw new ConfigError(`${this.where(key)} must be at least 1, got ${value}`);
    return value;
  }

  /** Epsilons, rotary bases, scaling factors: a finite number > 0. */
  positiveNumber(key: string, fallback?: number): number {
    const value = this.number(key, fallback);
    if (!(value > 0)) throw new ConfigError(`${this.where(key)} must be greater than 0, got ${value}`);
    return value;
  }

  /** {@link size} for an image or patch size: an integer ≥ 1. */
  positiveSize(key: string, fallback?: number): number {
    const value = this.size(key, fallback);
    if (!Number.isInteger(value) || value < 1)
      throw new ConfigError(`${this.where(key)} must be an integer of at least 1, got ${value}`);
    return value;
  }

  /** The file and key path of this section, for messages about its fields. */
  get origin(): { file: string; at: string } {
    return { file: this.file, at: this.at };
  }

  string(key: string, fallback?: string): string {
    const value = this.raw[key];
    if (value === undefined || value === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${this.where(key)} is missing`);
    }
    if (typeof value !== 'string')
      throw new ConfigError(`${this.where(key)} must be a string, got ${JSON.stringify(value)}`);
    return value;
  }

  optionalString(key: string): string | undefined {
    return this.has(key) ? this.string(key) : undefined;
  }

  boolean(key: string, fallback?: boolean): boolean {
    const value = this.raw[key];
    if (value === undefined || value === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${this.where(key)} is missing`);
    }
    if (typeof value !== 'boolean')
      throw new ConfigError(`${this.where(key)} must be true or false, got ${JSON.stringify(value)}`);
    return value;
  }

  section(key: string): ConfigSection {
    const value = this.raw[key];
    if (value === undefined || value === null) throw new ConfigError(`${this.where(key)} is missing`);
    if (typeof value !== 'object' || Array.isArray(value))
      throw new ConfigError(`${this.where(key)} must be an object`);
    return new ConfigSection(value as RawConfig, this.file, this.at ? `${this.at}.${key}` : key);
  }

  optionalSection(key: string): ConfigSection | undefined {
    return this.has(key) ? this.section(key) : undefined;
  }

  fail(key: string, problem: string): never {
    throw new ConfigError(`${this.where(key)} ${problem}`);
  }
}

export async function readConfig(dir: string): Promise<ConfigSection> {
  const fs = await files.get();
  const file = fs.join(dir, 'config.json');
  if (!(await fs.isFile(file))) throw new ModelLoadError(`${dir}: no config.json (is this a model folder?)`);
  return new ConfigSection(await readJsonObject(file, { error: ConfigError }), file);
}
