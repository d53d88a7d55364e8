/**
 * The search index's storage: one LanceDB table per (model, mode) in a database folder or object-store URI.
 *
 * Rows are keyed by `id` (a hash of the source URI). The table's schema metadata holds the stamp (model, its
 * fingerprint, mode, weight format, width), checked on every open so that vectors of two models or modes never
 * meet in one table. Every write is one LanceDB commit (atomic: a killed process leaves the previous version),
 * and writes that may race with other writers (workers) are merge-inserts on `id`, retried on commit conflicts.
 */
import * as lancedb from '@lancedb/lancedb';
import { createRequire } from 'node:module';
import type { FixedSizeList, Float32, Schema, Table } from 'apache-arrow';
import { IndexError, UsageError } from '../../core/errors.js';

// LanceDB is CommonJS and recognises Arrow data by `instanceof` against its (CommonJS) copy of apache-arrow: what
// is handed to it must be built from that copy, not from the ES module one an `import` gives.
const {
  Field,
  FixedSizeList: FixedSizeListType,
  Float32: Float32Type,
  Float64,
  Int32,
  Int64,
  makeData,
  RecordBatch,
  Schema: SchemaType,
  Struct,
  Table: TableType,
  Utf8,
  vectorFromArray,
} = createRequire(import.meta.url)('apache-arrow') as typeof import('apache-arrow');

/** What produced a table's vectors; two tables (or a table and a query) match only when all of it does. */
export interface Stamp {
  /** The model as given (folder or repo id), for loading it again at search time. */
  model: string;
  /** sha256 of the checkpoint's config.json and weight-file sizes: a renamed copy is the same model. */
  fingerprint: string;
  mode: 'C' | 'G';
  /** fp32 or int8. */
  weights: string;
  dim: number;
}

export interface IndexRow {
  id: string;
  /** Where the image comes from: an absolute path, or `shard.tar#member` for webdataset samples. */
  uri: string;
  sha256: string;
  size: number;
  /** Modification time in ms (of the file, or of the shard for tar members). */
  mtime: number;
  width: number;
  height: number;
  caption: string | null;
  /** Extra fields (a webdataset sample's json member), as JSON text. */
  metadata: string | null;
  /** Unit norm, `stamp.dim` values. */
  vector: Float32Array;
}

/** A row without its vector: what incremental indexing compares against. */
export type RowState = Pick<IndexRow, 'id' | 'uri' | 'sha256' | 'size' | 'mtime'>;

export interface SearchHit {
  id: string;
  uri: string;
  /** Cosine similarity (dot product of unit vectors). */
  score: number;
  width: number;
  height: number;
  caption: string | null;
  metadata: string | null;
}

export interface StoreOptions {
  /** LanceDB storage options for object stores (`aws_access_key_id`, `region`, `endpoint`…). */
  storageOptions?: Record<string, string>;
}

const STAMP_KEY = 'internvl.stamp';
/** The vector column's metadata key for what its ANN index was built as (`AnnIndexInfo`). */
const ANN_KEY = 'internvl.ann';
/** Exact search below this many rows; an ANN index (IVF_RQ) from here on. */
export const DEFAULT_ANN_THRESHOLD = 100_000;
/**
 * Rows per IVF partition of the ANN index. A probed partition's quantized codes are scanned whole, and one scan of
 * a million 8-bit codes costs about what picking and rescoring the candidates costs (docs/benchmarks.md, Search):
 * up to a million rows one partition, scanned exhaustively, is both the fastest and the most exact layout. Larger
 * tables get partitions of about this size.
 */
export const ANN_ROWS_PER_PARTITION = 1_000_000;
/** Bits per dimension of the index's RaBitQ codes: 8 keeps recall@10 ≥ 0.95 without rescoring many candidates. */
export const DEFAULT_ANN_BITS = 8;

/** What the vector column's ANN index was built as. */
export interface AnnIndexInfo {
  kind: 'IVF_RQ';
  partitions: number;
  bits: number;
  /** Rows in the table when it was built. */
  rows: number;
}

/** The partitions an index over `rows` rows gets. */
export function annPartitions(rows: number): number {
  return Math.max(1, Math.ceil(rows / ANN_ROWS_PER_PARTITION));
}

/** `clip_e2e` + `C` → `clip_e2e_C`: the table of a model folder or repo id in one mode. */
export function tableName(model: string, mode: string): string {
  const base =
    model
      .replace(/[/\\]+$/, '')
      .split(/[/\\]/)
      .pop() ?? 'model';
  return `${base.replace(/[^A-Za-z0-9_.-]+/g, '_') || 'model'}_${mode}`;
}

