/**
 * The search index as a library: `openIndex(db, {model})` → `index.add(inputs)` → `index.search(query)`.
 *
 * Incremental indexing: a source whose URI, size and mtime match its row is skipped unread; otherwise its bytes
 * are hashed, and content already in the table (a moved or duplicated file) is copied from that row instead of
 * being embedded again. Rows are committed every few hundred images, so a killed run loses only the images since
 * the last commit, and a rerun skips everything committed. A row whose file is gone and whose content now lives
 * under another path was moved: it is deleted on every run (also a rerun after a kill between the two commits of
 * a move); other rows of gone files are deleted with `prune`.
 */
import fs from 'node:fs';
import { UsageError } from '../../core/errors.js';
import type { ClipMode } from '../../models/internvl_clip.js';
import type { SessionOptions } from '../../core/session.js';
import type { RgbImage } from '../../processing/image.js';
import { ClipEmbedder, decodeOrReason, modelStamp, vectorRows, type IndexWeights } from './embedder.js';
import { readSource, scanSources, sha256, sourceFile, sourceId, type SourceItem } from './sources.js';
import { DEFAULT_ANN_THRESHOLD, Store, tableName, type IndexRow, type RowState, type Stamp } from './store.js';

export interface OpenIndexOptions {
  /** The model that embeds (required to create a table; else the table's own model is used for queries). */
  model?: string;
  mode?: ClipMode;
  weights?: IndexWeights;
  /** Table name (default: the model folder's name and the mode, `InternVL-14B-224px_C`). */
  table?: string;
  /** LanceDB storage options for `s3://…` and other object-store URIs. */
  storageOptions?: Record<string, string>;
  session?: SessionOptions;
}

/** A batch of sources to embed and store, planned by `add`; done here or by queue workers. */
export interface PendingItem {
  id: string;
  uri: string;
  sha256: string;
  size: number;
  mtime: number;
  caption: string | null;
  metadata: string | null;
  /** The bytes, when the planner already holds them (not sent to workers). */
  bytes?: Uint8Array;
}

/** Embeds planned batches somewhere else (the BullMQ queue) instead of in this process. */
export interface EmbedSink {
  submit(items: PendingItem[]): Promise<void>;
  /** Waits for everything submitted; how many were embedded and how many were unreadable. */
  drain(): Promise<{ embedded: number; unreadable: number }>;
}

export interface AddOptions {
  /** Images per forward pass (default 8). */
  batchSize?: number;
  /** Delete rows whose files are gone. */
  prune?: boolean;
  /** Rows per commit (default 256): what a kill can lose. */
  commitRows?: number;
  /** Build the ANN index from this many rows (default 100 000). */
  annThreshold?: number;
  onProgress?: (done: number, total: number | undefined, note: string) => void;
  onWarning?: (message: string) => void;
  sink?: EmbedSink;
}

export interface IndexSummary {
  /** New rows, embedded (or copied from a duplicate file). */
  added: number;
  /** Rows whose file changed, embedded again. */
  updated: number;
  /** Rows whose file moved (same content under a new path; not embedded again). */
  moved: number;
  /** Sources whose row is up to date. */
  skipped: number;
  /** Sources that could not be read or decoded (warned about, not indexed). */
  unreadable: number;
  /** Rows deleted because their files are gone (`prune`). */
  removed: number;
  /** Images run through the model. */
  embedded: number;
  rows: number;
  seconds: number;
  /** Embedded images per second of the whole run. */
  imagesPerSecond: number;
  annIndex: boolean;
}

export type SearchQuery = string | { text: string } | { image: string | Uint8Array } | { vector: Float32Array };

export interface SearchResult {
  rank: number;
  id: string;
  /** The image's path (or `shard.tar#member`). */
  image: string;
  score: number;
  width: number;
  height: number;
  caption: string | null;
  metadata: unknown;
}

export interface SearchOptions {
  k?: number;
  /** SQL filter on the columns (`width > 500`, `uri LIKE '%/cats/%'`). */
  where?: string;
  /** Skip the ANN index: exact scores over every row. */
  exact?: boolean;
  /** ANN: candidates rescored exactly per result (`Store.QUERY_DEFAULTS` by default). */
  refineFactor?: number;
}

export class SearchIndex {
  private embedder: Promise<ClipEmbedder> | null = null;

  /** `embedder`: a model already loaded (a worker's); by default the table's model is loaded at first use. */
  constructor(
    readonly store: Store,
    private readonly session?: SessionOptions,
    embedder?: ClipEmbedder,
  ) {
    if (embedder) this.embedder = Promise.resolve(embedder);
  }

  get stamp(): Stamp {
    return this.store.stamp;
  }

