/**
 * Safetensors files and checkpoints (one file or sharded with `model.safetensors.index.json`).
 *
 * The header is validated before anything is trusted: its length, its JSON, every dtype and shape, every byte range
 * (inside the file, of exactly shape × dtype-size bytes, not overlapping another). Tensor data is read lazily from a
 * {@link ByteSource} (a file, memory, HTTP ranges), so a 30 GB checkpoint costs nothing until a tensor is asked for,
 * and graphs can point at the bytes in place (external data) instead of copying them.
 */
import type { ByteSource } from './bytes.js';
import { SafetensorsError, ModelLoadError } from './errors.js';
import { files } from './io.js';
import { locateJsonError, readJsonObject } from './json.js';
import { quoteName } from './names.js';
import { floatTensor, type FloatTensor } from './tensor.js';
import { nextTurn } from './platform.js';

/** Values converted to float32 between two turns of the event loop (a few milliseconds of work). */
const CONVERSION_SLICE = 1 << 22;

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
  /** Where the bytes are: the file (`source.name` is its real path in Node), memory, or a URL. */
  source: ByteSource;
  /** Byte offset of the data from the start of the source. */
  offset: number;
  byteLength: number;
}

/** The largest header we accept; real ones are a few hundred KB even for 70B models. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export class SafetensorsFile {
  private constructor(
    readonly source: ByteSource,
    readonly tensors: Map<string, TensorEntry>,
    readonly metadata: Record<string, string>,
  ) {}

  /** The name of the source: the real path of a local file. */
  get path(): string {
    return this.source.name;
  }

  /** Opens a file through the platform's file system (`fs` in Node). */
  static async open(filePath: string): Promise<SafetensorsFile> {
    return SafetensorsFile.read(await (await files.get()).open(filePath), filePath);
  }

  /** Reads and validates the header of a safetensors source; `shownAs` names it in errors (default: its name). */
  static async read(source: ByteSource, shownAs = source.name): Promise<SafetensorsFile> {
    const fileSize = source.size;
    if (fileSize < 8)
      throw new SafetensorsError(`${shownAs}: truncated file (${fileSize} bytes; a header needs at least 8)`);
    const lengthBytes = await source.read(0, 8);
    const headerLength = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, 8).getBigUint64(0, true);
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw new SafetensorsError(
        `${shownAs}: header length ${headerLength} is implausible (limit ${MAX_HEADER_BYTES} bytes)`,
      );
    }
    if (Number(headerLength) > fileSize - 8) {
      throw new SafetensorsError(
        `${shownAs}: truncated file: header says ${headerLength} bytes but only ${fileSize - 8} follow`,
      );
    }
    const headerBytes = await source.read(8, Number(headerLength));
    const dataStart = 8 + headerBytes.length;
    const parsed = parseHeader(shownAs, headerBytes);
    const tensors = validateEntries(shownAs, source, parsed.entries, dataStart, fileSize - dataStart);
    return new SafetensorsFile(source, tensors, parsed.metadata);
  }
}

