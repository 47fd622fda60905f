/**
 * MatchStore on PostgreSQL (15+), with node-postgres. The schema and the migration runner are the
 * embedded store's (src/adapters/sql: migrations/, migrations.ts), and so is every statement:
 * the two stores behave alike, which the shared contract test checks (test/contract).
 *
 * What a server shared by several replicas adds:
 * - Migrations run under a session advisory lock: replicas that start together apply each
 *   migration once; the others wait, then find it recorded.
 * - Reads of several statements (getPhoto) run in one REPEATABLE READ transaction: one snapshot,
 *   never a photo of one version with the faces of another.
 * - replacePhoto of one photo by several replicas at once is serialised by a transaction advisory
 *   lock on the photo id: each replaces the whole photo in turn, the last one's version stays
 *   (without it, two first writes of a photo collide on its key, and a DELETE that waited for
 *   another's commit does not see the row that one inserted).
 * - Writes that can collide with a concurrent writer are retried a few times: a deadlock or
 *   serialization failure (40P01, 40001); an offer for a face that a concurrent reprocess removed
 *   (23503: the retry sees the photo as it is now, as if the offer had come later).
 *
 * Timeouts: a connection must be had within `timeoutMs` (connect, or wait for a free one), the
 * server cancels a statement after `timeoutMs` (statement_timeout) and the client gives up waiting
 * one second later (a server that stopped answering); a row lock waits at most `timeoutMs`
 * (lock_timeout). Connection errors, timeouts and SQLSTATE classes 08/53/57/58 and 55P03 become
 * BackendUnavailableError naming the server; the pool replaces broken
 * connections, so the same store works again as soon as the server is back.
 */
import pg from 'pg';
import type { PostgresConfig } from '../../config/config.js';
import {
  BackendUnavailableError,
  FacematchError,
  InternalError,
} from '../../domain/errors.js';
import type { FaceRecord, MatchRecord, PhotoRecord } from '../../domain/photo.js';
import type { MatchStore, UserPhoto } from '../../ports/match-store.js';
import type { Logger } from '../../telemetry/logger.js';
import { checkReplacement } from '../sql/match-rows.js';
import * as sql from '../sql/match-statements.js';
import { applyMigrations, MATCH_MIGRATIONS_DIR, readMigrations, type SqlTransaction } from '../sql/migrations.js';

/** The part of a connection the store uses (a pg.PoolClient, or a fake in a unit test). */
export interface PostgresClient {
  query<R>(sql: string, params?: unknown[], options?: { timeoutMs?: number }): Promise<R[]>;
  /** Back to the pool; with an error, the connection is closed instead (it may be unusable). */
  release(error?: Error): void;
}

/** The part of a pool the store uses (a pg.Pool, or a fake in a unit test). */
export interface PostgresPool {
  /** One statement on any connection. */
  query<R>(sql: string, params?: unknown[]): Promise<R[]>;
  connect(): Promise<PostgresClient>;
  end(): Promise<void>;
}

export interface PostgresMatchStoreOptions {
  pool: PostgresPool;
  /** Names the server in messages, e.g. `PostgreSQL at 127.0.0.1:5432/facematch`. */
  where: string;
  /** Folder of the migrations (default: the shared match schema). */
  migrationsDir?: string;
}

/** Scope of these migrations in schema_migrations (the embedded database uses the same). */
const MIGRATION_SCOPE = 'facematch';
/** Migrations may take long on a big table, and may wait for another replica's: no short deadline. */
const MIGRATION_TIMEOUT_MS = 10 * 60_000;
/** How long init() waits for another replica that holds the migration lock. */
const MIGRATION_LOCK_WAIT = '120s';
const ATTEMPTS = 4;
const CONFLICTS = ['40001', '40P01'];


