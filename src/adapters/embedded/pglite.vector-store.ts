/**
 * VectorStore on the embedded database: one pgvector table per collection, an IVFFlat index with
 * cosine distance that the store builds and rebuilds as a table grows, and a b-tree on event_id for
 * the event filter.
 *
 * Why IVFFlat and not HNSW. PGlite runs PostgreSQL single-threaded in WASM; an HNSW insertion walks
 * and rewrites the graph (hundreds of distances, dozens of index pages) and cost ~10 ms a row at 100k
 * stored (~100 rows/s): a crowd photo spent a second storing its faces. An IVFFlat insertion compares
 * the vector with the lists' centres and appends it to one page. The price: IVFFlat needs data to
 * place its centres, so
 * - a table below ANN_MIN_ROWS rows has no vector index, and every search is exact;
 * - at ANN_MIN_ROWS the store builds the index with one list per ROWS_PER_LIST rows, and builds it
 *   again each time the table has doubled since (rows placed after a build go to the nearest centre,
 *   which stays right while the data keeps its distribution). A build runs right after the upsert
 *   that crossed the line, in that upsert's call, in its own transaction (DROP + CREATE: a crash
 *   during it leaves the previous index); PGlite does nothing else meanwhile, so that call and the
 *   store stall for the build (measured in bench/stores.bench.ts). Started on a table without its
 *   index (or one migrated from HNSW), init() builds it.
 *
 * A filtered IVFFlat search is approximate twice over: only `ivfflat.probes` lists are scanned, and
 * the event filter is applied to their rows afterwards. Searches therefore run with pgvector's
 * iterative scan (`relaxed_order`: more lists are scanned until LIMIT rows pass the filter; the hits
 * are sorted here), and a search that still comes back short is run again without the vector index
 * (event index + exact distances), which is cheap exactly then: the event has few rows.
 *
 * The plan is chosen here, not by the planner. With the query vectors and limits as parameters of
 * a LATERAL join, PostgreSQL expects 500 rows per query and picks the exact plan (bitmap scan on the
 * event, sort by distance), whose cost grows with the event (every row's vector read, from disk once
 * the table outgrows PGlite's 128 MB of shared buffers: ~1 s for 25,000 rows of an event at 100k
 * stored, on a loaded machine). So: events of at most EXACT_SEARCH_MAX_ROWS rows (counted on the event index first) are
 * searched exactly, where that is cheapest and always complete; larger ones through the IVFFlat
 * index (sorting disabled, so the planner takes the index).
 *
 * Embedding spaces. The table `embedding_space` records which embedder made the vectors (see
 * embedding-space.ts). A namespace is a PostgreSQL schema, `vectors_<namespace>`, holding its own
 * tables (the same migrations, recorded under the scope `vectors:<namespace>`); the default set is
 * in `public`. The match store's tables are untouched by either.
 */
import { ConfigError, InvalidArgumentError } from '../../domain/errors.js';
import type {
  Collection,
  EmbedderIdentity,
  SearchQuery,
  VectorHit,
  VectorRecord,
  VectorStore,
  VectorStoreInitOptions,
} from '../../ports/vector-store.js';
import { applyMigrations } from '../sql/migrations.js';
import { checkEmbedder, checkNamespace, embedderMismatch, sameEmbedder } from '../embedding-space.js';
import { encodeCopyBinary, type CopyField } from './copy-binary.js';
import { readMigrations, VECTOR_MIGRATIONS_DIR, type PgliteDatabase, type PgliteTransaction, type SqlTransaction } from './pglite.database.js';

/** pgvector's index limit for `vector`. */
const MAX_DIMENSION = 2000;

/** Rows of a table at which its IVFFlat index is first built; below, every search is exact. */
export const ANN_MIN_ROWS = 10_000;
/** One IVFFlat list per this many rows at a build (pgvector's advice: rows / 1000 up to 1M rows). */
export const ROWS_PER_LIST = 1_000;
/**
 * Lists scanned per search: PROBE_SHARE of the lists, at least MIN_PROBES. Measured at 100k stored
 * (100 lists) with uniformly random 512-d vectors (the hard case) and a query at cosine 0.9 to its
 * target: top-1 57% / 83% / 91% / 97% / 100% at 1 / 3 / 5 / 10 / 20 probes.
 */
const PROBE_SHARE = 0.2;
const MIN_PROBES = 10;