function parseHeader(
  filePath: string,
  headerBytes: Uint8Array,
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
  } catch {
    // A file that is not a checkpoint must not be echoed (V8's message quotes the text): only the position is kept.
    const at = new TextEncoder().encode(text.slice(0, locateJsonError(text).offset)).length;
    throw new SafetensorsError(`${filePath}: header is not valid JSON (at byte ${8 + at}): not a safetensors file?`);
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
  source: ByteSource,
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
      source,
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
            `${dir}: tensor '${name}' appears in two shards (${this.entries.get(name)!.source.name}, ${file.path})`,
          );
        }
        this.entries.set(name, entry);
      }
    }
  }

  /** Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`, or every `*.safetensors`. */
  static async open(dir: string): Promise<Checkpoint> {
    const fs = await files.get();
    if (!(await fs.isDirectory(dir))) throw new ModelLoadError(`${dir}: not a directory`);
    const indexPath = fs.join(dir, 'model.safetensors.index.json');
    if (await fs.isFile(indexPath)) {
      const weightMap = (await readJsonObject(indexPath, { error: ModelLoadError })).weight_map;
      if (!weightMap || typeof weightMap !== 'object' || Array.isArray(weightMap))
        throw new ModelLoadError(`${indexPath}: no "weight_map" object`);
      const shardNames = [...new Set(Object.values(weightMap))].sort();
      // Every name is checked before any file is opened.
      const shardPaths = await Promise.all(
        shardNames.map(async (shard) => {
          if (typeof shard !== 'string')
            throw new ModelLoadError(`${indexPath}: a weight_map value is not a file name`);
          const place = await fs.resolveInside(dir, shard);
          if ('refused' in place) throw new ModelLoadError(`${indexPath}: shard ${place.refused}`);
          return place.path;
        }),
      );
      const checkpoint = new Checkpoint(dir, await Promise.all(shardPaths.map((file) => SafetensorsFile.open(file))));
      for (const [name, shard] of Object.entries(weightMap)) {
        if (!checkpoint.entries.has(name))
          throw new ModelLoadError(`${indexPath}: '${name}' is listed in ${shard} but that shard does not hold it`);
      }
      return checkpoint;
    }
    const names = (await fs.isFile(fs.join(dir, 'model.safetensors')))
      ? ['model.safetensors']
      : (await fs.list(dir)).filter((f) => f.endsWith('.safetensors')).sort();
    if (names.length === 0)
      throw new ModelLoadError(`${dir}: no .safetensors weights found (PyTorch .bin/.pth files are not supported)`);
    return new Checkpoint(
      dir,
      await Promise.all(
        names.map(async (n) => {
          const place = await fs.resolveInside(dir, n);
          if ('refused' in place) throw new ModelLoadError(`${dir}: weights file ${place.refused}`);
          return SafetensorsFile.open(place.path);
        }),
      ),
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

  /** Raw bytes of a tensor (asynchronous: a checkpoint behind HTTP ranges reads no other way). */
  readBytes(name: string): Promise<Uint8Array> {
    return readEntry(this.entry(name));
  }

  /**
   * A tensor as float32, converting from F16/BF16/F64 a slice at a time: converting a large tensor in one piece
   * (an embedding table of hundreds of millions of values) would stall the event loop for its whole length.
   */
  async readFloat32(name: string): Promise<FloatTensor> {
    const entry = this.entry(name);
    const bytes = await this.readBytes(name);
    const what = `${this.dir}: tensor '${name}'`;
    const width = DTYPE_BYTES[entry.dtype];
    if (bytes.byteLength <= CONVERSION_SLICE * width)
      return floatTensor(bytesToFloat32(bytes, entry.dtype, what), [...entry.shape]);
    const data = new Float32Array(bytes.byteLength / width);
    for (let start = 0; start < data.length; start += CONVERSION_SLICE) {
      const end = Math.min(data.length, start + CONVERSION_SLICE);
      data.set(bytesToFloat32(bytes.subarray(start * width, end * width), entry.dtype, what), start);
      await nextTurn();
    }
    return floatTensor(data, [...entry.shape]);
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
    const ranges = rows.map((row) => [entry.offset + row * rowBytes, rowBytes] as const);
    const source = entry.source;
    const parts = source.readRanges
      ? await source.readRanges(ranges)
      : await Promise.all(ranges.map(([offset, length]) => source.read(offset, length)));
    const bytes = new Uint8Array(rows.length * rowBytes);
    parts.forEach((part, i) => bytes.set(part, i * rowBytes));
    return bytesToFloat32(bytes, entry.dtype, name);
  }
}

/** A tensor's raw bytes. */
export function readEntry(entry: TensorEntry): Promise<Uint8Array> {
  return entry.source.read(entry.offset, entry.byteLength);
}

/** A tensor's raw bytes, read synchronously (local sources only). */
export function readEntrySync(entry: TensorEntry): Uint8Array {
  return syncSource(entry).readSync!(entry.offset, entry.byteLength);
}

function syncSource(entry: TensorEntry): ByteSource {
  if (!entry.source.readSync) {
    throw new ModelLoadError(
      `${entry.source.name}: tensor '${entry.name}' is needed synchronously, but this source reads asynchronously only`,
    );
  }
  return entry.source;
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

/** A safetensors file's bytes, in order: length, header (padded so the data starts 8-byte aligned), data. */
export function encodeSafetensors(
  tensors: Record<string, { dtype: DType; shape: number[]; data: ArrayBufferView }>,
  metadata?: Record<string, string>,
): Uint8Array[] {
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
  const json = new TextEncoder().encode(JSON.stringify(header));
  // Pad with spaces (valid JSON).
  const headerBytes = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  headerBytes.set(json);
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  return [length, headerBytes, ...chunks];
}