/** `PostgreSQL at host:port/database`, without user or password. */
export function describePostgres(url: string): string {
  try {
    const u = new URL(url);
    return `PostgreSQL at ${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname || '/'}`.replace(/\/$/, '');
  } catch {
    return 'PostgreSQL';
  }
}

export class PostgresMatchStore implements MatchStore {
  /** The single-statement reads of match-statements.ts run on a pooled connection each. */
  private readonly reads: sql.Sql = { query: (text, params) => this.query(text, params) };

  private readonly pool: PostgresPool;
  private readonly where: string;
  private readonly migrationsDir: string;
  private closed = false;

  constructor(options: PostgresMatchStoreOptions) {
    this.pool = options.pool;
    this.where = options.where;
    this.migrationsDir = options.migrationsDir ?? MATCH_MIGRATIONS_DIR;
  }

  /** A store on a new pool of `config.url` (no connection is made before the first call). */
  static open(config: PostgresConfig, log?: Logger, options: { migrationsDir?: string } = {}): PostgresMatchStore {
    const where = describePostgres(config.url);
    const pool = new pg.Pool({
      connectionString: config.url,
      max: config.poolMax,
      connectionTimeoutMillis: config.timeoutMs,
      idleTimeoutMillis: 30_000,
      statement_timeout: config.timeoutMs,
      lock_timeout: config.timeoutMs,
      idle_in_transaction_session_timeout: Math.max(60_000, 4 * config.timeoutMs),
      query_timeout: config.timeoutMs + 1000,
      keepAlive: true,
      application_name: 'facematch',
    });
    // An idle connection that breaks (the server restarts) is reported here and dropped by the
    // pool; without a listener, the 'error' event would end the process.
    pool.on('error', (error) => log?.warn({ err: error, backend: where }, 'PostgreSQL connection lost'));
    return new PostgresMatchStore({ pool: wrapPool(pool), where, ...options });
  }

  async init(): Promise<void> {
    const migrations = await readMigrations(this.migrationsDir);
    await this.withClient(async (client) => {
      // This session only (the connection is closed afterwards): migrations get all the time they need.
      await client.query(`SET statement_timeout = 0`);
      await client.query(`SET lock_timeout = '${MIGRATION_LOCK_WAIT}'`);
      await client.query(`SELECT pg_advisory_lock(hashtext('facematch:schema_migrations'))`, [], { timeoutMs: MIGRATION_TIMEOUT_MS });
      await applyMigrations(
        {
          query: (sql, params) => client.query(sql, params, { timeoutMs: MIGRATION_TIMEOUT_MS }),
          transaction: (fn) => this.inTransaction(client, 'BEGIN', fn, { timeoutMs: MIGRATION_TIMEOUT_MS }),
        },
        MIGRATION_SCOPE,
        migrations,
        this.where,
      );
    }, { discard: true });
  }

  async replacePhoto(photo: PhotoRecord, faces: readonly FaceRecord[], matches: readonly MatchRecord[]): Promise<void> {
    checkReplacement(photo, faces, matches);
    await this.transaction(
      async (tx) => {
        // One replacement of this photo at a time, across replicas; released at commit. It also
        // orders the replacement against offerMatches for the kept offers it applies.
        await lockPhotos(tx, [photo.photoId]);
        // Shared locks on the users it matches (and those of the offers it applies): a ForgetUser of
        // one of them (exclusive) either commits first, and this transaction then sees the erasure
        // and leaves the user's matches out, or waits for this one and then deletes them.
        await tx.query(
          `SELECT pg_advisory_xact_lock_shared(hashtext('facematch:user'), hashtext(u))
             FROM (SELECT DISTINCT u FROM (SELECT unnest($1::text[]) AS u UNION SELECT user_id FROM match_offers WHERE photo_id = $2) x ORDER BY 1) locked`,
          [[...new Set(matches.map((m) => m.userId))], photo.photoId],
        );
        await sql.writePhoto(tx, photo, faces, matches);
      },
      { retryOn: CONFLICTS },
    );
  }