/**
 * Statement sizes: PGlite runs a statement synchronously on the thread that holds it, so these bound
 * how long one holds it (the service's event loop until session 11; since, the database's own thread,
 * ./pglite.thread.ts, where they bound how long another call waits). Each statement also costs a fixed share (parse, plan, the WASM round trip) that rows
 * amortise: measured at 100k stored without a vector index, 1 / 4 / 50 / 200 rows a statement
 * wrote 105 / 215 / 270 / 301 rows/s (a loaded machine: ratios, not rates). With vectors as text a
 * row cost ~1-2 ms, and 50 rows a statement held the event loop ~100 ms (/healthz under load 58 ms
 * against the e2e's < 50), so statements were cut to 8 rows. Loaded in binary (the staging tables), a row costs
 * ~0.5 ms at 100k stored with the IVFFlat index (~1,800 rows/s in 50-row transactions against ~580
 * for 8 text rows, in one sitting), so 32 rows keep a statement near 15 ms.
 */
const UPSERT_ROWS_PER_STATEMENT = 32;
/** Rows per binary COPY into the staging table (no index there, ~0.05 ms a row). */
const COPY_ROWS_PER_STATEMENT = 256;
/**
 * Upserts reach their table through the namespace's `vector_upserts` (migration 0004): a binary COPY
 * fills it (vectors in pgvector's binary form, no text parsing: ./copy-binary.ts), INSERT ... SELECT
 * ... ON CONFLICT moves the rows, and the same transaction empties it; searchMany()'s query vectors
 * go through `vector_queries` the same way. So no committed row is ever in them, whatever fails.
 * Emptied by DELETE (PGlite runs no autovacuum, and the dead rows stay), and by TRUNCATE once about
 * this many rows went through one since it was last truncated (and at init): ending a 4-row
 * transaction with TRUNCATE took ~2.5 ms longer than ending it with DELETE (6.4-6.8 against ~4 ms).
 */
const STAGING_TRUNCATE_ROWS = 2048;
/** Up to this many rows in an event, exact distances beat a filtered index scan (~7 µs a row in WASM). */
const EXACT_SEARCH_MAX_ROWS = 300;
const SEARCH_QUERIES_PER_STATEMENT = 16;

const COLLECTIONS: readonly Collection[] = ['action_faces', 'user_samples'];

interface HitRow {
  /** Index of the query this row answers. */
  query: number;
  id: string;
  event_id: string;
  photo_id: string;
  user_id: string | null;
  distance: number;
}

export interface PgliteVectorStoreOptions {
  /** Rows of a table at which its IVFFlat index is first built (ANN_MIN_ROWS; tests set fewer). */
  annMinRows?: number;
  /** Rows per IVFFlat list at a build (ROWS_PER_LIST; tests set fewer, for many lists on little data). */
  rowsPerList?: number;
}

/** The IVFFlat index of a table, as this process knows it. */
interface AnnIndex {
  /** Schema-qualified index name. */
  name: string;
  /** Lists of the index; 0 while the table has none. */
  lists: number;
  /** Rows of the table: counted at init and at each build, plus the rows upserted since (deletes are not subtracted). */
  rows: number;
  /** The build under way, if any. */
  building?: Promise<void>;
}

/** A staging table, and the rows copied into it since its last TRUNCATE (by this process). */
interface Staging {
  table: string;
  rows: number;
}

/** Empties a staging table in the transaction that filled it with `rows` rows (STAGING_TRUNCATE_ROWS). */
async function emptyStaging(tx: SqlTransaction, staging: Staging, rows: number): Promise<void> {
  staging.rows += rows;
  if (staging.rows < STAGING_TRUNCATE_ROWS) {
    await tx.query(`DELETE FROM ${staging.table}`);
    return;
  }
  await tx.query(`TRUNCATE ${staging.table}`);
  staging.rows = 0;
}

export class PgliteVectorStore implements VectorStore {
  private dimension: number | undefined;
  /** Schema-qualified table of each collection, set by init(). */
  private tables: Record<Collection, string> | undefined;
  private indexes: Record<Collection, AnnIndex> | undefined;
  /** The staging tables (see STAGING_TRUNCATE_ROWS), set by init(). */
  private staging: { upserts: Staging; queries: Staging } | undefined;
  private readonly annMinRows: number;
  private readonly rowsPerList: number;

