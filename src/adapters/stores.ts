/**
 * The stores the configuration selects, each port on its own: vectors (embedded pgvector | Milvus),
 * objects (local folder | S3), matches (embedded PGlite | PostgreSQL). Embedded is the default for
 * each. When vectors and matches are both embedded they share one PGlite database (one data
 * directory, one lock): on this thread, or with FACEMATCH_EMBEDDED_DB_THREAD=true in a thread of its
 * own (./embedded/pglite.thread.ts).
 */
import path from 'node:path';
import type { Config } from '../config/config.js';
import { ConfigError } from '../domain/errors.js';
import type { KeyedLocks } from '../ports/locks.js';
import type { MatchStore } from '../ports/match-store.js';
import type { ObjectStore } from '../ports/object-store.js';
import type { VectorStore } from '../ports/vector-store.js';
import type { Logger } from '../telemetry/logger.js';
import { InProcessLocks } from './embedded/in-process.locks.js';
import { LocalObjectStore } from './embedded/local.object-store.js';
import { PgliteDatabase } from './embedded/pglite.database.js';
import { PgliteMatchStore } from './embedded/pglite.match-store.js';
import { PgliteThread } from './embedded/pglite.thread.js';
import { PgliteVectorStore } from './embedded/pglite.vector-store.js';
import { MilvusVectorStore } from './milvus/milvus.vector-store.js';
import { PostgresAdvisoryLocks } from './postgres/postgres.locks.js';
import { describePostgres, PostgresMatchStore } from './postgres/postgres.match-store.js';
import { S3ObjectStore } from './s3/s3.object-store.js';

export interface OpenStores {
  vectors: VectorStore;
  objects: ObjectStore;
  matches: MatchStore;
  /**
   * One writer of a photo (and of a user's enrolment) at a time: PostgreSQL advisory locks when
   * the match store is PostgreSQL (shared by the replicas), else within this process (the embedded
   * database admits one process).
   */
  locks: KeyedLocks;
  /** Closes every store (and the shared embedded database). */
  close(): Promise<void>;
}

/**
 * Opens the configured stores and initialises the match and object stores (migrations, bucket).
 * The vector store is initialised by the caller, which knows the embedding dimension. A store that
 * cannot be reached fails the whole call (BackendUnavailableError naming it); whatever was opened
 * is closed again.
 */
export async function openStores(config: Config, log: Logger): Promise<OpenStores> {
  const t0 = performance.now();
  const { stores } = config;
  const closers: (() => Promise<void>)[] = [];
  const close = async () => {
    const results = await Promise.allSettled(closers.splice(0).reverse().map((c) => c()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  };

  // One lease on the embedded database (or its thread), opened on first need and shared by the embedded stores.
  let embedded: Promise<PgliteDatabase | PgliteThread> | undefined;
  const embeddedDb = () => {
    const dir = path.join(stores.dataDir, 'db');
    embedded ??= (stores.embeddedDbThread ? PgliteThread.open(dir) : PgliteDatabase.open(dir)).then((db) => {
      closers.push(() => db.close());
      return db;
    });
    return embedded;
  };

  try {
    let vectors: VectorStore;
    switch (stores.vectorStore) {
      case 'embedded': {
        const db = await embeddedDb();
        vectors = db instanceof PgliteThread ? db.vectorStore() : new PgliteVectorStore(db);
        break;
      }
      case 'milvus': {
        const store = MilvusVectorStore.connect(config.milvus);
        closers.push(() => store.close());
        vectors = store;
        break;
      }
    }

    let matches: MatchStore;
    switch (stores.matchStore) {
      case 'embedded': {
        const db = await embeddedDb();
        matches = db instanceof PgliteThread ? db.matchStore() : new PgliteMatchStore(db);
        break;
      }
      case 'postgres': {
        if (!config.postgres) throw new ConfigError('FACEMATCH_MATCH_STORE=postgres needs FACEMATCH_POSTGRES_URL');
        const store = PostgresMatchStore.open(config.postgres, log);
        closers.push(() => store.close());
        matches = store;
        break;
      }
    }

    let locks: KeyedLocks;
    if (stores.matchStore === 'postgres' && config.postgres) {
      const held = PostgresAdvisoryLocks.open(config.postgres, log);
      closers.push(() => held.close());
      locks = held;
    } else {
      locks = new InProcessLocks();
    }

    let objects: ObjectStore;
    switch (stores.objectStore) {
      case 'embedded':
        objects = new LocalObjectStore({ root: path.join(stores.dataDir, 'objects'), bucket: stores.bucket });
        break;
      case 's3':
        if (!config.s3) throw new ConfigError('FACEMATCH_OBJECT_STORE=s3 needs FACEMATCH_S3_ENDPOINT, FACEMATCH_S3_ACCESS_KEY and FACEMATCH_S3_SECRET_KEY');
        objects = S3ObjectStore.open(config.s3, stores.bucket);
        break;
    }

    await Promise.all([matches.init(), objects.init()]);
    log.info(
      {
        vectors: stores.vectorStore,
        matches: stores.matchStore === 'postgres' && config.postgres ? describePostgres(config.postgres.url) : 'embedded',
        objects: stores.objectStore === 's3' ? `s3 (${config.s3?.endpoint}, bucket ${stores.bucket})` : 'embedded',
        dataDir: stores.dataDir,
        ms: Math.round(performance.now() - t0),
      },
      'stores open',
    );
    return { vectors, objects, matches, locks, close };
  } catch (error) {
    // A store opened before the failure is closed; an embedded database still opening too.
    await embedded?.catch(() => undefined);
    await close().catch((closeError: unknown) => log.warn({ err: closeError }, 'closing stores after a failed open'));
    throw error;
  }
}
