/**
 * Safetensors files and checkpoints (one file or sharded with `model.safetensors.index.json`).
 *
 * The header is validated before anything is trusted: its length, its JSON, every dtype and shape, every byte range
 * (inside the file, of exactly shape × dtype-size bytes, not overlapping another). Tensor data is read lazily with
 * positioned reads, so a 30 GB checkpoint costs nothing until a tensor is asked for, and graphs can point at the
 * bytes in place (external data) instead of copying them.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomicSync } from './atomic_write.js';
import { quoteName, resolveInside } from './contained_path.js';
import { SafetensorsError, ModelLoadError } from './errors.js';

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Where one tensor's bytes are: enough to read it or to point an ONNX initializer at it. */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute path of the file (symlinks resolved). */
  file: string;
  /** Byte offset of the data from the start of the file. */
  offset: number;
  byteLength: number;
}

/** The largest header we accept; real ones are a few hundred KB even for 70B models. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export class SafetensorsFile {
  readonly path: string;
  readonly tensors: Map<string, TensorEntry>;
  readonly metadata: Record<string, string>;

  private constructor(filePath: string, tensors: Map<string, TensorEntry>, metadata: Record<string, string>) {
    this.path = filePath;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  static open(filePath: string): SafetensorsFile {
    let realPath: string;
    let fileSize: number;
    let fd: number;
    try {
      realPath = fs.realpathSync(filePath);
      const stat = fs.statSync(realPath);
      if (!stat.isFile())
        throw new SafetensorsError(`${filePath}: is a folder (or another non-file), not a safetensors file`);
      fileSize = stat.size;
      fd = fs.openSync(realPath, 'r');
    } catch (error) {
      if (error instanceof SafetensorsError) throw error;
      throw new SafetensorsError(`${filePath}: cannot open (${(error as NodeJS.ErrnoException).code ?? error})`);
    }
    try {
      if (fileSize < 8)
        throw new SafetensorsError(`${filePath}: truncated file (${fileSize} bytes; a header needs at least 8)`);
      const lengthBytes = Buffer.alloc(8);
      fs.readSync(fd, lengthBytes, 0, 8, 0);
      const headerLength = lengthBytes.readBigUInt64LE(0);
      if (headerLength > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError(
          `${filePath}: header length ${headerLength} is implausible (limit ${MAX_HEADER_BYTES} bytes)`,
        );
      }
      if (Number(headerLength) > fileSize - 8) {
        throw new SafetensorsError(
          `${filePath}: truncated file: header says ${headerLength} bytes but only ${fileSize - 8} follow`,
        );
      }
      const headerBytes = Buffer.alloc(Number(headerLength));
      fs.readSync(fd, headerBytes, 0, headerBytes.length, 8);
      const dataStart = 8 + headerBytes.length;
      const parsed = parseHeader(filePath, headerBytes);
      const tensors = validateEntries(filePath, realPath, parsed.entries, dataStart, fileSize - dataStart);
      return new SafetensorsFile(realPath, tensors, parsed.metadata);
    } finally {
      fs.closeSync(fd);
    }
  }
}

function parseHeader(
  filePath: string,
  headerBytes: Buffer,
): { entries: Record<string, unknown>; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(`${filePath}: header is not valid UTF-8 (not a safetensors file?)`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    // V8's message quotes the text; a file that is not a checkpoint must not be echoed, so only the position is kept.
    const at = /position (\d+)/.exec((error as Error).message);
    throw new SafetensorsError(
      `${filePath}: header is not valid JSON${at ? ` (at byte ${8 + Number(at[1])})` : ''}: not a safetensors file?`,
    );
  }
  const duplicate = firstDuplicateKey(text);
  if (duplicate !== undefined)
    throw new SafetensorsError(`${filePath}: header names ${quoteName(duplicate)} twice (the format forbids it)`);
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new SafetensorsError(`${filePath}: header is not a JSON object`);
  }
  const { __metadata__: metadata, ...entries } = header as Record<string, unknown>;
  if (metadata !== undefined && (metadata === null || typeof metadata !== 'object')) {
    throw new SafetensorsError(`${filePath}: __metadata__ is not an object`);
  }
  return { entries, metadata: (metadata ?? {}) as Record<string, string> };
}

/** A JSON value cut for an error message. */
function clip(text: string | undefined, max = 40): string {
  const t = text ?? 'undefined';
  return t.length <= max ? t : `${t.slice(0, max - 1)}…`;
}

/**
 * The first key that appears twice in one object of a JSON text (JSON.parse silently keeps the last one, so a
 * header could show one tensor to one reader and another to the next). The text is known to be valid JSON.
 */
