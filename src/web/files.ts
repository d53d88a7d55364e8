/**
 * The browser's file system: paths are URLs and every read is a fetch. A model folder is a base URL (a Hugging Face
 * `…/resolve/<revision>/` URL or any static server); whole files (configs, tokenizers) are fetched, safetensors files
 * are read with range requests (`HttpByteSource`), so a checkpoint is never downloaded whole into JavaScript memory.
 *
 * HTTP has no folders. A URL is taken for a folder unless it answers as a file, and a folder can be listed only when
 * the server sends a listing (`internvl`'s own server does, marked by {@link LISTING_HEADER}); checkpoints therefore
 * need `model.safetensors` or `model.safetensors.index.json`, which is how the Hub publishes them.
 */
import { HttpByteSource, type HttpByteSourceOptions } from '../core/bytes.js';
import { ModelLoadError } from '../core/errors.js';
import type { FileSystem } from '../core/io.js';

/** Response header by which a server marks a JSON folder listing (an array of entry names). */
export const LISTING_HEADER = 'x-internvl-listing';

/** A {@link FileSystem} over fetch (`options.fetch` and `headers`, e.g. a Hub token, apply to every request). */
export function fetchFileSystem(options: HttpByteSourceOptions = {}): FileSystem {
  const request = async (url: string, method: 'GET' | 'HEAD'): Promise<Response> => {
    try {
      return await (options.fetch ?? fetch)(url, { method, headers: options.headers });
    } catch (error) {
      throw new ModelLoadError(`${url}: request failed (${(error as Error).message})`, { cause: error });
    }
  };
  const head = async (url: string) => {
    const response = await request(url, 'HEAD');
    return { ok: response.ok, listing: response.headers.has(LISTING_HEADER) };
  };
  const get = async (url: string): Promise<Response> => {
    const response = await request(url, 'GET');
    if (response.ok && !response.headers.has(LISTING_HEADER)) return response;
    await response.body?.cancel();
    const code = response.status === 404 ? 'ENOENT' : response.ok ? 'EISDIR' : 'EIO';
    throw Object.assign(new ModelLoadError(`${url}: HTTP ${response.status}`), { code });
  };
  return {
    join: joinUrl,
    fromUrl: (url) => url,
    isFile: async (url) => {
      const { ok, listing } = await head(url);
      return ok && !listing;
    },
    isDirectory: async (url) => {
      const { ok, listing } = await head(url);
      return listing || !ok;
    },
    list: async (url) => {
      const response = await request(url, 'GET');
      if (!response.headers.has(LISTING_HEADER)) {
        await response.body?.cancel();
        throw new ModelLoadError(
          `${url}: the server does not list folders; a checkpoint there needs model.safetensors or model.safetensors.index.json`,
        );
      }
      return (await response.json()) as string[];
    },
    readBytes: async (url) => new Uint8Array(await (await get(url)).arrayBuffer()),
    readText: async (url) => (await get(url)).text(),
    open: (url) => HttpByteSource.open(url, options),
    resolveInside: async (dir, name) => {
      const plain = name !== '' && !/^[a-z][a-z0-9+.-]*:|^\/|\\|[?#]/i.test(name);
      if (!plain || name.split('/').some((part) => part === '..' || part === '.' || part === '')) {
        return { refused: `'${name}' is not a plain relative file name` };
      }
      return { path: joinUrl(dir, name) };
    },
  };
}

/** `a/` + `b` → `a/b`: one slash between the parts, whatever each ends or starts with. */
export function joinUrl(...parts: string[]): string {
  return parts
    .filter((part) => part !== '')
    .reduce((joined, part) => `${joined.replace(/\/+$/, '')}/${part.replace(/^\/+/, '')}`);
}
