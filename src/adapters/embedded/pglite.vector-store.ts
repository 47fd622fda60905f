/**
 * VectorStore on the embedded database: one pgvector table per collection, an HNSW index with
 * cosine distance, and a b-tree on event_id for the event filter.
 *
 * A filtered HNSW search is approximate twice over: the graph walk keeps `hnsw.ef_search`
 * candidates, and the event filter is applied to those afterwards, so a plain index scan can
 * return fewer rows than exist in the event. Searches therefore run with pgvector's iterative
 * scan (`strict_order`): the walk continues until LIMIT rows pass the filter, nearest first. It
 * gives up after `hnsw.max_scan_tuples` (20,000) visited rows; a search that still comes back short
 * is run again without the vector index (event index + exact distances), which is cheap exactly
 * then: the event has few rows, or few near the query.
 *
 * The plan is chosen here, not by the planner. With the query vectors and limits as parameters of
 * a LATERAL join, PostgreSQL expects 500 rows per query and picks the exact plan (bitmap scan on the
 * event, sort by distance), whose cost grows with the event: 17 ms at 5,000 rows of an event, 170
 * ms at 25,000, against ~3 ms for the HNSW walk. So: events of at most EXACT_SEARCH_MAX_ROWS rows
 * (counted on the event index first) are searched exactly, where that is cheapest and always
 * complete; larger ones through the HNSW index (sorting disabled, so the planner takes the index).
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
import { readMigrations, VECTOR_MIGRATIONS_DIR, type PgliteDatabase, type SqlTransaction } from './pglite.database.js';

/** pgvector's HNSW limit for `vector`. */
const MAX_DIMENSION = 2000;
/** pgvector's limit for hnsw.ef_search. */
const MAX_EF_SEARCH = 1000;
/**
 * The HNSW candidate list grows with the event: measured with uniformly random 512-d vectors (the
 * hard case; real face embeddings cluster) and a query at cosine 0.9 to its target, top-1 was 96% /
 * 100% at ef_search 40 / 100 among 5,000 rows of an event (20k stored), and 70% / 84% / 98% / 100% at
 * 40 / 100 / 200 / 400 among 25,000 (100k stored: 6.9 / 11 / 19 / 35 ms). So ef_search is at least
 * MIN_EF_SEARCH, twice the limit, and one per EVENT_ROWS_PER_EF rows of the event.
 */
const MIN_EF_SEARCH = 100;
const EVENT_ROWS_PER_EF = 60;

/**
 * Statement sizes: PGlite runs a statement synchronously on the event loop, so these bound how long
 * one holds it (an HNSW insertion costs ~6 ms at 2,000 rows; a search ~1 ms).
 */
const UPSERT_ROWS_PER_STATEMENT = 4;
/** Up to this many rows in an event, exact distances beat a filtered HNSW walk (~7 µs a row in WASM). */
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

export class PgliteVectorStore implements VectorStore {
  private dimension: number | undefined;
  /** Schema-qualified table of each collection, set by init(). */
  private tables: Record<Collection, string> | undefined;

