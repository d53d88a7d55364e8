/**
 * The {@link WeightStore} of a browser: the Origin Private File System. One entry is two files, `<key>.bin` and
 * `<key>.sha256`; keys and seals are described in weight_store.ts.
 */
import type { WeightStore } from './weight_store.js';

export interface OpfsWeightStoreOptions {
  /** Folder in the origin's private file system (default `internvl-ts-weights`). */
  folder?: string;
  /** The fetch used to ask servers for a source's identity (HEAD). */
  fetch?: typeof fetch;
  headers?: Record<string, string>;
}

/** A {@link WeightStore} in the Origin Private File System (`navigator.storage.getDirectory()`). */
export function opfsWeightStore(options: OpfsWeightStoreOptions = {}): WeightStore {
  const identities = new Map<string, Promise<string>>();
  const identity = (source: string) => {
    let known = identities.get(source);
    if (!known) {
      known = sourceIdentity(source, options);
      identities.set(source, known);
    }
    return known;
  };
  let folder: Promise<FileSystemDirectoryHandle> | undefined;
  const root = () => {
    folder ??= navigator.storage
      .getDirectory()
      .then((opfs) => opfs.getDirectoryHandle(options.folder ?? 'internvl-ts-weights', { create: true }));
    return folder;
  };
  return {
    async get(request) {
      const sources = await Promise.all((request.sources ?? []).map(identity));
      const key = await sha256Hex(new TextEncoder().encode([request.cacheKey, ...sources].join('\n')));
      const dir = await root();
      const stored = await readEntry(dir, key);
      if (stored) return { bytes: stored, stored: true };
      const bytes = await request.produce();
      // A full store (the origin's quota) costs the next load a conversion, not this load its model.
      await writeEntry(dir, key, bytes).catch(() => dir.removeEntry(`${key}.bin`).catch(() => undefined));
      return { bytes, stored: false };
    },
  };
}

/** What identifies a source's content: its server's ETag, size and Last-Modified (HEAD), or its name alone. */
async function sourceIdentity(source: string, options: OpfsWeightStoreOptions): Promise<string> {
  if (!/^(https?|blob):/.test(source) && !source.startsWith('/')) return source;
  const response = await (options.fetch ?? fetch)(source, { method: 'HEAD', headers: options.headers }).catch(
    () => null,
  );
  if (!response?.ok) return source;
  const h = (name: string) => response.headers.get(name) ?? '';
  // The Hub answers `resolve/` URLs with the LFS object's sha256 as (linked) ETag.
  return [source, h('x-linked-etag') || h('etag'), h('x-linked-size') || h('content-length'), h('last-modified')].join(
    ' ',
  );
}

/** An entry's bytes if both files are there and the data matches its seal; null otherwise. */
async function readEntry(dir: FileSystemDirectoryHandle, key: string): Promise<Uint8Array | null> {
  try {
    const seal = await (await (await dir.getFileHandle(`${key}.sha256`)).getFile()).text();
    const bytes = new Uint8Array(await (await (await dir.getFileHandle(`${key}.bin`)).getFile()).arrayBuffer());
    return (await sha256Hex(bytes)) === seal ? bytes : null;
  } catch {
    return null;
  }
}

/** The data first, its seal last: an interrupted write leaves no seal, so the entry is rebuilt. */
async function writeEntry(dir: FileSystemDirectoryHandle, key: string, bytes: Uint8Array): Promise<void> {
  await dir.removeEntry(`${key}.sha256`).catch(() => undefined);
  for (const [name, data] of [
    [`${key}.bin`, bytes],
    [`${key}.sha256`, new TextEncoder().encode(await sha256Hex(bytes))],
  ] as const) {
    const writable = await (await dir.getFileHandle(name, { create: true })).createWritable();
    await writable.write(data as Uint8Array<ArrayBuffer>);
    await writable.close();
  }
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}