  /** Takes ownership of the lease: `close()` ends it. */
  constructor(
    private readonly db: PgliteDatabase,
    options: PgliteVectorStoreOptions = {},
  ) {
    this.annMinRows = options.annMinRows ?? ANN_MIN_ROWS;
    this.rowsPerList = options.rowsPerList ?? ROWS_PER_LIST;
    for (const [name, value] of [['annMinRows', this.annMinRows], ['rowsPerList', this.rowsPerList]] as const) {
      if (!Number.isInteger(value) || value < 1) throw new ConfigError(`${name} must be a positive integer, got ${value}`);
    }
  }

  async init(dimension: number, options: VectorStoreInitOptions = {}): Promise<void> {
    if (!Number.isInteger(dimension) || dimension < 1 || dimension > MAX_DIMENSION) {
      throw new ConfigError(`embedding dimension must be an integer in 1..${MAX_DIMENSION}, got ${dimension}`);
    }
    const namespace = checkNamespace(options.namespace);
    const embedder = options.embedder && checkEmbedder(options.embedder);
    const schema = namespace === '' ? 'public' : `vectors_${namespace}`;
    const where = `embedded database at ${this.db.dataDir}${namespace === '' ? '' : ` (vector namespace ${namespace})`}`;
    await this.migrate(namespace, schema, dimension);

    // Another embedder's vectors are refused first: that, not the dimension, is what to fix.
    const stored = await this.storedEmbedder(schema);
    if (embedder && stored && !sameEmbedder(stored, embedder)) throw embedderMismatch(where, stored, embedder);
    const tables = Object.fromEntries(COLLECTIONS.map((c) => [c, `${schema}.${c}`])) as Record<Collection, string>;
    for (const table of Object.values(tables)) {
      // pgvector stores the dimension as the column's typmod.
      const [row] = await this.db.query<{ dim: number }>(
        `SELECT atttypmod AS dim FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'embedding'`,
        [table],
      );
      if (row?.dim !== dimension) {
        throw new ConfigError(
          `${where}: ${table} holds ${row?.dim ?? '?'}-dimensional embeddings, the model makes ${dimension}; set FACEMATCH_VECTOR_NAMESPACE to a new name for another model`,
        );
      }
    }
    if (embedder && !stored) {
      // Tables made before identities were recorded, or just now: they adopt this embedder.
      await this.db.query(`INSERT INTO ${schema}.embedding_space (pack, sha256) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [embedder.pack, embedder.sha256]);
      const recorded = await this.storedEmbedder(schema);
      if (recorded && !sameEmbedder(recorded, embedder)) throw embedderMismatch(where, recorded, embedder);
    }
    // Their committed content is always empty: truncating them here only drops dead rows.
    const staging = { upserts: { table: `${schema}.vector_upserts`, rows: 0 }, queries: { table: `${schema}.vector_queries`, rows: 0 } };
    await this.db.query(`TRUNCATE ${staging.upserts.table}, ${staging.queries.table}`);
    const indexes = {} as Record<Collection, AnnIndex>;
    for (const c of COLLECTIONS) {
      const name = `${schema}.${c}_embedding_ivf`;
      const [found] = await this.db.query<{ options: string[] | null }>('SELECT reloptions AS options FROM pg_class WHERE oid = to_regclass($1)', [name]);
      const lists = Number(/^lists=(\d+)$/.exec(found?.options?.find((o) => o.startsWith('lists=')) ?? '')?.[1] ?? 0);
      const [counted] = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${tables[c]}`);
      indexes[c] = { name, lists, rows: counted?.n ?? 0 };
    }
    this.tables = tables;
    this.indexes = indexes;
    this.staging = staging;
    this.dimension = dimension;
    // A table that grew past its index's line without it (or a database migrated from HNSW) gets it now.
    for (const c of COLLECTIONS) await this.grow(c);
  }

  /**
   * The table's row count at which its index is (re)built: ANN_MIN_ROWS first, then each time the
   * table has doubled since the last build (whose size the lists tell).
   */
  private nextBuild(index: AnnIndex): number {
    return index.lists === 0 ? this.annMinRows : 2 * Math.max(this.annMinRows, index.lists * this.rowsPerList);
  }

