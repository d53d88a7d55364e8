/**
 * Random-access byte sources: what the safetensors reader reads from. A checkpoint can live in a local file (Node:
 * `core/node/files.ts`), in memory (an upload, a test), or behind HTTP range requests (a browser reading a
 * Hub-hosted checkpoint without downloading all of it). Every source reads asynchronously; the local ones also read
 * synchronously, which the weight-conversion path still needs.
 */
import { SafetensorsError } from './errors.js';

export interface ByteSource {
  /** What error messages name: a path or URL. Stable across runs (it is part of weight-cache keys). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Absolute path of a local file, symlinks resolved: onnxruntime-node maps weights from it in place. Unset for
   * sources that are not files.
   */
  readonly path?: string;
  /** Bytes [offset, offset + length); rejects with a SafetensorsError when the range is past the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** The same, synchronously, where the medium allows it (files, memory; not HTTP). */
  readSync?(offset: number, length: number): Uint8Array;
  /** Several ranges at once, where that is cheaper than one `read` each (a file opened once). */
  readRanges?(ranges: ReadonlyArray<readonly [offset: number, length: number]>): Promise<Uint8Array[]>;
}

export function checkRange(source: { name: string; size: number }, offset: number, length: number): void {
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0)) {
    throw new SafetensorsError(`${source.name}: invalid byte range (offset ${offset}, length ${length})`);
  }
  if (offset + length > source.size) {
    throw new SafetensorsError(
      `${source.name}: unexpected end of data: bytes [${offset}, ${offset + length}) of ${source.size}`,
    );
  }
}

/** Bytes already in memory (views are returned, not copies). */
export class MemoryByteSource implements ByteSource {
  readonly size: number;

  constructor(
    readonly name: string,
    private readonly bytes: Uint8Array,
  ) {
    this.size = bytes.byteLength;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return this.readSync(offset, length);
  }

  readSync(offset: number, length: number): Uint8Array {
    checkRange(this, offset, length);
    return this.bytes.subarray(offset, offset + length);
  }
}

export interface HttpByteSourceOptions {
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Extra request headers (e.g. `Authorization`). */
  headers?: Record<string, string>;
}

/**
 * A remote file read with HTTP range requests (`Range: bytes=a-b`, answered by `206 Partial Content`). The size
 * comes from the `Content-Range` of a first one-byte request. A server that ignores ranges is refused rather than
 * downloaded whole by accident.
 */
export class HttpByteSource implements ByteSource {
  private constructor(
    readonly name: string,
    readonly size: number,
    private readonly options: HttpByteSourceOptions,
  ) {}

  static async open(url: string, options: HttpByteSourceOptions = {}): Promise<HttpByteSource> {
    const response = await rangeRequest(url, 0, 0, options);
    const total = /\/(\d+)\s*$/.exec(response.headers.get('content-range') ?? '')?.[1];
    await response.body?.cancel();
    if (total === undefined) throw new SafetensorsError(`${url}: the server did not say the file size (Content-Range)`);
    return new HttpByteSource(url, Number(total), options);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this, offset, length);
    if (length === 0) return new Uint8Array(0);
    const response = await rangeRequest(this.name, offset, offset + length - 1, this.options);
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.byteLength !== length) {
      throw new SafetensorsError(
        `${this.name}: asked for ${length} bytes at ${offset}, the server sent ${bytes.byteLength}`,
      );
    }
    return bytes;
  }

  /**
   * Many small ranges (embedding rows, one per prompt token): equal and nearby ranges share a request, and at most
   * {@link MAX_REQUESTS} are in flight (a browser fails a fetch it has no connection for).
   */
  async readRanges(ranges: ReadonlyArray<readonly [offset: number, length: number]>): Promise<Uint8Array[]> {
    for (const [offset, length] of ranges) checkRange(this, offset, length);
    const order = ranges.map((_, i) => i).sort((a, b) => ranges[a][0] - ranges[b][0]);
    const runs: Array<{ offset: number; end: number; members: number[] }> = [];
    for (const i of order) {
      const [offset, length] = ranges[i];
      const last = runs[runs.length - 1];
      if (last && offset <= last.end + MERGE_GAP) {
        last.end = Math.max(last.end, offset + length);
        last.members.push(i);
      } else {
        runs.push({ offset, end: offset + length, members: [i] });
      }
    }
    const out = new Array<Uint8Array>(ranges.length);
    let next = 0;
    const worker = async () => {
      while (next < runs.length) {
        const run = runs[next++];
        const bytes = await this.read(run.offset, run.end - run.offset);
        for (const i of run.members)
          out[i] = bytes.subarray(ranges[i][0] - run.offset, ranges[i][0] - run.offset + ranges[i][1]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(MAX_REQUESTS, runs.length) }, worker));
    return out;
  }
}

/** Ranges closer than this are read in one request (the gap is read and dropped). */
const MERGE_GAP = 64 * 1024;
/** Range requests one `readRanges` keeps in flight. */
const MAX_REQUESTS = 6;

async function rangeRequest(url: string, first: number, last: number, options: HttpByteSourceOptions) {
  let response: Response;
  try {
    response = await (options.fetch ?? fetch)(url, {
      headers: { ...options.headers, Range: `bytes=${first}-${last}` },
    });
  } catch (error) {
    throw new SafetensorsError(`${url}: request failed (${(error as Error).message})`, { cause: error });
  }
  if (response.status !== 206) {
    await response.body?.cancel();
    throw new SafetensorsError(
      `${url}: HTTP ${response.status} to a range request (the server must answer 206 Partial Content)`,
    );
  }
  return response;
}