function schemaFor(stamp: Stamp): Schema {
  const text = (name: string, nullable = false) => new Field(name, new Utf8(), nullable);
  return new SchemaType(
    [
      text('id'),
      text('uri'),
      text('sha256'),
      new Field('size', new Int64(), false),
      new Field('mtime', new Float64(), false),
      new Field('width', new Int32(), false),
      new Field('height', new Int32(), false),
      text('caption', true),
      text('metadata', true),
      new Field('vector', new FixedSizeListType(stamp.dim, new Field('item', new Float32Type(), true)), false),
    ],
    new Map([[STAMP_KEY, JSON.stringify(stamp)]]),
  );
}

/** SQL string literal. */
export function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

function describe(stamp: Stamp): string {
  return `${stamp.model} mode ${stamp.mode} ${stamp.weights} (dim ${stamp.dim}, fingerprint ${stamp.fingerprint.slice(0, 12)})`;
}

export class Store {
  private constructor(
    readonly uri: string,
    readonly name: string,
    readonly stamp: Stamp,
    private readonly table: lancedb.Table,
    private readonly schema = schemaFor(stamp),
  ) {}

  /** Lists the tables of a database with their stamps. */
  static async list(uri: string, options: StoreOptions = {}): Promise<{ name: string; stamp: Stamp }[]> {
    const db = await connect(uri, options);
    const out = [];
    for (const name of await db.tableNames()) {
      const stamp = readStamp(await (await db.openTable(name)).schema());
      if (stamp) out.push({ name, stamp });
    }
    return out;
  }

  /**
   * Opens table `name`, creating it for `stamp` when missing (`create`), and refuses a table whose stamp differs
   * from `stamp` (when given).
   */
  static async open(
    uri: string,
    name: string,
    stamp: Stamp | null,
    options: StoreOptions & { create?: boolean } = {},
  ): Promise<Store> {
    const db = await connect(uri, options);
    let table: lancedb.Table;
    if ((await db.tableNames()).includes(name)) {
      table = await db.openTable(name);
    } else if (options.create && stamp) {
      try {
        table = await db.createEmptyTable(name, schemaFor(stamp), { existOk: true });
      } catch (error) {
        throw new IndexError(`${uri}: cannot create table ${name}: ${(error as Error).message}`, { cause: error });
      }
    } else {
      const names = await db.tableNames();
      throw new IndexError(
        `${uri}: no table ${name}${names.length ? ` (tables: ${names.join(', ')})` : ' (the database is empty)'}`,
      );
    }
    const found = readStamp(await table.schema());
    if (!found) throw new IndexError(`${uri}: table ${name} was not written by internvl (no stamp in its schema)`);
    if (stamp) {
      const differs = (['fingerprint', 'mode', 'weights', 'dim'] as const).filter((k) => found[k] !== stamp[k]);
      if (differs.length > 0) {
        throw new IndexError(
          `${uri}: table ${name} holds embeddings of ${describe(found)}, not of ${describe(stamp)} ` +
            `(${differs.join(', ')} differ); use another --db or --table`,
        );
      }
    }
    return new Store(uri, name, found, table);
  }

  async count(where?: string): Promise<number> {
    return this.table.countRows(where);
  }

  /** Every row's identity and file state, for incremental indexing. */
  async states(): Promise<RowState[]> {
    const rows = await this.table.query().select(['id', 'uri', 'sha256', 'size', 'mtime']).toArray();
    return rows.map((r) => ({
      id: r.id as string,
      uri: r.uri as string,
      sha256: r.sha256 as string,
      size: Number(r.size),
      mtime: r.mtime as number,
    }));
  }

  /** Rows by id (with vectors). */
  async get(ids: readonly string[]): Promise<IndexRow[]> {
    if (ids.length === 0) return [];
    const out: IndexRow[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const where = `id IN (${ids
        .slice(i, i + 500)
        .map(sqlString)
        .join(', ')})`;
      for (const r of await this.table.query().where(where).toArray()) out.push(toRow(r));
    }
    return out;
  }

  /** Appends rows whose ids are known to be absent (a cheap append, no join against the table). */
  async append(rows: readonly IndexRow[]): Promise<void> {
    if (rows.length > 0) await retry(() => this.table.add(toArrow(rows, this.schema)));
  }

  /** Inserts or replaces rows by id: safe when other writers may hold or add the same ids. */
  async upsert(rows: readonly IndexRow[]): Promise<void> {
    if (rows.length === 0) return;
    await retry(() =>
      this.table.mergeInsert('id').whenMatchedUpdateAll().whenNotMatchedInsertAll().execute(toArrow(rows, this.schema)),
    );
  }