  /** Takes ownership of the lease: `close()` ends it. */
  constructor(private readonly db: PgliteDatabase) {}

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
    this.tables = tables;
    this.dimension = dimension;
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
    const rows = records.map((r) => {
      if (!r.id || !r.eventId || !r.photoId) throw new InvalidArgumentError('vector record needs id, eventId and photoId');
      return [r.id, r.eventId, r.photoId, r.userId ?? null, this.literal(r.embedding)];
    });
    // The last record of an id wins, as a sequence of upserts would have it. One transaction, a few
    // rows per statement: PGlite holds the event loop for a whole statement, and each row's HNSW
    // insertion costs milliseconds (~6 ms at 2,000 rows, more as the graph grows).
    const unique = [...new Map(rows.map((row) => [row[0], row])).values()];
    await this.db.transaction(async (tx) => {
      for (let start = 0; start < unique.length; start += UPSERT_ROWS_PER_STATEMENT) {
        const chunk = unique.slice(start, start + UPSERT_ROWS_PER_STATEMENT);
        await tx.query(
          `INSERT INTO ${table} (id, event_id, photo_id, user_id, embedding)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]::vector[])
               AS r(id, event_id, photo_id, user_id, embedding)
           ON CONFLICT (id) DO UPDATE SET event_id = EXCLUDED.event_id, photo_id = EXCLUDED.photo_id,
             user_id = EXCLUDED.user_id, embedding = EXCLUDED.embedding`,
          [0, 1, 2, 3, 4].map((c) => chunk.map((row) => row[c])),
        );
      }
    });
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
      if (!Number.isInteger(q.limit) || q.limit < 1) throw new InvalidArgumentError(`search limit must be a positive integer, got ${q.limit}`);
      if (!Number.isFinite(q.minSimilarity)) throw new InvalidArgumentError('minSimilarity must be a number');
    }
    const vectors = queries.map((q) => this.literal(q.embedding));
    const sql = `SELECT q.i::int AS query, h.id, h.event_id, h.photo_id, h.user_id, h.distance
                   FROM unnest($1::text[]::vector[], $2::text[], $3::int[], $4::int[]) AS q(v, event_id, lim, i)
                   CROSS JOIN LATERAL (
                     SELECT id, event_id, photo_id, user_id, embedding <=> q.v AS distance
                       FROM ${table} WHERE event_id = q.event_id ORDER BY embedding <=> q.v LIMIT q.lim
                   ) h`;
    const run = (tx: SqlTransaction, which: readonly number[]): Promise<HitRow[]> =>
      tx.query<HitRow>(sql, [which.map((i) => vectors[i]!), which.map((i) => queries[i]!.eventId), which.map((i) => queries[i]!.limit), which]);
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
    await this.db.transaction(async (tx) => {
      const events = [...new Set(queries.map((q) => q.eventId))];
      const counted = await tx.query<{ event_id: string; n: number }>(
        `SELECT event_id, count(*)::int AS n FROM ${table} WHERE event_id = ANY($1::text[]) GROUP BY event_id`,
        [events],
      );
      const rowsIn = new Map(counted.map((c) => [c.event_id, c.n]));
      const all = queries.map((_, i) => i);
      const small = all.filter((i) => (rowsIn.get(queries[i]!.eventId) ?? 0) <= EXACT_SEARCH_MAX_ROWS);
      const large = all.filter((i) => (rowsIn.get(queries[i]!.eventId) ?? 0) > EXACT_SEARCH_MAX_ROWS);
      if (large.length > 0) {
        const ef = Math.min(
          MAX_EF_SEARCH,
          Math.max(
            MIN_EF_SEARCH,
            ...large.map((i) => Math.max(queries[i]!.limit * 2, Math.ceil((rowsIn.get(queries[i]!.eventId) ?? 0) / EVENT_ROWS_PER_EF))),
          ),
        );
        // Local to this transaction; set before the query so that they apply to its index scans.
        await tx.query(
          `SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'strict_order', true),
                  set_config('enable_sort', 'off', true)`,
          [String(ef)],
        );
        await runAll(tx, large);
      }
      const short = large.filter((i) => byQuery[i]!.length < queries[i]!.limit);
      await exactly(tx, [...small, ...short]);
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

  /** pgvector's text form, '[a,b,...]'; 9 significant digits round-trip a float32. */
  private literal(embedding: Float32Array): string {
    const dimension = this.ready();
    if (embedding.length !== dimension) {
      throw new InvalidArgumentError(`embedding has ${embedding.length} dimensions, the store holds ${dimension}`);
    }
    const parts = new Array<string>(embedding.length);
    for (let i = 0; i < embedding.length; i++) {
      const x = embedding[i]!;
      if (!Number.isFinite(x)) throw new InvalidArgumentError('embedding holds a NaN or infinite value');
      parts[i] = x.toPrecision(9);
    }
    return `[${parts.join(',')}]`;
  }
}