function firstDuplicateKey(text: string): string | undefined {
  const objects: Array<Set<string> | null> = []; // null: an array
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const top = objects[objects.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.has(key)) return key;
        top.add(key);
      }
      expectKey = false;
      i = j;
    } else if (c === '{') {
      objects.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      objects.push(null);
    } else if (c === '}' || c === ']') {
      objects.pop();
    } else if (c === ',') {
      expectKey = objects[objects.length - 1] !== null;
    }
  }
  return undefined;
}

function validateEntries(
  filePath: string,
  realPath: string,
  entries: Record<string, unknown>,
  dataStart: number,
  dataSize: number,
): Map<string, TensorEntry> {
  const tensors = new Map<string, TensorEntry>();
  const ranges: Array<[number, number, string]> = [];
  for (const [name, raw] of Object.entries(entries)) {
    const where = `${filePath}: tensor '${quoteName(name).slice(1, -1)}'`;
    if (raw === null || typeof raw !== 'object') throw new SafetensorsError(`${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(
        `${where}: unsupported dtype ${typeof dtype === 'string' ? quoteName(dtype, 24) : typeof dtype} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(
        `${where}: shape ${clip(JSON.stringify(shape))} is not a list of non-negative integers`,
      );
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw new SafetensorsError(
        `${where}: data_offsets ${clip(JSON.stringify(offsets))} is not a pair of non-negative integers`,
      );
    }
    const [begin, end] = offsets as [number, number];
    const expected = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype as DType];
    if (end < begin || end - begin !== expected) {
      throw new SafetensorsError(
        `${where}: byte range [${begin}, ${end}) holds ${end - begin} bytes but shape [${shape}] × ${dtype} needs ${expected}`,
      );
    }
    if (end > dataSize) {
      throw new SafetensorsError(
        `${where}: byte range [${begin}, ${end}) ends past the data (${dataSize} bytes): file truncated or header lies`,
      );
    }
    ranges.push([begin, end, name]);
    tensors.set(name, {
      name,
      dtype: dtype as DType,
      shape: shape as number[],
      file: realPath,
      offset: dataStart + begin,
      byteLength: expected,
    });
  }
  // Sorted by start, a range overlaps an earlier one exactly when it starts before the furthest end so far
  // (empty tensors occupy no bytes and overlap nothing).
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let furthest: [number, string] = [0, ''];
  for (const [begin, end, name] of ranges) {
    if (end === begin) continue;
    if (begin < furthest[0]) {
      throw new SafetensorsError(
        `${filePath}: tensors '${furthest[1]}' and '${name}' overlap (bytes ${begin}..${Math.min(end, furthest[0])})`,
      );
    }
    if (end > furthest[0]) furthest = [end, name];
  }
  return tensors;
}

/** A float tensor in memory, row-major. */
export interface FloatTensor {
  shape: number[];
  data: Float32Array;
}

/**
 * All tensors of a checkpoint folder, whatever the sharding. Names are the state-dict keys of the official code.
 */
export class Checkpoint {
  readonly dir: string;
  readonly files: SafetensorsFile[];
  private readonly entries = new Map<string, TensorEntry>();

  constructor(dir: string, files: SafetensorsFile[]) {
    this.dir = dir;
    this.files = files;
    for (const file of files) {
      for (const [name, entry] of file.tensors) {
        if (this.entries.has(name)) {
          throw new ModelLoadError(
            `${dir}: tensor '${name}' appears in two shards (${this.entries.get(name)!.file}, ${file.path})`,
          );
        }
        this.entries.set(name, entry);
      }
    }
  }

