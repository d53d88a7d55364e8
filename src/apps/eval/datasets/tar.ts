/**
 * Tar members one at a time, on tar-stream (ustar, pax and GNU long names, base-256 sizes), with its failures
 * turned into one-line errors naming the file.
 */
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { extract, type Header } from 'tar-stream';

import { DatasetError } from '../../../core/errors.js';

export interface TarEntry {
  name: string;
  /** 'file', 'directory', 'symlink', 'link' or 'other' (devices, fifos…). */
  type: 'file' | 'directory' | 'symlink' | 'link' | 'other';
  size: number;
  /** The member's bytes (empty for non-files). */
  data: Buffer;
}

function entryType(type: Header['type']): TarEntry['type'] {
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
    case 'symlink':
    case 'link':
      return type;
    default:
      return 'other';
  }
}

/** Whether the 512 bytes at `offset` are all zero: an end-of-archive block. */
async function zeroBlockAt(path: string, offset: number): Promise<boolean> {
  const file = await open(path, 'r');
  try {
    const block = Buffer.alloc(512, 1);
    const { bytesRead } = await file.read(block, 0, 512, offset);
    return bytesRead === 512 && block.every((b) => b === 0);
  } finally {
    await file.close();
  }
}

/** Streams the members of a tar file; each file member's data is read into memory, one member at a time. */
export async function* readTar(path: string): AsyncGenerator<TarEntry> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    throw new DatasetError(`cannot read tar file ${path}: ${e.code ?? e.message}`);
  });
  if (!st.isFile()) throw new DatasetError(`cannot read tar file ${path}: not a file`);
  if (st.size === 0) throw new DatasetError(`empty tar file: ${path}`);
  const file = createReadStream(path, { highWaterMark: 1 << 20 });
  // Archives from old writers lack the ustar magic; the header checksum still tells a tar header from noise.
  // (An option of tar-stream's decoder that its type declarations leave out.)
  const members = extract({ allowUnknownFormat: true } as Parameters<typeof extract>[0]);
  file.on('error', (e) => members.destroy(e));
  file.pipe(members);
  let seen = 0;
  let name = '';
  // Where the header after the last member starts (its data rounded up to whole blocks).
  let nextHeader = 0;
  try {
    for await (const entry of members) {
      const { header } = entry;
      name = header.name;
      const type = entryType(header.type);
      const chunks: Buffer[] = [];
      // Every member's data must be consumed for the next header to come; only files keep theirs.
      for await (const chunk of entry) if (type === 'file') chunks.push(chunk as Buffer);
      seen++;
      nextHeader = (header as Header & { byteOffset: number }).byteOffset + Math.ceil(header.size / 512) * 512;
      yield { name, type, size: header.size, data: Buffer.concat(chunks) };
    }
  } catch (e) {
    if (e instanceof DatasetError) throw e;
    const message = (e as Error).message;
    if (/unexpected end/i.test(message))
      throw new DatasetError(`truncated tar file ${path}${name ? ` (in or after member "${name}")` : ''}`);
    if (/invalid tar header/i.test(message)) {
      // GNU tar stops at the first zero block; tar-stream reads on past it. What follows an end of archive is not
      // part of it.
      if (await zeroBlockAt(path, nextHeader)) return;
      throw new DatasetError(
        seen > 0
          ? `corrupt tar header after member "${name}" of ${path}`
          : `not a tar file (or its first header is corrupt): ${path}`,
      );
    }
    throw new DatasetError(`cannot read tar file ${path}: ${(e as NodeJS.ErrnoException).code ?? message}`);
  } finally {
    file.destroy();
    members.destroy();
  }
}
