/**
 * KeyedLocks across replicas: PostgreSQL session advisory locks, each request's on a connection of
 * a pool of their own (so that a held lock never takes a connection the match store's statements
 * need). `pg_try_advisory_lock` is polled with a short jittered backoff rather than waited for in a
 * blocking call, so that a waiter's cancellation or deadline is honoured at once.
 *
 * What a crash while holding leaves: the server releases a session's advisory locks when its
 * connection ends. A process that is killed (SIGKILL, OOM) closes its sockets and the locks go at
 * once; a host that vanishes is noticed by TCP keepalive (on here; the server's
 * tcp_keepalives_* settings bound it). A holder whose connection breaks while it holds learns it
 * through `held.lost` and stops at its next stage; the next holder then replaces whatever it wrote
 * (every write is under deterministic ids, and the record transaction is the commit point).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { PostgresConfig } from '../../config/config.js';
import { BackendUnavailableError, CancelledError, FacematchError } from '../../domain/errors.js';
import type { HeldLocks, KeyedLocks } from '../../ports/locks.js';
import type { Logger } from '../../telemetry/logger.js';
import { describePostgres } from './postgres.match-store.js';

/** The advisory lock space of these locks (the match store's transaction locks use others). */
const LOCK_CLASS = 'facematch:lock';

export class PostgresAdvisoryLocks implements KeyedLocks {
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly where: string,
    private readonly waitMs = 120_000,
  ) {}

  static open(config: PostgresConfig, log?: Logger, options: { max?: number; waitMs?: number } = {}): PostgresAdvisoryLocks {
    const where = describePostgres(config.url);
    const pool = new pg.Pool({
      connectionString: config.url,
      max: options.max ?? config.poolMax,
      connectionTimeoutMillis: config.timeoutMs,
      idleTimeoutMillis: 30_000,
      statement_timeout: config.timeoutMs,
      query_timeout: config.timeoutMs + 1000,
      keepAlive: true,
      application_name: 'facematch-locks',
    });
    pool.on('error', (error) => log?.warn({ err: error, backend: where }, 'PostgreSQL lock connection lost'));
    return new PostgresAdvisoryLocks(pool, where, options.waitMs);
  }

  async withLocks<T>(keys: readonly string[], fn: (held: HeldLocks) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.closed) throw new BackendUnavailableError(`${this.where}: the lock pool is closed`);
    if (signal?.aborted) throw new CancelledError('the request was cancelled before it could take its locks');
    const sorted = [...new Set(keys)].sort();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw this.unavailable(error);
    }
    const lost = new AbortController();
    let broken: Error | undefined;
    const onError = (error: Error): void => {
      broken ??= error;
      lost.abort(this.unavailable(error));
    };
    client.on('error', onError);
    try {
      try {
        const deadline = Date.now() + this.waitMs;
        for (const key of sorted) await this.acquire(client, key, deadline, signal);
      } catch (error) {
        if (error instanceof FacematchError) throw error;
        // The driver failed (a broken connection, a timeout): the connection is not reused.
        broken ??= error instanceof Error ? error : new Error(String(error));
        throw this.unavailable(error);
      }
      return await fn({ lost: lost.signal });
    } finally {
      if (!broken) {
        try {
          await client.query('SELECT pg_advisory_unlock_all()');
        } catch (error) {
          broken = error instanceof Error ? error : new Error(String(error));
        }
      }
      client.off('error', onError);
      // A connection that failed is closed, not pooled: the server then drops its locks.
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  private async acquire(client: pg.PoolClient, key: string, deadline: number, signal?: AbortSignal): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS ok', [LOCK_CLASS, key]);
      if (rows[0]?.ok) return;
      if (signal?.aborted) throw new CancelledError(`the request was cancelled while waiting for ${key}`);
      if (Date.now() >= deadline) {
        throw new BackendUnavailableError(`${key} is held by another request for over ${this.waitMs} ms; retry later`);
      }
      // 5, 10, 20 ... 200 ms, jittered: a holder's write phase is typically tens to hundreds of ms.
      const delay = Math.min(200, 5 * 2 ** Math.min(attempt, 6)) * (0.5 + Math.random() / 2);
      // Node's timer rejects when the signal aborts; the loop's check above then answers CANCELLED.
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), undefined, signal ? { signal } : {}).catch(() => undefined);
    }
  }

  private unavailable(error: unknown): BackendUnavailableError {
    return new BackendUnavailableError(`${this.where}: ${error instanceof Error ? error.message || error.name : String(error)}`, { cause: error });
  }
}
