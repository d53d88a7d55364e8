/**
 * File reading for configs, tokenizers, chat templates and assets: the one place the library touches a file system.
 * Node reads with `fs` (`core/node/files.ts`, plugged in by default); a browser implements {@link FileSystem} over
 * fetch, OPFS or dropped files and plugs it in with `files.set(...)`.
 */
import type { ByteSource } from './bytes.js';
import type { ResolveModelOptions } from './hub.js';
import { Seam } from './platform.js';

export interface FileSystem {
  /** Joins path segments the way this file system spells paths (the result appears in error messages). */
  join(...parts: string[]): string;
  /** The path of a module-relative asset, given as a URL (`new URL('../../assets/x', import.meta.url).href`). */
  fromUrl(url: string): string;
  /** Whether `path` is an existing file (not a folder). */
  isFile(path: string): Promise<boolean>;
  isDirectory(path: string): Promise<boolean>;
  /** Names (not paths) of the entries of a folder. */
  list(dir: string): Promise<string[]>;
  /** A whole file. Rejects with an error whose `code` is `'ENOENT'` when it does not exist. */
  readBytes(path: string): Promise<Uint8Array>;
  /** A whole file as UTF-8 text; rejects like {@link readBytes}. */
  readText(path: string): Promise<string>;
  /** Random access to a (large) file, for safetensors. */
  open(path: string): Promise<ByteSource>;
  /**
   * `dir/name` for a file name read from a file (a shard listed in an index), or why it is refused: a name that is not
   * plain and relative, or (Node) whose real path leaves `dir`. A missing file is returned as is.
   */
  resolveInside(dir: string, name: string): Promise<{ path: string } | { refused: string }>;
}

export const files = new Seam<FileSystem>('file system', [import.meta.url, './node/files.js'], 'nodeFileSystem');

/** The error code of a failed read (`ENOENT`, `EISDIR`, …), if it has one. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Turns a Hugging Face Hub model id into a local folder, downloading into the shared cache (Node: `core/hub.ts`);
 * a folder path is returned as it is. A browser plugs in its own (or none: then only folders work).
 */
export type ModelResolver = (idOrPath: string, options?: ResolveModelOptions) => Promise<string>;

export const modelResolver = new Seam<ModelResolver>(
  'Hub model resolver',
  [import.meta.url, './hub.js'],
  'resolveModelDir',
);
