/** A streaming POSIX/GNU tar reader (ustar, pax and GNU long names, base-256 sizes): one entry at a time. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

import { DatasetError, InternVLError } from '../../../core/errors.js';

export interface TarEntry {
  name: string;
  /** 'file', 'directory', 'symlink', 'link' or 'other' (devices, fifos…). */
  type: 'file' | 'directory' | 'symlink' | 'link' | 'other';
  size: number;
  /** The member's bytes (empty for non-files). */
  data: Buffer;
  /** Byte offset of the member's header in the archive, for error messages. */
  offset: number;
}

/** Pulls exact byte counts out of a chunked stream. */
class ChunkReader {
  private chunks: Buffer[] = [];
  private avail = 0;
  private done = false;
  position = 0;

  constructor(private readonly it: AsyncIterator<Buffer>) {}

  /** Returns n bytes, or fewer only at end of stream. */
  async read(n: number): Promise<Buffer> {
    while (this.avail < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length) {
        this.chunks.push(r.value);
        this.avail += r.value.length;
      }
    }
    const take = Math.min(n, this.avail);
    let out: Buffer;
    if (this.chunks.length && this.chunks[0].length >= take) {
      out = this.chunks[0].subarray(0, take);
      this.chunks[0] = this.chunks[0].subarray(take);
      if (this.chunks[0].length === 0) this.chunks.shift();
    } else {
      out = Buffer.allocUnsafe(take);
      let o = 0;
      while (o < take) {
        const c = this.chunks[0];
        const k = Math.min(c.length, take - o);
        c.copy(out, o, 0, k);
        o += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.avail -= take;
    this.position += take;
    return out;
  }

  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const b = await this.read(Math.min(left, 1 << 20));
      if (b.length === 0) break;
      left -= b.length;
    }
    return n - left;
  }
}

function cString(b: Buffer, start: number, len: number): string {
  const end = b.indexOf(0, start);
  return b.toString('utf8', start, end === -1 || end > start + len ? start + len : end);
}

/** Octal ASCII, or GNU base-256 when the top bit of the first byte is set. */
function tarNumber(b: Buffer, start: number, len: number): number {
  if (b[start] & 0x80) {
    let v = b[start] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[start + i];
    return v;
  }
  const s = b
    .toString('latin1', start, start + len)
    .replace(/[\0 ]+$/, '')
    .replace(/^[ ]+/, '')
    .replace(/\0.*$/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return NaN;
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = tarNumber(h, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : h[i];
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  // Some old tar writers summed signed chars.
  return stored === unsigned || stored === signed;
}

function parsePax(data: Buffer, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const sp = data.indexOf(0x20, pos);
    const len = sp === -1 ? NaN : Number(data.toString('latin1', pos, sp));
    if (!Number.isInteger(len) || len <= 0 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new DatasetError(`bad pax extended header in ${where}`);
    }
    const rec = data.toString('utf8', sp + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq <= 0) throw new DatasetError(`bad pax record "${rec.slice(0, 40)}" in ${where}`);
    out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

/**
 * Streams the members of a POSIX (ustar/pax) or GNU tar file: 512-byte blocks, pax `path`/`size` overrides
 * (per-member and global), GNU long names. Member data is read into memory one member at a time.
 */
export async function* readTar(path: string): AsyncGenerator<TarEntry> {
  let stream;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error('not a file');
    stream = createReadStream(path, { highWaterMark: 1 << 20 });
  } catch (e) {
    throw new DatasetError(
      `cannot read tar file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  const iter = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const r = new ChunkReader(iter);
  const globalPax: Record<string, string> = {};
  let pax: Record<string, string> | null = null;
  let longName: string | null = null;
  let sawAny = false;
  try {
    for (;;) {
      const offset = r.position;
      const h = await r.read(512);
      if (h.length === 0) {
        if (!sawAny) throw new DatasetError(`empty tar file: ${path}`);
        return; // EOF without the two zero blocks: tolerated, as GNU tar does
      }
      if (h.length < 512) throw new DatasetError(`truncated tar file ${path} (partial header at byte ${offset})`);
      if (h.every((b) => b === 0)) return;
      if (!checksumOk(h)) {
        throw new DatasetError(
          sawAny ? `corrupt tar header at byte ${offset} of ${path}` : `not a tar file (bad header checksum): ${path}`,
        );
      }
      sawAny = true;
      const typeflag = String.fromCharCode(h[156] || 0x30);
      let size = tarNumber(h, 124, 12);
      const magic = h.toString('latin1', 257, 263);
      let name = cString(h, 0, 100);
      if (magic === 'ustar\0') {
        const prefix = cString(h, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      const ext = { ...globalPax, ...(pax ?? {}) };
      if (ext.size !== undefined && typeflag !== 'x' && typeflag !== 'g') size = Number(ext.size);
      if (!Number.isFinite(size) || size < 0)
        throw new DatasetError(`bad member size in tar header at byte ${offset} of ${path}`);
      const padded = Math.ceil(size / 512) * 512;

      const readData = async (): Promise<Buffer> => {
        const data = await r.read(size);
        if (data.length < size)
          throw new DatasetError(`truncated tar file ${path} (member "${name}" at byte ${offset})`);
        const pad = padded - size;
        if (pad && (await r.skip(pad)) < pad)
          throw new DatasetError(`truncated tar file ${path} (member "${name}" at byte ${offset})`);
        return data;
      };

      if (typeflag === 'x' || typeflag === 'g') {
        const rec = parsePax(await readData(), `${path} at byte ${offset}`);
        if (typeflag === 'g') Object.assign(globalPax, rec);
        else pax = rec;
        continue;
      }
      if (typeflag === 'L' || typeflag === 'K') {
        const d = await readData();
        const end = d.indexOf(0);
        // Only long names matter here; long link targets ('K') are read and dropped.
        if (typeflag === 'L') longName = d.toString('utf8', 0, end === -1 ? d.length : end);
        continue;
      }
      if (longName !== null) name = longName;
      if (ext.path !== undefined) name = ext.path;
      pax = null;
      longName = null;
      let type: TarEntry['type'];
      switch (typeflag) {
        case '0':
        case '7':
          type = 'file';
          break;
        case '5':
          type = 'directory';
          break;
        case '2':
          type = 'symlink';
          break;
        case '1':
          type = 'link';
          break;
        default:
          type = 'other';
      }
      if (type === 'file') {
        yield { name, type, size, data: await readData(), offset };
      } else {
        // Links and directories carry no data; anything else with a size is skipped whole.
        if (padded && (await r.skip(padded)) < padded)
          throw new DatasetError(`truncated tar file ${path} (member "${name}" at byte ${offset})`);
        yield { name, type, size, data: Buffer.alloc(0), offset };
      }
    }
  } catch (e) {
    if (e instanceof InternVLError) throw e;
    throw new DatasetError(
      `cannot read tar file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  } finally {
    stream.destroy();
  }
}
