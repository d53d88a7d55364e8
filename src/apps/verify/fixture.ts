/**
 * A golden fixture folder (format: /work/shared/fixtures/README.md): `config.json`, weights, `io.safetensors` with
 * `in.*` inputs and `out.*` goldens, `meta.json`. End-to-end folders look like released checkpoints and keep
 * `io.safetensors` and `meta.json` in `golden/` instead. Read through the platform's file system, so the same
 * runners verify a folder in Node and one served over HTTP to a browser.
 */
import { MemoryByteSource } from '../../core/bytes.js';
import { ModelLoadError, SafetensorsError } from '../../core/errors.js';
import { files, type FileSystem } from '../../core/io.js';
import { readOptionalJsonObject } from '../../core/json.js';
import { SafetensorsFile, readEntrySync, bytesToFloat32, type TensorEntry } from '../../core/safetensors.js';
import { readConfig, type ConfigSection } from '../../models/config.js';
import { compareTensors, defaultBound, type Bound, type ComparedTensor, type NumericTensor } from './compare.js';

/** A tensor of io.safetensors as numbers: float dtypes as Float32Array, integers as Float64Array (exact below 2^53). */
export interface IoTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Float32Array | Float64Array;
}

export class Fixture {
  private constructor(
    readonly fs: FileSystem,
    /** The folder given by the user. */
    readonly dir: string,
    /** `config.json`, or null when the folder has none. */
    readonly config: ConfigSection | null,
    /** Folder holding `io.safetensors` and `meta.json` (`dir` or `dir/golden`). */
    readonly goldenDir: string,
    readonly io: SafetensorsFile | null,
    readonly meta: Record<string, unknown>,
  ) {}

  static async open(dir: string): Promise<Fixture> {
    const fs = await files.get();
    if (!(await fs.isDirectory(dir))) {
      throw new ModelLoadError(
        (await fs.isFile(dir))
          ? `${dir}: not a folder (give the fixture folder, not a file in it)`
          : `${dir}: no such fixture folder`,
      );
    }
    const config = (await fs.isFile(fs.join(dir, 'config.json'))) ? await readConfig(dir) : null;
    const goldenDir = (await fs.isFile(fs.join(dir, 'golden', 'io.safetensors'))) ? fs.join(dir, 'golden') : dir;
    const ioPath = fs.join(goldenDir, 'io.safetensors');
    // Goldens are small (≤ 10 MB) and the runners read them synchronously: the whole file is held in memory.
    const io = (await fs.isFile(ioPath))
      ? await SafetensorsFile.read(new MemoryByteSource(ioPath, await fs.readBytes(ioPath)))
      : null;
    const metaPath = fs.join(goldenDir, 'meta.json');
    const meta = (await readOptionalJsonObject(metaPath, { error: ModelLoadError })) ?? {};
    return new Fixture(fs, dir, config, goldenDir, io, meta);
  }

  /** The folder's own name: the last segment of the path or URL given. */
  get name(): string {
    return baseName(this.dir);
  }

  has(name: string): boolean {
    return this.io?.tensors.has(name) ?? false;
  }

  /** Names in io.safetensors starting with `prefix`, in file order. */
  names(prefix = ''): string[] {
    return this.io ? [...this.io.tensors.keys()].filter((n) => n.startsWith(prefix)) : [];
  }

  /** The golden outputs: every `out.*` tensor. */
  goldenNames(): string[] {
    return this.names('out.');
  }

  entry(name: string): TensorEntry {
    const entry = this.io?.tensors.get(name);
    if (!entry) throw new ModelLoadError(`${this.goldenPath('io.safetensors')}: no tensor '${name}'`);
    return entry;
  }

  tensor(name: string): IoTensor {
    const entry = this.entry(name);
    const bytes = readEntrySync(entry);
    return { name, dtype: entry.dtype, shape: entry.shape, data: decode(bytes, entry) };
  }

  /** Compares a computed tensor with the golden `name` (bound: {@link defaultBound} unless given). */
  /** A path inside the folder, spelled by the file system it was opened with. */
  path(...parts: string[]): string {
    return this.fs.join(this.dir, ...parts);
  }

  /** A path inside the golden folder (`dir` or `dir/golden`). */
  goldenPath(...parts: string[]): string {
    return this.fs.join(this.goldenDir, ...parts);
  }

  compare(name: string, actual: NumericTensor, bound?: Bound): ComparedTensor {
    const golden = this.tensor(name);
    return compareTensors(name, actual, golden, bound ?? defaultBound(name, golden));
  }

  /**
   * Compares a computed tensor of k rows with the first k rows (along axis 0) of the golden `name`: per-step
   * goldens of a generation the check stopped early. Named `name[:k]` when k is short of the golden's rows.
   */
  compareRows(name: string, actual: NumericTensor, bound?: Bound): ComparedTensor {
    const golden = this.tensor(name);
    const rows = actual.shape[0] ?? 0;
    if (rows >= golden.shape[0]) return compareTensors(name, actual, golden, bound ?? defaultBound(name, golden));
    const rowSize = golden.shape.slice(1).reduce((a, b) => a * b, 1);
    const prefix = { data: golden.data.subarray(0, rows * rowSize), shape: [rows, ...golden.shape.slice(1)] };
    return compareTensors(`${name}[:${rows}]`, actual, prefix, bound ?? defaultBound(name, golden));
  }
}

/** The last segment of a path or URL (`a/b/` → `b`); a file name read from meta.json is reduced to it. */
export function baseName(pathOrUrl: string): string {
  return (
    pathOrUrl
      .replace(/[\\/]+$/, '')
      .split(/[\\/]/)
      .pop() ?? pathOrUrl
  );
}

function decode(bytes: Uint8Array, entry: TensorEntry): Float32Array | Float64Array {
  if (entry.dtype === 'F32' || entry.dtype === 'F16' || entry.dtype === 'BF16' || entry.dtype === 'F64') {
    return bytesToFloat32(bytes, entry.dtype, entry.name);
  }
  // Aligned copy: the data offset in the file need not be a multiple of the element size.
  const aligned = new Uint8Array(bytes.byteLength);
  aligned.set(bytes);
  const buffer = aligned.buffer;
  switch (entry.dtype) {
    case 'I64':
      return Float64Array.from(new BigInt64Array(buffer), (v) => Number(v));
    case 'I32':
      return Float64Array.from(new Int32Array(buffer));
    case 'I16':
      return Float64Array.from(new Int16Array(buffer));
    case 'I8':
      return Float64Array.from(new Int8Array(buffer));
    case 'U8':
    case 'BOOL':
      return Float64Array.from(aligned);
    default:
      throw new SafetensorsError(
        `${entry.source.name}: tensor '${entry.name}' has dtype ${entry.dtype}, which verify cannot read`,
      );
  }
}