  /** Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`, or every `*.safetensors`. */
  static open(dir: string): Checkpoint {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      throw new ModelLoadError(`${dir}: not a directory`);
    }
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    if (fs.existsSync(indexPath)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(fs.readFileSync(indexPath, 'utf8')).weight_map;
      } catch (error) {
        throw new ModelLoadError(`${indexPath}: not valid JSON (${(error as Error).message})`);
      }
      if (!weightMap || typeof weightMap !== 'object') throw new ModelLoadError(`${indexPath}: no "weight_map" object`);
      const shardNames = [...new Set(Object.values(weightMap))].sort();
      // Every name is checked before any file is opened.
      const shardPaths = shardNames.map((shard) => {
        if (typeof shard !== 'string') throw new ModelLoadError(`${indexPath}: a weight_map value is not a file name`);
        const place = resolveInside(dir, shard);
        if ('refused' in place) throw new ModelLoadError(`${indexPath}: shard ${place.refused}`);
        return place.path;
      });
      const checkpoint = new Checkpoint(
        dir,
        shardPaths.map((file) => SafetensorsFile.open(file)),
      );
      for (const [name, shard] of Object.entries(weightMap)) {
        if (!checkpoint.entries.has(name))
          throw new ModelLoadError(`${indexPath}: '${name}' is listed in ${shard} but that shard does not hold it`);
      }
      return checkpoint;
    }
    const single = path.join(dir, 'model.safetensors');
    const names = fs.existsSync(single)
      ? ['model.safetensors']
      : fs
          .readdirSync(dir)
          .filter((f) => f.endsWith('.safetensors'))
          .sort();
    if (names.length === 0)
      throw new ModelLoadError(`${dir}: no .safetensors weights found (PyTorch .bin/.pth files are not supported)`);
    return new Checkpoint(
      dir,
      names.map((n) => {
        const place = resolveInside(dir, n);
        if ('refused' in place) throw new ModelLoadError(`${dir}: weights file ${place.refused}`);
        return SafetensorsFile.open(place.path);
      }),
    );
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  entry(name: string): TensorEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new ModelLoadError(`${this.dir}: the checkpoint has no tensor '${name}'`);
    return entry;
  }

  /** Raw bytes of a tensor. */
  readBytes(name: string): Buffer {
    const entry = this.entry(name);
    return readRange(entry.file, entry.offset, entry.byteLength);
  }

  /** A tensor as float32, converting from F16/BF16/F64. */
  readFloat32(name: string): FloatTensor {
    const entry = this.entry(name);
    return {
      shape: entry.shape,
      data: bytesToFloat32(this.readBytes(name), entry.dtype, `${this.dir}: tensor '${name}'`),
    };
  }

  /**
   * Chosen rows of a 2-D float tensor, as float32 (embedding look-ups without loading the table). Asynchronous: it
   * runs on every decode step, which must not block the event loop.
   */
  async readRowsFloat32(name: string, rows: readonly number[]): Promise<Float32Array> {
    const entry = this.entry(name);
    if (entry.shape.length !== 2) throw new ModelLoadError(`${this.dir}: tensor '${name}' is not 2-D`);
    const [rowCount, width] = entry.shape;
    for (const row of rows)
      if (!(Number.isInteger(row) && row >= 0 && row < rowCount))
        throw new ModelLoadError(`${this.dir}: row ${row} is outside tensor '${name}' (${rowCount} rows)`);
    const rowBytes = width * DTYPE_BYTES[entry.dtype];
    const out = new Float32Array(rows.length * width);
    const handle = await fsp.open(entry.file, 'r');
    try {
      const bytes = Buffer.allocUnsafe(rows.length * rowBytes);
      const reads = await Promise.all(
        rows.map((row, i) => handle.read(bytes, i * rowBytes, rowBytes, entry.offset + row * rowBytes)),
      );
      if (reads.some((r) => r.bytesRead !== rowBytes))
        throw new SafetensorsError(`${entry.file}: unexpected end of file in tensor '${name}'`);
      out.set(bytesToFloat32(bytes, entry.dtype, name));
    } finally {
      await handle.close();
    }
    return out;
  }
}

/** Reads a byte range in chunks (`readFileSync` stops at 2 GiB; single reads are capped too). */
export function readRange(file: string, offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  const fd = fs.openSync(file, 'r');
  try {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, out, done, Math.min(length - done, 1 << 30), offset + done);
      if (n === 0) throw new SafetensorsError(`${file}: unexpected end of file at byte ${offset + done}`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

export function bytesToFloat32(bytes: Uint8Array, dtype: DType, what: string): Float32Array {
  const count = bytes.byteLength / DTYPE_BYTES[dtype];
  // Copy into an aligned buffer first: safetensors offsets need not be aligned for the typed-array views.
  const aligned = new Uint8Array(bytes.byteLength);
  aligned.set(bytes);
  switch (dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, 0, count);
    case 'F64':
      return Float32Array.from(new Float64Array(aligned.buffer, 0, count));
    case 'BF16': {
      const halves = new Uint16Array(aligned.buffer, 0, count);
      const bits = new Uint32Array(count);
      for (let i = 0; i < count; i++) bits[i] = halves[i] << 16;
      return new Float32Array(bits.buffer);
    }
    case 'F16':
      return float16ToFloat32(new Uint16Array(aligned.buffer, 0, count));
    default:
      throw new ModelLoadError(`${what}: dtype ${dtype} is not a float type`);
  }
}

export function float16ToFloat32(halves: Uint16Array): Float32Array {
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) {
    const h = halves[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) out[i] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) out[i] = mantissa ? NaN : sign * Infinity;
    else out[i] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return out;
}

/** Writes tensors to a safetensors file (for `--out`, tests and caches), all-or-nothing. */
export function writeSafetensors(
  filePath: string,
  tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }>,
  metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const [name, tensor] of Object.entries(tensors)) {
    const bytes = new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
    header[name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  // Pad with spaces (valid JSON) so that the data starts 8-byte aligned.
  const headerBytes = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(headerBytes.length));
  writeFileAtomicSync(filePath, [length, headerBytes, ...chunks]);
}