  async delete(ids: readonly string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 500) {
      const where = `id IN (${ids
        .slice(i, i + 500)
        .map(sqlString)
        .join(', ')})`;
      await retry(() => this.table.delete(where));
    }
  }

  /** The vector column's index as LanceDB lists it, if any. */
  private async vectorIndex(): Promise<lancedb.IndexConfig | undefined> {
    return (await this.table.listIndices()).find((i) => i.columns.includes('vector'));
  }

  /** Whether the vector column has an ANN index. */
  async hasAnnIndex(): Promise<boolean> {
    return (await this.vectorIndex()) !== undefined;
  }

  /** The vector column's ANN index as built by `buildAnnIndex`; null without one, or for an index it did not build. */
  async annIndex(): Promise<AnnIndexInfo | null> {
    return this.builtAs(await this.vectorIndex());
  }

  /** What `index` was built as, when it is the one the vector column's metadata describes. */
  private async builtAs(index: lancedb.IndexConfig | undefined): Promise<AnnIndexInfo | null> {
    if (!index) return null;
    const text = (await this.table.schema()).fields.find((f) => f.name === 'vector')?.metadata.get(ANN_KEY);
    if (!text) return null;
    const info = JSON.parse(text) as AnnIndexInfo;
    // The metadata outlives an index replaced by other means: it counts only while it describes the index there.
    const bits = (index.indexDetails as { compression?: { num_bits?: number } } | undefined)?.compression?.num_bits;
    return index.indexType === 'IvfRq' && bits === info.bits ? info : null;
  }

  /**
   * Compacts the small fragments left by many commits, folds new rows into the ANN index, and builds the index
   * once the table has `annThreshold` rows. The index is rebuilt when the table has outgrown its partitions
   * twofold (appended rows join existing partitions, which then scan slower), and when it is not one this version
   * builds (an IVF_PQ index of an older internvl). Old versions are kept for a while (other readers may be on them).
   */
  async optimize(annThreshold = DEFAULT_ANN_THRESHOLD): Promise<{ annIndex: boolean; built: boolean }> {
    await retry(() => this.table.optimize());
    const rows = await this.table.countRows();
    const index = await this.vectorIndex();
    if (index) {
      const ann = await this.builtAs(index);
      if (ann && annPartitions(rows) < 2 * ann.partitions) return { annIndex: true, built: false };
    } else if (rows < annThreshold || rows < 256) return { annIndex: false, built: false };
    await this.buildAnnIndex({ rows });
    return { annIndex: true, built: true };
  }

  /**
   * IVF_RQ (RaBitQ codes of the rows' residuals) on dot (= cosine on unit vectors), `annPartitions(rows)`
   * partitions; what it was built as is recorded in the vector column's metadata.
   */
  async buildAnnIndex(options: { rows?: number; bits?: number } = {}): Promise<AnnIndexInfo> {
    const rows = options.rows ?? (await this.table.countRows());
    const info: AnnIndexInfo = {
      kind: 'IVF_RQ',
      partitions: annPartitions(rows),
      bits: options.bits ?? DEFAULT_ANN_BITS,
      rows,
    };
    await this.table.createIndex('vector', {
      config: lancedb.Index.ivfRq({ distanceType: 'dot', numPartitions: info.partitions, numBits: info.bits }),
      replace: true,
    });
    await retry(() =>
      this.table.updateFieldMetadata([{ path: 'vector', metadata: { [ANN_KEY]: JSON.stringify(info) } }]),
    );
    return info;
  }

  /**
   * ANN query parameters: partitions probed (every one, up to four: tables to about 7M rows are scanned whole),
   * and candidates rescored exactly per result (k × refineFactor). Rescoring makes the returned scores exact
   * rather than the codes' estimates; one candidate per result keeps recall@10 ≈ 0.95 at 1M rows, two give ≈ 0.996
   * at a fifth more time (docs/benchmarks.md, `bench search`).
   */
  static readonly QUERY_DEFAULTS = { nprobes: 4, refineFactor: 2 };

  /** The k nearest rows to a unit vector (exact below the ANN threshold, ANN + exact rescoring above). */
  async search(
    vector: Float32Array,
    options: { k?: number; where?: string; exact?: boolean; nprobes?: number; refineFactor?: number } = {},
  ): Promise<SearchHit[]> {
    if (vector.length !== this.stamp.dim)
      throw new UsageError(`query vector has ${vector.length} values, table ${this.name} holds ${this.stamp.dim}`);
    let query = this.table
      .vectorSearch(Array.from(vector))
      .distanceType('dot')
      .select(['id', 'uri', 'width', 'height', 'caption', 'metadata', '_distance'])
      .limit(options.k ?? 10);
    if (options.where) query = query.where(options.where);
    if (options.exact) query = query.bypassVectorIndex();
    else
      query = query
        .nprobes(options.nprobes ?? Store.QUERY_DEFAULTS.nprobes)
        .refineFactor(options.refineFactor ?? Store.QUERY_DEFAULTS.refineFactor);
    let rows: Record<string, unknown>[];
    try {
      rows = await query.toArray();
    } catch (error) {
      if (options.where && /sql|parse|filter|column|field/i.test((error as Error).message))
        throw new UsageError(`filter ${JSON.stringify(options.where)}: ${(error as Error).message.split('\n')[0]}`);
      throw error;
    }
    return rows.map((r) => ({
      id: r.id as string,
      uri: r.uri as string,
      // LanceDB's dot distance is 1 - a·b.
      score: 1 - (r._distance as number),
      width: r.width as number,
      height: r.height as number,
      caption: (r.caption as string | null) ?? null,
      metadata: (r.metadata as string | null) ?? null,
    }));
  }

  /** All rows (with vectors), sorted by id: for comparing two indexes. */
  async all(): Promise<IndexRow[]> {
    return (await this.table.query().toArray()).map(toRow).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

async function connect(uri: string, options: StoreOptions): Promise<lancedb.Connection> {
  try {
    // Other processes (workers, a running `index`) commit to the same table: every read looks for their versions.
    return await lancedb.connect(uri, { storageOptions: options.storageOptions, readConsistencyInterval: 0 });
  } catch (error) {
    throw new IndexError(`cannot open database ${uri}: ${(error as Error).message}`, { cause: error });
  }
}

function readStamp(schema: Schema): Stamp | null {
  const text = schema.metadata.get(STAMP_KEY);
  return text ? (JSON.parse(text) as Stamp) : null;
}

/** Rows as one Arrow record batch of the table's schema (the vectors copied once into one Float32Array). */
function toArrow(rows: readonly IndexRow[], schema: Schema): Table {
  const n = rows.length;
  const vectorType = schema.fields.find((f) => f.name === 'vector')!.type as FixedSizeList<Float32>;
  const dim = vectorType.listSize;
  const flat = new Float32Array(n * dim);
  rows.forEach((r, i) => {
    if (r.vector.length !== dim) throw new Error(`row ${r.id}: vector of ${r.vector.length} values, not ${dim}`);
    flat.set(r.vector, i * dim);
  });
  const text = (pick: (r: IndexRow) => string | null) => vectorFromArray(rows.map(pick), new Utf8()).data[0];
  const columns = {
    id: text((r) => r.id),
    uri: text((r) => r.uri),
    sha256: text((r) => r.sha256),
    size: makeData({ type: new Int64(), data: BigInt64Array.from(rows, (r) => BigInt(r.size)) }),
    mtime: makeData({ type: new Float64(), data: Float64Array.from(rows, (r) => r.mtime) }),
    width: makeData({ type: new Int32(), data: Int32Array.from(rows, (r) => r.width) }),
    height: makeData({ type: new Int32(), data: Int32Array.from(rows, (r) => r.height) }),
    caption: text((r) => r.caption),
    metadata: text((r) => r.metadata),
    vector: makeData({
      type: vectorType,
      length: n,
      nullCount: 0,
      child: makeData({ type: vectorType.children[0].type, data: flat }),
    }),
  };
  const children = schema.fields.map((f) => columns[f.name as keyof typeof columns]);
  return new TableType(new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, children })));
}

function toRow(r: Record<string, unknown>): IndexRow {
  const vector = r.vector as { toArray(): Float32Array };
  return {
    id: r.id as string,
    uri: r.uri as string,
    sha256: r.sha256 as string,
    size: Number(r.size),
    mtime: r.mtime as number,
    width: r.width as number,
    height: r.height as number,
    caption: (r.caption as string | null) ?? null,
    metadata: (r.metadata as string | null) ?? null,
    vector: Float32Array.from(vector.toArray()),
  };
}

/** LanceDB commits are optimistic: a concurrent writer's commit makes ours retry. */
async function retry<T>(write: () => Promise<T>, attempts = 20): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      const message = (error as Error).message ?? '';
      if (attempt >= attempts || !/conflict|retryable|concurrent|commit/i.test(message)) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 20 * 2 ** attempt * Math.random())));
    }
  }
}