  /** The model, loaded at first use (a rerun with nothing new never loads it). */
  model(): Promise<ClipEmbedder> {
    this.embedder ??= ClipEmbedder.load(this.store.stamp, this.session);
    return this.embedder;
  }

  async close(): Promise<void> {
    if (this.embedder) await (await this.embedder).release();
    this.embedder = null;
  }

  async add(inputs: readonly string[], options: AddOptions = {}): Promise<IndexSummary> {
    const start = performance.now();
    const scan = await scanSources(inputs);
    const states = await this.store.states();
    const byUri = new Map(states.map((s) => [s.uri, s]));
    const byHash = new Map<string, RowState>();
    for (const s of states) if (!byHash.has(s.sha256)) byHash.set(s.sha256, s);
    const summary = { added: 0, updated: 0, moved: 0, skipped: 0, unreadable: 0, removed: 0, embedded: 0 };
    const warn = (message: string) => {
      summary.unreadable++;
      options.onWarning?.(message);
    };
    const seen = new Set<string>();
    const seenHashes = new Set<string>();
    const copies: { from: string; item: PendingItem; replaces: boolean }[] = [];
    const writer = new RowWriter(this.store, options.commitRows ?? 256);
    let toEmbed: { item: PendingItem; replaces: boolean }[] = [];
    let done = 0;

    const flush = async () => {
      const batch = toEmbed;
      toEmbed = [];
      if (batch.length === 0) return;
      if (options.sink) {
        await options.sink.submit(batch.map((b) => ({ ...b.item, bytes: undefined })));
        return;
      }
      const rows = await this.embedItems(
        batch.map((b) => b.item),
        warn,
        options.batchSize,
      );
      for (const row of rows) {
        if (batch.find((b) => b.item.id === row.id)?.replaces) summary.updated++;
        else summary.added++;
      }
      summary.embedded += rows.length;
      await writer.write(rows);
    };

    for await (const source of scan.items()) {
      if (seen.has(source.uri)) continue;
      seen.add(source.uri);
      options.onProgress?.(++done, scan.total, `${summary.embedded} embedded`);
      const old = byUri.get(source.uri);
      if (old && old.size === source.size && old.mtime === source.mtime) {
        seenHashes.add(old.sha256);
        summary.skipped++;
        continue;
      }
      let bytes: Uint8Array;
      try {
        bytes = await source.read();
      } catch (error) {
        warn(`${source.uri}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
        continue;
      }
      const item = pendingItem(source, bytes);
      seenHashes.add(item.sha256);
      const twin = old?.sha256 === item.sha256 ? old : byHash.get(item.sha256);
      if (twin) {
        // Same content as a row we hold: reuse its vector (a touched, moved or duplicated file).
        copies.push({ from: twin.id, item, replaces: old !== undefined });
        if (twin === old) summary.skipped++;
        continue;
      }
      toEmbed.push({ item, replaces: old !== undefined });
      if (toEmbed.length >= (options.batchSize ?? 8) * 4) await flush();
    }
    await flush();

    // Rows of gone files whose content is still here under another name moved; the others go with prune.
    const gone = states.filter((s) => !seen.has(s.uri) && isGone(s.uri, scan.shards));
    const moved = new Set(gone.filter((s) => seenHashes.has(s.sha256)).map((s) => s.id));
    const twins = new Map((await this.store.get([...new Set(copies.map((c) => c.from))])).map((r) => [r.id, r]));
    const copied = copies.map(({ from, item }) => ({ ...twins.get(from)!, ...withoutBytes(item) }));
    for (const { from, item, replaces } of copies) {
      if (from === item.id) continue;
      if (moved.has(from)) summary.moved++;
      else if (replaces) summary.updated++;
      else summary.added++;
    }
    await writer.write(copied);
    await writer.close();
    if (options.sink) {
      const remote = await options.sink.drain();
      summary.embedded += remote.embedded;
      summary.added += remote.embedded;
      summary.unreadable += remote.unreadable;
    }
    await this.store.delete([...moved]);
    if (options.prune) {
      const removed = gone.filter((s) => !moved.has(s.id)).map((s) => s.id);
      await this.store.delete(removed);
      summary.removed = removed.length;
    }
    const { annIndex } = await this.store.optimize(options.annThreshold ?? DEFAULT_ANN_THRESHOLD);
    const seconds = (performance.now() - start) / 1000;
    return {
      ...summary,
      rows: await this.store.count(),
      seconds,
      imagesPerSecond: summary.embedded / seconds,
      annIndex,
    };
  }

  /** Decodes and embeds items into rows; unreadable ones are warned about and left out. */
  async embedItems(
    items: readonly PendingItem[],
    warn: (message: string) => void,
    batchSize?: number,
  ): Promise<IndexRow[]> {
    const decoded: { item: PendingItem; image: RgbImage }[] = [];
    for (const item of items) {
      const result = await decodeOrReason(async () => item.bytes ?? (await readSource(item.uri)), item.uri);
      if ('reason' in result) warn(result.reason);
      else decoded.push({ item, image: result.image });
    }
    if (decoded.length === 0) return [];
    const model = await this.model();
    const vectors = vectorRows(
      await model.images(
        decoded.map((d) => d.image),
        batchSize,
      ),
    );
    return decoded.map(({ item, image }, i) => ({
      ...withoutBytes(item),
      width: image.width,
      height: image.height,
      vector: vectors[i],
    }));
  }

  async search(query: SearchQuery, options: SearchOptions = {}): Promise<SearchResult[]> {
    const k = options.k ?? 10;
    if (!Number.isInteger(k) || k < 1) throw new UsageError(`search: k must be a positive integer, got ${k}`);
    const vector = await this.queryVector(typeof query === 'string' ? { text: query } : query);
    const { where, exact, refineFactor } = options;
    if (refineFactor !== undefined && !(Number.isInteger(refineFactor) && refineFactor >= 1))
      throw new UsageError(`search: refineFactor must be a positive integer, got ${refineFactor}`);
    const hits = await this.store.search(vector, { k, where, exact, refineFactor });
    return hits.map((h, i) => ({
      rank: i + 1,
      id: h.id,
      image: h.uri,
      score: h.score,
      width: h.width,
      height: h.height,
      caption: h.caption,
      metadata: h.metadata === null ? null : JSON.parse(h.metadata),
    }));
  }

  private async queryVector(query: Exclude<SearchQuery, string>): Promise<Float32Array> {
    if ('vector' in query) return query.vector;
    const model = await this.model();
    if ('text' in query) {
      if (!query.text.trim()) throw new UsageError('search: the text query is empty');
      return (await model.texts([query.text])).data;
    }
    const name = typeof query.image === 'string' ? query.image : '<query image>';
    const source = query.image;
    const result = await decodeOrReason(
      async () => (typeof source === 'string' ? fs.readFileSync(source) : source),
      name,
    );
    if ('reason' in result) throw new UsageError(`search: ${result.reason}`);
    return (await model.images([result.image])).data;
  }
}

/** Opens (creating when a model is given) the table of a database folder or object-store URI. */
export async function openIndex(db: string, options: OpenIndexOptions = {}): Promise<SearchIndex> {
  const storeOptions = { storageOptions: options.storageOptions };
  if (options.model !== undefined) {
    const stamp = await modelStamp(options.model, options);
    const name = options.table ?? tableName(options.model, stamp.mode);
    return new SearchIndex(await Store.open(db, name, stamp, { ...storeOptions, create: true }), options.session);
  }
  let name = options.table;
  if (name === undefined) {
    const tables = await Store.list(db, storeOptions);
    const matching = tables.filter((t) => options.mode === undefined || t.stamp.mode === options.mode);
    if (matching.length !== 1) {
      throw new UsageError(
        matching.length === 0
          ? `${db}: no index table${options.mode ? ` for mode ${options.mode}` : ''} (run 'internvl index' first)`
          : `${db} holds several tables (${matching.map((t) => t.name).join(', ')}): choose one with --table or --mode`,
      );
    }
    name = matching[0].name;
  }
  return new SearchIndex(await Store.open(db, name, null, storeOptions), options.session);
}

function pendingItem(source: SourceItem, bytes: Uint8Array): PendingItem {
  return {
    id: sourceId(source.uri),
    uri: source.uri,
    sha256: sha256(bytes),
    size: bytes.length,
    mtime: source.mtime,
    caption: source.caption,
    metadata: source.metadata,
    bytes,
  };
}

function withoutBytes(item: PendingItem): Omit<PendingItem, 'bytes'> {
  const { bytes: _, ...rest } = item;
  return rest;
}

/** A row's file is gone when it no longer exists, or (a shard member) its shard was read and lacks it. */
function isGone(uri: string, scannedShards: Set<string>): boolean {
  const file = sourceFile(uri);
  if (file !== uri && scannedShards.has(file)) return true;
  return !fs.existsSync(file);
}

/** Buffers rows into commits of `commitRows` (one LanceDB version each). */
class RowWriter {
  private rows: IndexRow[] = [];

  constructor(
    private readonly store: Store,
    private readonly commitRows: number,
  ) {}

  async write(rows: readonly IndexRow[]): Promise<void> {
    this.rows.push(...rows);
    while (this.rows.length >= this.commitRows) await this.store.upsert(this.rows.splice(0, this.commitRows));
  }

  async close(): Promise<void> {
    await this.store.upsert(this.rows.splice(0));
  }
}