  async offerMatches(matches: readonly MatchRecord[]): Promise<MatchRecord[]> {
    const offered = sql.bestOffers(matches);
    if (offered.length === 0) return [];
    // The photo locks (taken in one order) make each photo's replacement either see a kept offer
    // or be seen here: an offer is never lost between the two.
    return this.transaction(
      async (tx) => {
        await lockPhotos(tx, offered.map((m) => m.photoId));
        return sql.offerMatches(tx, offered);
      },
      { retryOn: [...CONFLICTS, '23503'] },
    );
  }

  getPhoto(photoId: string): Promise<{ photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } | undefined> {
    return this.transaction((tx) => sql.readPhoto(tx, photoId), { begin: 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY' });
  }

  photoRecord(photoId: string): Promise<PhotoRecord | undefined> {
    return sql.photoRecord(this.reads, photoId);
  }

  photosOfUser(userId: string, eventId?: string): Promise<UserPhoto[]> {
    return sql.photosOfUser(this.reads, userId, eventId);
  }

  photosOfEvent(eventId: string, after: string | undefined, limit: number): Promise<PhotoRecord[]> {
    return sql.photosOfEvent(this.reads, eventId, after, limit);
  }

  samplesOfUser(userId: string): Promise<PhotoRecord[]> {
    return sql.samplesOfUser(this.reads, userId);
  }

  deletePhoto(photoId: string): Promise<PhotoRecord | undefined> {
    return this.transaction((tx) => sql.deletePhoto(tx, photoId), { retryOn: CONFLICTS });
  }

  forgetUser(userId: string): Promise<PhotoRecord[]> {
    return this.transaction(
      async (tx) => {
        // Against replacePhoto's shared lock on the users it matches (see there).
        await tx.query(`SELECT pg_advisory_xact_lock(hashtext('facematch:user'), hashtext($1))`, [userId]);
        return sql.forgetUser(tx, userId);
      },
      { retryOn: CONFLICTS },
    );
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  /** Closes the pool's connections. Idempotent; later calls fail with BackendUnavailableError. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  private async query<R>(text: string, params?: unknown[]): Promise<R[]> {
    if (this.closed) throw this.unavailable(new Error('the store is closed'));
    try {
      return await this.pool.query<R>(text, params);
    } catch (error) {
      throw this.failure(error);
    }
  }

  /** Runs `fn` in one transaction on one connection, again from the start after a listed SQLSTATE. */
  private async transaction<T>(
    fn: (tx: SqlTransaction) => Promise<T>,
    options: { begin?: string; retryOn?: readonly string[] } = {},
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.withClient((client) => this.inTransaction(client, options.begin ?? 'BEGIN', fn));
      } catch (error) {
        const code = error instanceof FacematchError ? sqlState(error.cause) : undefined;
        if (attempt < ATTEMPTS && code !== undefined && options.retryOn?.includes(code)) {
          await new Promise((resolve) => setTimeout(resolve, 5 * attempt * Math.random()));
          continue;
        }
        throw error;
      }
    }
  }

  private async inTransaction<T>(
    client: PostgresClient,
    begin: string,
    fn: (tx: SqlTransaction) => Promise<T>,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    await client.query(begin, [], options);
    try {
      const result = await fn({
        query: (sql, params) => client.query(sql, params, options),
        exec: async (sql) => {
          await client.query(sql, undefined, options);
        },
      });
      await client.query('COMMIT', [], options);
      return result;
    } catch (error) {
      // The server answered (an SQL error) or we threw: the connection is sound, roll back on it.
      // Anything else (a broken connection, a timeout) skips the rollback: withClient closes the
      // connection, and the server rolls back. A failed rollback has marked the connection broken.
      if (sqlState(error) !== undefined || error instanceof FacematchError) await client.query('ROLLBACK', [], options).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Runs `fn` on a connection of the pool; typed errors out. The connection goes back to the pool
   * unless a statement failed below SQL (a broken connection, a timeout), or `discard`: then it
   * is closed.
   */
  private async withClient<T>(fn: (client: PostgresClient) => Promise<T>, o: { discard?: boolean } = {}): Promise<T> {
    if (this.closed) throw this.unavailable(new Error('the store is closed'));
    let client: PostgresClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw this.failure(error);
    }
    let broken: Error | undefined;
    const tracked: PostgresClient = {
      query: async <R>(sql: string, params?: unknown[], options?: { timeoutMs?: number }) => {
        try {
          return await client.query<R>(sql, params, options);
        } catch (error) {
          if (sqlState(error) === undefined) broken ??= error instanceof Error ? error : new Error(String(error));
          throw error;
        }
      },
      release: () => undefined,
    };
    try {
      return await fn(tracked);
    } catch (error) {
      throw this.failure(error);
    } finally {
      client.release(broken ?? (o.discard ? new Error('discarded after use') : undefined));
    }
  }

  /** A typed error for anything the driver threw; names the server. */
  private failure(error: unknown): FacematchError {
    if (error instanceof FacematchError) return error;
    const code = sqlState(error);
    if (code !== undefined) {
      // Connection, resources, operator intervention (a shutdown, a cancelled statement: the
      // statement timeout), system errors, and a lock not had within lock_timeout (55P03): the
      // server cannot serve us now.
      if (/^(08|53|57|58)/.test(code) || code === '55P03') return this.unavailable(error);
      // Anything else is a bug of ours (inputs are validated before they reach SQL).
      return new InternalError(`${this.where}: ${describe(error)} (SQLSTATE ${code})`, { cause: error });
    }
    return this.unavailable(error);
  }

  private unavailable(error: unknown): BackendUnavailableError {
    return new BackendUnavailableError(`${this.where}: ${describe(error)}`, { cause: error });
  }
}

/** Adapts a pg.Pool to the narrow interface the store uses. */
function wrapPool(pool: pg.Pool): PostgresPool {
  return {
    query: async <R>(sql: string, params?: unknown[]) => (await pool.query(sql, params)).rows as R[],
    connect: async () => {
      const client = await pool.connect();
      return {
        query: async <R>(sql: string, params?: unknown[], options?: { timeoutMs?: number }) =>
          (await client.query({ text: sql, values: params, ...(options?.timeoutMs === undefined ? {} : { query_timeout: options.timeoutMs }) })).rows as R[],
        release: (error?: Error) => client.release(error),
      };
    },
    end: () => pool.end(),
  };
}

/** The SQLSTATE of an error the server sent, if it is one. */
function sqlState(error: unknown): string | undefined {
  if (error instanceof Error && 'severity' in error && 'code' in error && typeof error.code === 'string' && /^[0-9A-Z]{5}$/.test(error.code)) {
    return error.code;
  }
  return undefined;
}

/** A message for any error; a failed connect to several addresses is an AggregateError with none. */
function describe(error: unknown): string {
  if (error instanceof AggregateError && !error.message) {
    return error.errors.map((e) => describe(e)).join('; ') || 'connection failed';
  }
  if (error instanceof Error) {
    const code = 'code' in error && typeof error.code === 'string' ? error.code : undefined;
    return error.message || code || error.name;
  }
  return String(error);
}

/**
 * Transaction advisory locks on photo ids, taken in one order (two lockers cannot deadlock) and
 * released at commit: one writer of a photo's records at a time, across replicas.
 */
async function lockPhotos(tx: SqlTransaction, photoIds: readonly string[]): Promise<void> {
  await tx.query(
    `SELECT pg_advisory_xact_lock(hashtext('facematch:photo'), hashtext(p)) FROM (SELECT DISTINCT unnest($1::text[]) AS p ORDER BY 1) locked`,
    [photoIds],
  );
}
