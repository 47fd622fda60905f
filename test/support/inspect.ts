/**
 * How a test checks an erasure: what still names a user, read straight from the storage the stores
 * write to, with statements of its own. The ports have no such read (the service never needs one),
 * so a test cannot ask a store to vouch for its own deletions.
 *
 *   - rows naming the user: photos, matches and match_offers with the user's id (not
 *     forgotten_users, which keeps the bare id for an hour on purpose: README, "Locks: one writer per photo and per enrolling user");
 *   - vectors of the user: records with the user's id in action_faces and user_samples, in the
 *     vector namespace the store was initialised with.
 *
 * Where they are read: embedded, through a lease on this process's PGlite instance of the data
 * directory (the service's database thread, PgliteThread, when the process has one on it; else
 * PgliteDatabase.open, which hands out leases on this thread's instance), opened for each read and
 * closed after it, so that an inspector never keeps the database open across a test's restart of
 * the service; PostgreSQL, through a pool of its own on the URL; Milvus, through a client of its own
 * querying both collections at Strong consistency (every write acknowledged before the query is
 * counted, whichever client made it).
 */
import path from 'node:path';
import { ConsistencyLevelEnum, ErrorCode, MilvusClient } from '@zilliz/milvus2-sdk-node';
import pg from 'pg';
import { PgliteDatabase } from '../../src/adapters/embedded/pglite.database.js';
import { PgliteThread } from '../../src/adapters/embedded/pglite.thread.js';
import { checkNamespace } from '../../src/adapters/embedding-space.js';
import type { Config, MilvusConfig } from '../../src/config/config.js';

/** What runs a statement: a PGlite lease, or a PostgreSQL pool wrapped to return its rows. */
export interface Queryable {
  query<T>(sql: string, params?: unknown[]): Promise<T[]>;
}

export interface RowsInspector {
  /** Rows of photos, matches and match_offers that name the user. */
  rowsNamingUser(userId: string): Promise<number>;
  close(): Promise<void>;
}

export interface VectorsInspector {
  /** Records of the user in action_faces and user_samples. */
  vectorsOfUser(userId: string): Promise<number>;
  close(): Promise<void>;
}

export type StorageInspector = RowsInspector & VectorsInspector;

/** Rows of the match store's tables that name the user (the same tables on PGlite and PostgreSQL). */
export async function rowsNamingUser(q: Queryable, userId: string): Promise<number> {
  const [row] = await q.query<{ n: number }>(
    `SELECT (SELECT count(*) FROM photos WHERE user_id = $1)::int
          + (SELECT count(*) FROM matches WHERE user_id = $1)::int
          + (SELECT count(*) FROM match_offers WHERE user_id = $1)::int AS n`,
    [userId],
  );
  return row!.n;
}

/** Vectors of the user in the embedded vector tables of the namespace ('' : the default set, in public). */
export async function embeddedVectorsOfUser(q: Queryable, userId: string, namespace = ''): Promise<number> {
  const ns = checkNamespace(namespace);
  const schema = ns === '' ? 'public' : `vectors_${ns}`;
  const [row] = await q.query<{ n: number }>(
    `SELECT (SELECT count(*) FROM ${schema}.action_faces WHERE user_id = $1)::int
          + (SELECT count(*) FROM ${schema}.user_samples WHERE user_id = $1)::int AS n`,
    [userId],
  );
  return row!.n;
}

/** Runs `fn` on a lease of this process's PGlite instance of `dbDir`, closed after. */
async function withLease<T>(dbDir: string, fn: (db: Queryable) => Promise<T>): Promise<T> {
  const db = PgliteThread.holds(dbDir) ? await PgliteThread.open(dbDir) : await PgliteDatabase.open(dbDir);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** The embedded database of `dbDir` (a store's `<dataDir>/db`). */
export function embeddedStorage(dbDir: string, namespace = ''): StorageInspector {
  return {
    rowsNamingUser: (userId) => withLease(dbDir, (db) => rowsNamingUser(db, userId)),
    vectorsOfUser: (userId) => withLease(dbDir, (db) => embeddedVectorsOfUser(db, userId, namespace)),
    close: () => Promise.resolve(),
  };
}

/** The PostgreSQL database at `url`. */
export function postgresRows(url: string): RowsInspector {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  const q: Queryable = { query: async <T>(sql: string, params?: unknown[]) => (await pool.query(sql, params)).rows as T[] };
  return { rowsNamingUser: (userId) => rowsNamingUser(q, userId), close: () => pool.end() };
}

/**
 * The collections of a MilvusVectorStore with this configuration and namespace:
 * `<prefix>[_<namespace>]_action_faces` and `..._user_samples`. The client connects on first use.
 */
export function milvusVectors(milvus: Pick<MilvusConfig, 'address' | 'token' | 'collectionPrefix' | 'timeoutMs'>, namespace = ''): VectorsInspector {
  const ns = checkNamespace(namespace);
  const base = ns === '' ? milvus.collectionPrefix : `${milvus.collectionPrefix}_${ns}`;
  let client: MilvusClient | undefined;
  const connect = (): MilvusClient => {
    if (client) return client;
    client = new MilvusClient({ address: milvus.address, ...(milvus.token ? { token: milvus.token } : {}), timeout: milvus.timeoutMs, logLevel: 'error' });
    // Awaited by the SDK only before calls this inspector does not make (see MilvusVectorStore.connect).
    client.connectPromise.catch(() => undefined);
    return client;
  };
  return {
    vectorsOfUser: async (userId) => {
      // An empty id is what records without a user hold: it would count every action face.
      if (userId === '') throw new Error('vectorsOfUser: the user id is empty');
      const milvusClient = connect();
      const counts = await Promise.all(
        ['action_faces', 'user_samples'].map(async (collection) => {
          const name = `${base}_${collection}`;
          const result = await milvusClient.query({
            collection_name: name,
            filter: `user_id == ${JSON.stringify(userId)}`,
            output_fields: ['count(*)'],
            consistency_level: ConsistencyLevelEnum.Strong,
          });
          if (result.status.error_code !== ErrorCode.SUCCESS) throw new Error(`Milvus: counting the user's records in ${name}: ${result.status.reason}`);
          return Number(result.data[0]?.['count(*)'] ?? 0);
        }),
      );
      return counts.reduce((a, b) => a + b, 0);
    },
    close: () => {
      client?.closeConnection();
      return Promise.resolve();
    },
  };
}

/**
 * The storage the configuration selects, as openStores opens it: the embedded database in
 * `<dataDir>/db`, PostgreSQL, Milvus; the vectors of `namespace` (by default the configured one,
 * which the service initialises its vector store with).
 */
export function inspectStorage(config: Config, namespace = config.stores.vectorNamespace): StorageInspector {
  const embedded = embeddedStorage(path.join(config.stores.dataDir, 'db'), namespace);
  let rows: RowsInspector = embedded;
  if (config.stores.matchStore === 'postgres') {
    if (!config.postgres) throw new Error('inspectStorage: FACEMATCH_MATCH_STORE=postgres without FACEMATCH_POSTGRES_URL');
    rows = postgresRows(config.postgres.url);
  }
  const vectors: VectorsInspector = config.stores.vectorStore === 'milvus' ? milvusVectors(config.milvus, namespace) : embedded;
  return {
    rowsNamingUser: (userId) => rows.rowsNamingUser(userId),
    vectorsOfUser: (userId) => vectors.vectorsOfUser(userId),
    close: async () => {
      await Promise.all([rows.close(), vectors.close()]);
    },
  };
}
