/**
 * One blob of the cache (`blobs/{etag}`): downloaded into `{etag}.incomplete` under huggingface_hub's lock
 * (`.locks/models--org--name/{etag}.lock`), resumed with HTTP Range across attempts and runs, checked against its
 * sha256 (LFS files) and size, fsynced, then renamed into place, so a blob on disk is always complete.
 * A write that fails (full disk, permissions) is a StorageError, never retried as if the network had failed.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import { storageError } from '../node/atomic_write.js';
import { HubError, InternVLError } from '../errors.js';
import { acquireLock } from '../node/file_lock.js';
import { httpFailure, networkError, resolveUrl, send, TransientError, withRetries, type HubContext } from './http.js';

const SHA256_RE = /^[0-9a-f]{64}$/;
/** A lock file of another tool (huggingface_hub) counts as held while its download has written this recently. */
const FOREIGN_ACTIVE_MS = 60_000;

export interface RemoteFile {
  path: string;
  etag: string;
  size: number | undefined;
  /** X-Repo-Commit of the HEAD answer. */
  commit: string | undefined;
  /** Revision put in the download URL: the listed commit when known. */
  rev: string;
}

/** What a download reports: bytes of this file so far, and over every file of the call. */
export interface BlobProgress {
  bytesDone: number;
  fileDone: boolean;
  overallBytesDone: number;
}

export async function blobComplete(blobPath: string, size: number | undefined): Promise<boolean> {
  try {
    const st = await fs.stat(blobPath);
    return st.isFile() && (size === undefined || st.size === size);
  } catch {
    return false;
  }
}

async function fileSize(p: string): Promise<number | undefined> {
  try {
    return (await fs.stat(p)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw storageError(e, p, 'reading');
  }
}

async function hashFilePrefix(p: string, bytes: number): Promise<Hash> {
  const h = createHash('sha256');
  if (bytes > 0) {
    for await (const chunk of createReadStream(p, { start: 0, end: bytes - 1 })) h.update(chunk as Buffer);
  }
  return h;
}

/** A file-system step of the download, its failures reported as StorageErrors naming the file. */
async function disk<T>(file: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    throw storageError(e, file);
  }
}

export async function downloadBlob(
  ctx: HubContext,
  file: RemoteFile,
  blobPath: string,
  lockPath: string,
  overall: { done: number; total: number },
  onProgress: ((e: BlobProgress) => void) | undefined,
): Promise<void> {
  const part = `${blobPath}.incomplete`;
  const what = `cannot download ${file.path} from ${ctx.repoId}@${ctx.revision}`;
  const verifySha = SHA256_RE.test(file.etag);
  const release = await acquireLock(lockPath, {
    what: `the download of ${file.path} (${ctx.repoId})`,
    onWait: ctx.notice,
    foreignAlive: async () => {
      const st = await fs.stat(part).catch(() => undefined);
      return st !== undefined && Date.now() - st.mtimeMs < FOREIGN_ACTIVE_MS;
    },
  });
  try {
    // Bytes on disk and their running sha256, carried across attempts so a resume does not re-read the file.
    const state = { offset: 0, hash: undefined as Hash | undefined, counted: 0 };
    const emit = (fileDone: boolean) => {
      overall.done += state.offset - state.counted;
      state.counted = state.offset;
      onProgress?.({ bytesDone: state.offset, fileDone, overallBytesDone: overall.done });
    };
    // Another process may have finished it while we waited for the lock.
    if (await blobComplete(blobPath, file.size)) {
      state.offset = file.size ?? 0;
      emit(true);
      return;
    }
    await disk(blobPath, () => fs.rm(blobPath, { force: true }));

    const restart = async () => {
      await disk(part, () => fs.writeFile(part, ''));
      state.offset = 0;
      state.hash = verifySha ? createHash('sha256') : undefined;
    };

    await withRetries(
      ctx,
      what,
      async () => {
        const onDisk = (await fileSize(part)) ?? 0;
        if (file.size !== undefined && onDisk > file.size) {
          await restart();
        } else if (onDisk !== state.offset || (verifySha && !state.hash)) {
          state.offset = onDisk;
          state.hash = verifySha ? await hashFilePrefix(part, onDisk) : undefined;
        }
        emit(false);
        if (file.size !== undefined && state.offset === file.size) return;
        await fetchInto(ctx, file, part, state, restart, () => emit(false));
      },
      `; run again to resume from the ${part} kept so far`,
    );

    const size = (await fileSize(part)) ?? 0;
    if (file.size !== undefined && size !== file.size) {
      await fs.rm(part, { force: true });
      throw new HubError(`${what}: got ${size} bytes, expected ${file.size}; the partial file was deleted, run again`);
    }
    if (verifySha) {
      const digest = (state.hash ?? (await hashFilePrefix(part, size))).digest('hex');
      if (digest !== file.etag) {
        await fs.rm(part, { force: true });
        throw new HubError(
          `${what}: sha256 mismatch (expected ${file.etag}, got ${digest}); the corrupt download was deleted, run again`,
        );
      }
    }
    await disk(part, async () => {
      const fh = await fs.open(part, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    });
    await disk(blobPath, () => fs.rename(part, blobPath));
    emit(true);
  } finally {
    await release();
  }
}

/** One GET of the rest of the file, appended to `part`. Throws TransientError when worth another attempt. */
async function fetchInto(
  ctx: HubContext,
  file: RemoteFile,
  part: string,
  state: { offset: number; hash: Hash | undefined },
  restart: () => Promise<void>,
  progress: () => void,
): Promise<void> {
  const url = resolveUrl(ctx, file.rev, file.path);
  const what = `cannot download ${file.path} from ${ctx.repoId}@${ctx.revision}`;
  const resumeFrom = state.offset;
  const {
    res,
    url: finalUrl,
    idle,
  } = await send(ctx, url, 'GET', resumeFrom > 0 ? { Range: `bytes=${resumeFrom}-` } : {}, false);
  try {
    if (res.status === 416) {
      await res.body?.cancel().catch(() => {});
      await restart();
      throw new TransientError(`the server refused to resume at byte ${resumeFrom}`);
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw httpFailure(ctx, res, what);
    }
    if (res.status === 206) {
      const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== resumeFrom) {
        await res.body?.cancel().catch(() => {});
        await restart();
        throw new TransientError(`the server answered another range than bytes=${resumeFrom}-`);
      }
    } else if (resumeFrom > 0) {
      // 200 to a Range request: the server sends the whole file, so start over.
      await restart();
      progress();
    }
    if (!res.body) throw new TransientError('empty answer');

    const fh = await disk(part, () => fs.open(part, 'a'));
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        idle.touch();
        await disk(part, async () => {
          for (let done = 0; done < chunk.byteLength; ) done += (await fh.write(chunk, done)).bytesWritten;
        });
        state.hash?.update(chunk);
        state.offset += chunk.length;
        progress();
      }
    } catch (e) {
      // A disk that is full is not a network that failed: no retry, and the message says which file.
      if (e instanceof InternVLError) throw e;
      throw networkError(e, finalUrl, idle);
    } finally {
      await fh.close().catch(() => {});
    }
    if (file.size !== undefined && state.offset < file.size) {
      throw new TransientError(`the connection closed at byte ${state.offset} of ${file.size}`);
    }
  } finally {
    idle.stop();
  }
}
