/** Node implementations of the file seams: {@link FileSystem} over `fs`, and file {@link ByteSource}s. */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkRange, type ByteSource } from '../bytes.js';
import { SafetensorsError } from '../errors.js';
import type { FileSystem } from '../io.js';
import { writeFileAtomicSync } from './atomic_write.js';
import { resolveInside } from './contained_path.js';
import { encodeSafetensors } from '../safetensors.js';

/** A local file read with positioned reads (opened per read, so no descriptor outlives a call). */
export class FileByteSource implements ByteSource {
  readonly name: string;
  readonly path: string;

  constructor(
    realPath: string,
    readonly size: number,
  ) {
    this.name = realPath;
    this.path = realPath;
  }

  /** Resolves symlinks (the Hugging Face cache links blobs), so `path` is the file onnxruntime maps. */
  static open(filePath: string): FileByteSource {
    let realPath: string;
    let size: number;
    try {
      realPath = fs.realpathSync(filePath);
      const stat = fs.statSync(realPath);
      if (!stat.isFile())
        throw new SafetensorsError(`${filePath}: is a folder (or another non-file), not a safetensors file`);
      size = stat.size;
    } catch (error) {
      if (error instanceof SafetensorsError) throw error;
      throw new SafetensorsError(`${filePath}: cannot open (${(error as NodeJS.ErrnoException).code ?? error})`);
    }
    return new FileByteSource(realPath, size);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return (await this.readRanges([[offset, length]]))[0];
  }

  /** One open file for all ranges (an embedding look-up reads a row per token on every decode step). */
  async readRanges(ranges: ReadonlyArray<readonly [offset: number, length: number]>): Promise<Uint8Array[]> {
    for (const [offset, length] of ranges) checkRange(this, offset, length);
    const handle = await fsp.open(this.path, 'r');
    try {
      return await Promise.all(
        ranges.map(async ([offset, length]) => {
          const out = Buffer.allocUnsafe(length);
          let done = 0;
          while (done < length) {
            const { bytesRead } = await handle.read(out, done, Math.min(length - done, 1 << 30), offset + done);
            if (bytesRead === 0) throw endOfFile(this.path, offset + done);
            done += bytesRead;
          }
          return out;
        }),
      );
    } finally {
      await handle.close();
    }
  }

  /** Reads in chunks (`readFileSync` stops at 2 GiB; single reads are capped too). */
  readSync(offset: number, length: number): Uint8Array {
    checkRange(this, offset, length);
    const out = Buffer.allocUnsafe(length);
    const fd = fs.openSync(this.path, 'r');
    try {
      let done = 0;
      while (done < length) {
        const n = fs.readSync(fd, out, done, Math.min(length - done, 1 << 30), offset + done);
        if (n === 0) throw endOfFile(this.path, offset + done);
        done += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    return out;
  }
}

function endOfFile(file: string, at: number): SafetensorsError {
  return new SafetensorsError(`${file}: unexpected end of file at byte ${at}`);
}

export const nodeFileSystem: FileSystem = {
  join: (...parts) => path.join(...parts),
  fromUrl: (url) => fileURLToPath(url),
  isFile: async (p) => (await fsp.stat(p).catch(() => null))?.isFile() ?? false,
  isDirectory: async (p) => (await fsp.stat(p).catch(() => null))?.isDirectory() ?? false,
  list: (dir) => fsp.readdir(dir),
  readBytes: (p) => fsp.readFile(p),
  readText: (p) => fsp.readFile(p, 'utf8'),
  open: async (p) => FileByteSource.open(p),
  resolveInside: async (dir, name) => resolveInside(dir, name),
};

/** Writes tensors to a safetensors file (for `--out`, tests and benchmarks), all-or-nothing. */
export function writeSafetensors(
  filePath: string,
  tensors: Parameters<typeof encodeSafetensors>[0],
  metadata?: Record<string, string>,
): void {
  writeFileAtomicSync(filePath, encodeSafetensors(tensors, metadata));
}
