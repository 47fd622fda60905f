/**
 * MatchStore on PostgreSQL (15+), with node-postgres. The schema and the migration runner are the
 * embedded store's (src/adapters/postgres/migrations, ./migrations.ts), and so is every statement:
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
import {
  APPLY_PENDING_OFFERS_SQL,
  checkMatch,
  checkReplacement,
  DROP_PENDING_OFFERS_SQL,
  faceJson,
  KEEP_PENDING_OFFERS_SQL,
  MATCH_COLUMNS,
  matchJson,
  offerJson,
  PHOTO_COLUMNS,
  toFace,
  toMatch,
  toPhoto,
  type FaceRow,
  type MatchRow,
  type PhotoRow,
} from './match-rows.js';
import { applyMigrations, MATCH_MIGRATIONS_DIR, readMigrations, type SqlTransaction } from './migrations.js';

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
        // One replacement of this photo at a time, across replicas; released at commit.
        await tx.query(`SELECT pg_advisory_xact_lock(hashtext('facematch:photo'), hashtext($1))`, [photo.photoId]);
        // Cascades to the photo's faces and their matches.
        await tx.query('DELETE FROM photos WHERE photo_id = $1', [photo.photoId]);
        await tx.query(`INSERT INTO photos (${PHOTO_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
          photo.photoId,
          photo.eventId,
          photo.kind,
          photo.userId ?? null,
          photo.sourceUrl,
          photo.width,
          photo.height,
          photo.annotatedKey ?? null,
          photo.processedAt.toISOString(),
        ]);
        if (faces.length > 0) {
          await tx.query(
            `INSERT INTO faces (face_id, photo_id, idx, box_x, box_y, box_width, box_height, score, landmarks)
             SELECT f.face_id, $1, f.idx, f.box_x, f.box_y, f.box_width, f.box_height, f.score, f.landmarks
               FROM jsonb_to_recordset($2::jsonb) AS f(face_id text, idx integer, box_x double precision,
                 box_y double precision, box_width double precision, box_height double precision,
                 score double precision, landmarks jsonb)`,
            [photo.photoId, JSON.stringify(faces.map(faceJson))],
          );
        }
        if (matches.length > 0) {
          await tx.query(
            `INSERT INTO matches (${MATCH_COLUMNS})
             SELECT m.face_id, $1, m.user_id, $2, m.similarity, m.matched_at
               FROM jsonb_to_recordset($3::jsonb) AS m(face_id text, user_id text, similarity real, matched_at timestamptz)`,
            [photo.photoId, photo.eventId, JSON.stringify(matches.map(matchJson))],
          );
        }
        // Offers an enrolment made while this photo was not recorded yet (migration 0002); the
        // photo lock above orders this against offerMatches.
        await tx.query(APPLY_PENDING_OFFERS_SQL, [photo.photoId, photo.eventId]);
        await tx.query(DROP_PENDING_OFFERS_SQL, [photo.photoId]);
      },
      { retryOn: CONFLICTS },
    );
  }

  async offerMatches(matches: readonly MatchRecord[]): Promise<MatchRecord[]> {
    // One offer per face, its best: a statement may not update a row twice.
    const best = new Map<string, MatchRecord>();
    for (const m of matches) {
      checkMatch(m);
      const current = best.get(m.faceId);
      if (!current || m.similarity > current.similarity) best.set(m.faceId, m);
    }
    if (best.size === 0) return [];
    // Only faces of action shots that exist; photo and event come from the face's photo. Writes
    // only where the face has no match yet or a worse one. Faces not recorded yet keep the offer
    // until their photo is (an action shot between its vector write and its record). The photo
    // locks (taken in one order) make each photo's replacement either see the kept offer or be
    // seen here: an offer is never lost between the two.
    const offered = [...best.values()];
    const photoIds = [...new Set(offered.map((m) => m.photoId))].sort();
    const written = await this.transaction(
      async (tx) => {
        await tx.query(
          `SELECT pg_advisory_xact_lock(hashtext('facematch:photo'), hashtext(p)) FROM (SELECT unnest($1::text[]) AS p ORDER BY 1) locked`,
          [photoIds],
        );
        const rows = await tx.query<{ face_id: string; photo_id: string; event_id: string }>(
          `INSERT INTO matches (${MATCH_COLUMNS})
           SELECT m.face_id, f.photo_id, m.user_id, p.event_id, m.similarity, m.matched_at
             FROM jsonb_to_recordset($1::jsonb) AS m(face_id text, user_id text, similarity real, matched_at timestamptz)
             JOIN faces f ON f.face_id = m.face_id
             JOIN photos p ON p.photo_id = f.photo_id AND p.kind = 'ACTION_SHOT'
            -- Rows locked in one order by every writer: two offers of the same faces cannot deadlock.
            ORDER BY m.face_id
           ON CONFLICT (face_id) DO UPDATE SET photo_id = EXCLUDED.photo_id, user_id = EXCLUDED.user_id,
             event_id = EXCLUDED.event_id, similarity = EXCLUDED.similarity, matched_at = EXCLUDED.matched_at
             WHERE matches.similarity < EXCLUDED.similarity
           RETURNING face_id, photo_id, event_id`,
          [JSON.stringify(offered.map(matchJson))],
        );
        await tx.query(KEEP_PENDING_OFFERS_SQL, [JSON.stringify(offered.map(offerJson))]);
        return rows;
      },
      { retryOn: [...CONFLICTS, '23503'] },
    );
    return written.map((row) => ({ ...best.get(row.face_id)!, photoId: row.photo_id, eventId: row.event_id }));
  }

  async getPhoto(photoId: string): Promise<{ photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } | undefined> {
    return this.transaction(
      async (tx) => {
        const [photo] = await tx.query<PhotoRow>(`SELECT ${PHOTO_COLUMNS} FROM photos WHERE photo_id = $1`, [photoId]);
        if (!photo) return undefined;
        const faces = await tx.query<FaceRow>('SELECT * FROM faces WHERE photo_id = $1 ORDER BY idx', [photoId]);
        const matches = await tx.query<MatchRow>(
          `SELECT m.face_id, m.photo_id, m.user_id, m.event_id, m.similarity, m.matched_at
             FROM matches m JOIN faces f ON f.face_id = m.face_id WHERE m.photo_id = $1 ORDER BY f.idx`,
          [photoId],
        );
        return { photo: toPhoto(photo), faces: faces.map(toFace), matches: matches.map(toMatch) };
      },
      { begin: 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY' },
    );
  }

  async photosOfUser(userId: string, eventId?: string): Promise<UserPhoto[]> {
    const rows = await this.query<{ photo_id: string; event_id: string; similarity: number }>(
      `SELECT photo_id, event_id, max(similarity) AS similarity FROM matches
        WHERE user_id = $1 ${eventId === undefined ? '' : 'AND event_id = $2'}
        GROUP BY photo_id, event_id ORDER BY similarity DESC, photo_id`,
      eventId === undefined ? [userId] : [userId, eventId],
    );
    return rows.map((r) => ({ photoId: r.photo_id, eventId: r.event_id, similarity: r.similarity }));
  }

  async samplesOfUser(userId: string): Promise<PhotoRecord[]> {
    const rows = await this.query<PhotoRow>(
      `SELECT ${PHOTO_COLUMNS} FROM photos WHERE user_id = $1 AND kind = 'FACECAM' ORDER BY processed_at, photo_id`,
      [userId],
    );
    return rows.map(toPhoto);
  }

  async deletePhoto(photoId: string): Promise<PhotoRecord | undefined> {
    return this.transaction(
      async (tx) => {
        await tx.query(DROP_PENDING_OFFERS_SQL, [photoId]);
        const [row] = await tx.query<PhotoRow>(`DELETE FROM photos WHERE photo_id = $1 RETURNING ${PHOTO_COLUMNS}`, [photoId]);
        return row && toPhoto(row);
      },
      { retryOn: CONFLICTS },
    );
  }

  async forgetUser(userId: string): Promise<PhotoRecord[]> {
    return this.transaction(
      async (tx) => {
        await tx.query('DELETE FROM matches WHERE user_id = $1', [userId]);
        await tx.query('DELETE FROM match_offers WHERE user_id = $1', [userId]);
        const removed = await tx.query<PhotoRow>(`DELETE FROM photos WHERE user_id = $1 AND kind = 'FACECAM' RETURNING ${PHOTO_COLUMNS}`, [userId]);
        // Any other photo that names the user keeps its content but no longer the name.
        await tx.query('UPDATE photos SET user_id = NULL WHERE user_id = $1', [userId]);
        return removed.map(toPhoto).sort((a, b) => a.processedAt.getTime() - b.processedAt.getTime() || a.photoId.localeCompare(b.photoId));
      },
      { retryOn: CONFLICTS },
    );
  }

  async countUserRows(userId: string): Promise<number> {
    const [row] = await this.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM photos WHERE user_id = $1)::int + (SELECT count(*) FROM matches WHERE user_id = $1)::int
            + (SELECT count(*) FROM match_offers WHERE user_id = $1)::int AS n`,
      [userId],
    );
    return row?.n ?? 0;
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

  private async query<R>(sql: string, params?: unknown[]): Promise<R[]> {
    if (this.closed) throw this.unavailable(new Error('the store is closed'));
    try {
      return await this.pool.query<R>(sql, params);
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