  /** Builds the collection's IVFFlat index (again) if the table has grown past its line; see the header. */
  private async grow(collection: Collection): Promise<void> {
    const index = this.indexes![collection];
    if (index.building) return index.building;
    if (index.rows < this.nextBuild(index)) return;
    const table = this.table(collection);
    index.building = (async () => {
      // The estimate counts replaced rows twice and deleted ones still: count before building.
      const [counted] = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
      index.rows = counted?.n ?? 0;
      if (index.rows < this.nextBuild(index)) return;
      const lists = Math.max(1, Math.floor(index.rows / this.rowsPerList));
      const unqualified = index.name.slice(index.name.indexOf('.') + 1);
      await this.db.transaction(async (tx) => {
        await tx.query(`DROP INDEX IF EXISTS ${index.name}`);
        await tx.query(`CREATE INDEX ${unqualified} ON ${table} USING ivfflat (embedding vector_cosine_ops) WITH (lists = ${lists})`);
      });
      index.lists = lists;
    })().finally(() => {
      index.building = undefined;
    });
    return index.building;
  }

  /**
   * Applies the vector migrations to the namespace's schema. A namespace runs the same files with
   * its schema first on the search path (set inside each migration's transaction; the checksums are
   * the files'), so its tables and indexes land there, and records them under its own scope.
   */
  private async migrate(namespace: string, schema: string, dimension: number): Promise<void> {
    const vars = { DIM: String(dimension) };
    if (namespace === '') {
      await this.db.migrate('vectors', VECTOR_MIGRATIONS_DIR, vars);
      return;
    }
    // pgvector in public (where the default set has it), not in the first schema of the path.
    await this.db.query('CREATE EXTENSION IF NOT EXISTS vector SCHEMA public');
    await this.db.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    const migrations = (await readMigrations(VECTOR_MIGRATIONS_DIR, vars)).map((m) => ({
      ...m,
      sql: `SET LOCAL search_path TO ${schema}, public;\n${m.sql}`,
    }));
    await applyMigrations(this.db, `vectors:${namespace}`, migrations, `embedded database at ${this.db.dataDir}`);
  }

  private async storedEmbedder(schema: string): Promise<EmbedderIdentity | undefined> {
    const [row] = await this.db.query<EmbedderIdentity>(`SELECT pack, sha256 FROM ${schema}.embedding_space`);
    return row;
  }

  async upsert(collection: Collection, records: readonly VectorRecord[]): Promise<void> {
    const table = this.table(collection);
    if (records.length === 0) return;
    const unique = this.checkRecords(records);
    await this.db.transaction((tx) => this.write(tx, table, unique));
    await this.grown(collection, unique.length);
  }

  /**
   * One transaction: the photo's rows in both tables go (one statement), and `records` are written
   * as upsert() writes them. A crash leaves the photo's old vectors or its new ones, never neither
   * nor a mix.
   */
  async replacePhoto(photoId: string, collection: Collection, records: readonly VectorRecord[]): Promise<void> {
    const table = this.table(collection);
    if (!photoId) throw new InvalidArgumentError('photo id must not be empty');
    const unique = this.checkRecords(records);
    for (const r of unique) {
      if (r.photoId !== photoId) throw new InvalidArgumentError(`vector record ${r.id} is of photo ${r.photoId}, not ${photoId}`);
    }
    const [a, u] = [this.table('action_faces'), this.table('user_samples')];
    await this.db.transaction(async (tx) => {
      await tx.query(`WITH a AS (DELETE FROM ${a} WHERE photo_id = $1) DELETE FROM ${u} WHERE photo_id = $1`, [photoId]);
      if (unique.length > 0) await this.write(tx, table, unique);
    });
    if (unique.length > 0) await this.grown(collection, unique.length);
  }

  /** Checks the records; the last record of an id wins, as a sequence of upserts would have it. */
  private checkRecords(records: readonly VectorRecord[]): VectorRecord[] {
    for (const r of records) {
      if (!r.id || !r.eventId || !r.photoId) throw new InvalidArgumentError('vector record needs id, eventId and photoId');
      this.checkEmbedding(r.embedding);
    }
    return [...new Map(records.map((r) => [r.id, r])).values()];
  }

