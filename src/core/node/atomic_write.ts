/**
 * All-or-nothing file writes: bytes go to a temporary file in the target's folder (so the final rename stays on
 * one file system), every short write is continued, the file is fsynced, then renamed over the target. A reader
 * sees the old file or the complete new one, never a prefix; a full disk or a file-size limit is a StorageError
 * naming the file, and the temporary file is removed. Temporary files of processes that died (SIGKILL, power
 * loss) are removed by the next write of the same target.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StorageError } from '../errors.js';

export interface AtomicWriteOptions {
  /** Create the target's folder (and its parents) when missing; default false (`--out` in a missing folder is an error). */
  makeFolder?: boolean;
}

/** Temporary files older than this are taken as abandoned even when their owner cannot be checked (another host). */
const ABANDONED_MS = 24 * 3600_000;
/** Largest single write: bigger writes are split so that a short write is detected near where it happened. */
const MAX_WRITE = 1 << 30;

/** The StorageError for a failed file-system call on `file` (`verb` is 'writing' or 'reading'), or `error` itself when it is not one. */
export function storageError(error: unknown, file: string, verb = 'writing'): Error {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const message = (() => {
    switch (code) {
      case 'ENOSPC':
      case 'EDQUOT':
        return `no space left ${verb} ${file}`;
      case 'EFBIG':
        return `no space left ${verb} ${file} (the file-size limit was reached)`;
      case 'EACCES':
      case 'EPERM':
        return `cannot ${verb === 'writing' ? 'write' : 'read'} ${file}: permission denied`;
      case 'EROFS':
        return `cannot write ${file}: read-only file system`;
      case 'ENOENT':
        return verb === 'writing'
          ? `cannot write ${file}: the folder ${path.dirname(file)} does not exist`
          : `cannot read ${file}: no such file`;
      case 'ENOTDIR':
        return `cannot ${verb === 'writing' ? 'write' : 'read'} ${file}: a part of the path is a file, not a folder`;
      case 'EISDIR':
        return `cannot ${verb === 'writing' ? 'write' : 'read'} ${file}: it is a folder`;
      case 'EIO':
        return `input/output error ${verb} ${file} (a failing disk?)`;
      default:
        return undefined;
    }
  })();
  if (message === undefined || error instanceof StorageError) return error as Error;
  return new StorageError(message, { cause: error });
}

/** Refuses early (before hours of work) a target that cannot be written: a folder, or a file in a missing folder. */
export function checkWritableTarget(file: string): void {
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw storageError(error, file);
  }
  if (stat?.isDirectory()) throw new StorageError(`cannot write ${file}: it is a folder`);
  const dir = path.dirname(file);
  let dirStat: fs.Stats;
  try {
    dirStat = fs.statSync(dir);
  } catch (error) {
    throw storageError(error, file);
  }
  if (!dirStat.isDirectory()) throw new StorageError(`cannot write ${file}: ${dir} is not a folder`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (error) {
    throw storageError(error, file);
  }
}

const TEMP_RE = /^\.(.+)\.([^.]+)\.(\d+)\.[0-9a-f]{8}\.tmp$/;

function temporaryName(file: string): string {
  const host = os.hostname().replace(/[^A-Za-z0-9-]/g, '_') || 'host';
  return path.join(
    path.dirname(file),
    `.${path.basename(file)}.${host}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
}

/** Whether process `pid` on this host is alive (EPERM: alive, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the temporary files that dead processes left for `file`. */
function sweepAbandoned(file: string): void {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const host = os.hostname().replace(/[^A-Za-z0-9-]/g, '_') || 'host';
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = TEMP_RE.exec(name);
    if (!m || m[1] !== base) continue;
    const full = path.join(dir, name);
    try {
      const dead = m[2] === host ? !processAlive(Number(m[3])) : Date.now() - fs.statSync(full).mtimeMs > ABANDONED_MS;
      if (dead) fs.rmSync(full, { force: true });
    } catch {
      // Gone already (another process swept it).
    }
  }
}

function prepare(file: string, options: AtomicWriteOptions): string {
  if (options.makeFolder) {
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
    } catch (error) {
      throw storageError(error, file);
    }
  }
  checkWritableTarget(file);
  sweepAbandoned(file);
  return temporaryName(file);
}

function syncFolder(dir: string): void {
  // Makes the rename itself durable; some file systems refuse fsync on a folder, which is then harmless.
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {}
}

/** Writes `file` all-or-nothing from the given bytes (or string, as UTF-8). */
export function writeFileAtomicSync(
  file: string,
  data: string | Uint8Array | readonly Uint8Array[],
  options: AtomicWriteOptions = {},
): void {
  const temporary = prepare(file, options);
  const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  let fd: number | undefined;
  try {
    fd = fs.openSync(temporary, 'wx', 0o644);
    for (const chunk of chunks) {
      for (let done = 0; done < chunk.byteLength; ) {
        done += fs.writeSync(fd, chunk, done, Math.min(chunk.byteLength - done, MAX_WRITE));
      }
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(temporary, file);
  } catch (error) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(temporary, { force: true });
    throw storageError(error, file);
  }
  syncFolder(path.dirname(file));
}

/** Writes `file` all-or-nothing, without blocking the event loop for more than one chunk's write. */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const writer = await AtomicWriter.open(file, options);
  try {
    await writer.write(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
  } catch (error) {
    await writer.abort();
    throw error;
  }
  await writer.commit();
}

/** A file written sequentially, then committed (renamed into place) or aborted (removed). */
export class AtomicWriter {
  private written = 0;

  private constructor(
    readonly file: string,
    private readonly temporary: string,
    private readonly handle: fs.promises.FileHandle,
  ) {}

  static async open(file: string, options: AtomicWriteOptions = {}): Promise<AtomicWriter> {
    const temporary = prepare(file, options);
    try {
      return new AtomicWriter(file, temporary, await fs.promises.open(temporary, 'wx', 0o644));
    } catch (error) {
      throw storageError(error, file);
    }
  }

  /** Bytes written so far. */
  get size(): number {
    return this.written;
  }

  async write(bytes: Uint8Array): Promise<void> {
    try {
      for (let done = 0; done < bytes.byteLength; ) {
        const { bytesWritten } = await this.handle.write(bytes, done, Math.min(bytes.byteLength - done, MAX_WRITE));
        done += bytesWritten;
      }
    } catch (error) {
      throw storageError(error, this.file);
    }
    this.written += bytes.byteLength;
  }

  /** fsync, close, rename over the target. On failure the temporary file is removed. */
  async commit(): Promise<void> {
    try {
      await this.handle.sync();
      await this.handle.close();
      await fs.promises.rename(this.temporary, this.file);
    } catch (error) {
      await this.abort();
      throw storageError(error, this.file);
    }
    syncFolder(path.dirname(this.file));
  }

  async abort(): Promise<void> {
    await this.handle.close().catch(() => {});
    await fs.promises.rm(this.temporary, { force: true });
  }
}