  /**
   * Writes the records in `tx`: copied in binary into the staging table, numbered, and moved from
   * there UPSERT_ROWS_PER_STATEMENT at a time (see STAGING_TRUNCATE_ROWS).
   */
  private async write(tx: PgliteTransaction, table: string, unique: readonly VectorRecord[]): Promise<void> {
    const staging = this.staging!.upserts;
    for (let start = 0; start < unique.length; start += COPY_ROWS_PER_STATEMENT) {
      const rows = unique
        .slice(start, start + COPY_ROWS_PER_STATEMENT)
        .map((r, i): CopyField[] => [start + i, r.id, r.eventId, r.photoId, r.userId ?? null, r.embedding]);
      await tx.copyIn(`COPY ${staging.table} (n, id, event_id, photo_id, user_id, embedding) FROM '/dev/blob' WITH (FORMAT binary)`, encodeCopyBinary(rows));
    }
    for (let start = 0; start < unique.length; start += UPSERT_ROWS_PER_STATEMENT) {
      await tx.query(
        `INSERT INTO ${table} (id, event_id, photo_id, user_id, embedding)
           SELECT id, event_id, photo_id, user_id, embedding FROM ${staging.table} WHERE n >= $1 AND n < $2
         ON CONFLICT (id) DO UPDATE SET event_id = EXCLUDED.event_id, photo_id = EXCLUDED.photo_id,
           user_id = EXCLUDED.user_id, embedding = EXCLUDED.embedding`,
        [start, start + UPSERT_ROWS_PER_STATEMENT],
      );
    }
    await emptyStaging(tx, staging, unique.length);
  }

  /** After a committed write of `rows` rows: counts them, and builds the index if the table has grown past its line. */
  private async grown(collection: Collection, rows: number): Promise<void> {
    this.indexes![collection].rows += rows;
    await this.grow(collection);
  }

  async search(collection: Collection, query: SearchQuery): Promise<VectorHit[]> {
    const [hits] = await this.searchMany(collection, [query]);
    return hits ?? [];
  }

  /**
   * The queries in few statements (a LATERAL join over SEARCH_QUERIES_PER_STATEMENT query vectors
   * each, one transaction), so a crowd photo's 100 faces cost 7 statements instead of 100, while no
   * statement holds the event loop long. The queries that come back short are run again, also
   * together, without the vector index (see the header).
   */
  async searchMany(collection: Collection, queries: readonly SearchQuery[]): Promise<VectorHit[][]> {
    const table = this.table(collection);
    if (queries.length === 0) return [];
    for (const q of queries) {
      if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > 0x7fffffff) {
        throw new InvalidArgumentError(`search limit must be a positive 32-bit integer, got ${q.limit}`);
      }
      if (!Number.isFinite(q.minSimilarity)) throw new InvalidArgumentError('minSimilarity must be a number');
    }
    for (const q of queries) this.checkEmbedding(q.embedding);
    // The query vectors reach PGlite in binary, as upserts do (STAGING_TRUNCATE_ROWS).
    const staging = this.staging!.queries;
    const copied = encodeCopyBinary(queries.map((q, i): CopyField[] => [i, q.eventId, q.limit, q.embedding]));
    const sql = `SELECT q.i AS query, h.id, h.event_id, h.photo_id, h.user_id, h.distance
                   FROM ${staging.table} q
                   CROSS JOIN LATERAL (
                     SELECT id, event_id, photo_id, user_id, embedding <=> q.v AS distance
                       FROM ${table} WHERE event_id = q.event_id ORDER BY embedding <=> q.v LIMIT q.lim
                   ) h
                  WHERE q.i = ANY($1::int[])`;
    const run = (tx: SqlTransaction, which: readonly number[]): Promise<HitRow[]> => tx.query<HitRow>(sql, [which]);
    const byQuery: HitRow[][] = queries.map(() => []);
    const runAll = async (tx: SqlTransaction, which: readonly number[]): Promise<void> => {
      for (let start = 0; start < which.length; start += SEARCH_QUERIES_PER_STATEMENT) {
        for (const row of await run(tx, which.slice(start, start + SEARCH_QUERIES_PER_STATEMENT))) byQuery[row.query]!.push(row);
      }
    };
    const exactly = async (tx: SqlTransaction, which: readonly number[]): Promise<void> => {
      if (which.length === 0) return;
      await tx.query(
        `SELECT set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'on', true),
                set_config('enable_seqscan', 'on', true), set_config('enable_sort', 'on', true)`,
      );
      for (const i of which) byQuery[i] = [];
      await runAll(tx, which);
    };
    const index = this.indexes![collection];
    await this.db.transaction(async (tx) => {
      await tx.copyIn(`COPY ${staging.table} (i, event_id, lim, v) FROM '/dev/blob' WITH (FORMAT binary)`, copied);
      const all = queries.map((_, i) => i);
      if (index.lists === 0 && !index.building) {
        // No vector index and none being built (PGlite runs one transaction at a time, so none can
        // appear before this one ends): the planner's own plan is exact, and no count is needed.
        await runAll(tx, all);
        await emptyStaging(tx, staging, queries.length);
        return;
      }
      const events = [...new Set(queries.map((q) => q.eventId))];
      const counted = await tx.query<{ event_id: string; n: number }>(
        `SELECT event_id, count(*)::int AS n FROM ${table} WHERE event_id = ANY($1::text[]) GROUP BY event_id`,
        [events],
      );
      const rowsIn = new Map(counted.map((c) => [c.event_id, c.n]));
      // Without a vector index (its first build under way), every search is exact.
      const { lists } = index;
      const exactMax = lists === 0 ? Infinity : EXACT_SEARCH_MAX_ROWS;
      const small = all.filter((i) => (rowsIn.get(queries[i]!.eventId) ?? 0) <= exactMax);
      const large = all.filter((i) => (rowsIn.get(queries[i]!.eventId) ?? 0) > exactMax);
      if (large.length > 0) {
        const probes = Math.min(lists, Math.max(MIN_PROBES, Math.ceil(lists * PROBE_SHARE)));
        // Local to this transaction; set before the query so that they apply to its index scans.
        await tx.query(
          `SELECT set_config('ivfflat.probes', $1, true), set_config('ivfflat.iterative_scan', 'relaxed_order', true),
                  set_config('enable_sort', 'off', true)`,
          [String(probes)],
        );
        await runAll(tx, large);
      }
      const short = large.filter((i) => byQuery[i]!.length < queries[i]!.limit);
      await exactly(tx, [...small, ...short]);
      await emptyStaging(tx, staging, queries.length);
    });
    return byQuery.map((rows, i) => {
      const hits: VectorHit[] = [];
      for (const row of rows.sort((p, q) => p.distance - q.distance)) {
        const similarity = 1 - row.distance;
        if (similarity < queries[i]!.minSimilarity) continue;
        const hit: VectorHit = { id: row.id, eventId: row.event_id, photoId: row.photo_id, similarity };
        if (row.user_id !== null) hit.userId = row.user_id;
        hits.push(hit);
      }
      return hits;
    });
  }

  async deleteByPhoto(collection: Collection, photoId: string): Promise<number> {
    const table = this.table(collection);
    const rows = await this.db.query<{ n: number }>(
      `WITH gone AS (DELETE FROM ${table} WHERE photo_id = $1 RETURNING 1) SELECT count(*)::int AS n FROM gone`,
      [photoId],
    );
    return rows[0]?.n ?? 0;
  }

  async deleteByUser(userId: string): Promise<number> {
    const [a, u] = [this.table('action_faces'), this.table('user_samples')];
    const rows = await this.db.query<{ n: number }>(
      `WITH a AS (DELETE FROM ${a} WHERE user_id = $1 RETURNING 1),
            u AS (DELETE FROM ${u} WHERE user_id = $1 RETURNING 1)
       SELECT (SELECT count(*) FROM a)::int + (SELECT count(*) FROM u)::int AS n`,
      [userId],
    );
    return rows[0]?.n ?? 0;
  }

  async ping(): Promise<void> {
    await this.db.ping();
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  private ready(): number {
    if (this.dimension === undefined) throw new ConfigError('vector store used before init()');
    return this.dimension;
  }

  private table(collection: Collection): string {
    this.ready();
    // An unknown name (from an untyped caller) finds no table.
    const table = (this.tables as Partial<Record<string, string>> | undefined)?.[collection];
    if (table === undefined) throw new InvalidArgumentError(`unknown collection ${String(collection)}`);
    return table;
  }

  /** Refuses an embedding of another dimension than the store's, or with a NaN or infinite value. */
  private checkEmbedding(embedding: Float32Array): void {
    const dimension = this.ready();
    if (embedding.length !== dimension) {
      throw new InvalidArgumentError(`embedding has ${embedding.length} dimensions, the store holds ${dimension}`);
    }
    for (let i = 0; i < embedding.length; i++) {
      if (!Number.isFinite(embedding[i]!)) throw new InvalidArgumentError('embedding holds a NaN or infinite value');
    }
  }
}
