/**
 * The embedded database: one PGlite (PostgreSQL compiled to WASM) instance per data directory,
 * shared by the embedded vector store and match store, plus a small versioned-migration runner.
 *
 * Durability: PGlite writes the WAL and data files through Node's fs with fsync disabled (`-F`, and
 * its WASM fsync is a no-op), so a committed transaction is in the OS page cache when the call
 * returns. It survives the process being killed (SIGKILL, OOM) — PostgreSQL's crash recovery replays
 * the WAL on the next open — but not a power loss or a kernel crash.
 *
 * Three guards around PGlite itself:
 * - One instance per directory per process: `open()` hands out leases on a shared instance (of this
 *   thread; another thread's instance is refused by the lock file, which records the process's start).
 * - One process per directory: a lock file (`facematch.lock`, pid + host) refuses a second process.
 *   PGlite has none, and two processes on one directory silently corrupt it. A lock whose process
 *   is gone (killed) is taken over.
 * - A fresh directory is initialised in a staging directory and moved into place, `PG_VERSION`
 *   last: PGlite decides "initialised" by `PG_VERSION`, and a process killed while PGlite was
 *   unpacking initdb's output into the directory left one that could never be opened again.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { applyMigrations, readMigrations, type SqlTransaction } from '../sql/migrations.js';
import {
  BackendUnavailableError,
  ConfigError,
  FacematchError,
  InternalError,
} from '../../domain/errors.js';

// The migration runner and the relational schema's folder are shared with the PostgreSQL adapter.
export { MATCH_MIGRATIONS_DIR, readMigrations, type Migration, type SqlTransaction } from '../sql/migrations.js';

/**
 * pgvector tables of the embedded vector store; `{{DIM}}` is the embedding dimension. The folder
 * beside this module, in src/ or dist/ (the build copies the .sql files: scripts/build.mjs).
 */
export const VECTOR_MIGRATIONS_DIR = path.join(import.meta.dirname, 'migrations');

const LOCK_FILE = 'facematch.lock';
/** Where a new data directory is initialised before it is moved into place. */
const STAGING = '.initdb';
/** What PostgreSQL's initdb puts in a data directory: the only names we ever remove. */
const PGDATA_ENTRY = /^(PG_VERSION|base|global|pg_[a-z_]+|postgresql(\.auto)?\.conf|postmaster\.(pid|opts))$/;

interface Shared {
  pg: PGlite;
  releaseLock: () => Promise<void>;
}

/** The instance of one directory: counted leases, and while its last lease closes, `closing`. */
interface Entry {
  ready: Promise<Shared>;
  leases: number;
  closing?: Promise<void>;
}

/** A transaction of the embedded database: SQL, plus COPY from bytes held in memory. */
export interface PgliteTransaction extends SqlTransaction {
  /**
   * Runs `COPY ... FROM '/dev/blob'` (PGlite's name for data handed over with the statement) with
   * `data` as the file; returns the rows copied.
   */
  copyIn(sql: string, data: Uint8Array<ArrayBuffer>): Promise<number>;
}

/** Open instances of this process, by resolved data directory. */
const instances = new Map<string, Entry>();

/** A lease on the embedded database of a data directory. */
export class PgliteDatabase {
  private closed = false;

  private constructor(
    private readonly entry: Entry,
    private readonly shared: Shared,
    readonly dataDir: string,
  ) {}

  /**
   * Opens (creating and initialising it if needed) the database in `dataDir`. Every call returns a
   * new lease on the one instance of that directory; the instance closes with its last lease.
   */
  static async open(dataDir: string): Promise<PgliteDatabase> {
    const dir = path.resolve(dataDir);
    let entry = instances.get(dir);
    // An instance that is closing is waited for: never two on one directory, even briefly.
    while (entry?.closing) {
      await entry.closing.catch(() => undefined);
      entry = instances.get(dir);
    }
    if (!entry) {
      const created: Entry = { ready: start(dir), leases: 0 };
      instances.set(dir, created);
      created.ready.catch(() => {
        if (instances.get(dir) === created) instances.delete(dir);
      });
      entry = created;
    }
    // Counted before the await, so that a lease closing meanwhile does not close the instance.
    entry.leases++;
    try {
      return new PgliteDatabase(entry, await entry.ready, dir);
    } catch (error) {
      entry.leases--;
      throw error;
    }
  }

  /** The PGlite handle (for the stores of this folder and for tests). */
  get pg(): PGlite {
    if (this.closed) throw this.unavailable(new Error('closed'));
    return this.shared.pg;
  }

  /**
   * PGlite runs each statement synchronously on this thread, and its promises chain through
   * microtasks only: without a yield, a batch of statements would hold the event loop for its whole
   * duration. Every statement is followed by a yield, so the loop waits for one statement at most
   * (the service runs this in the database's own thread, ./pglite.thread.ts: there the yield lets
   * the thread take the next call's message between statements).
   */
  async query<T>(sql: string, params?: unknown[]): Promise<T[]> {
    try {
      const { rows } = await this.pg.query<T>(sql, params);
      await yieldToEventLoop();
      return rows;
    } catch (error) {
      throw this.failure(error);
    }
  }

  /** Runs `fn` in one transaction (PGlite runs nothing else meanwhile); rolls back if it throws. */
  async transaction<T>(fn: (tx: PgliteTransaction) => Promise<T>): Promise<T> {
    try {
      return await this.pg.transaction(async (tx) =>
        fn({
          query: async <R>(sql: string, params?: unknown[]) => {
            const { rows } = await tx.query<R>(sql, params);
            await yieldToEventLoop();
            return rows;
          },
          exec: async (sql: string) => {
            await tx.exec(sql);
            await yieldToEventLoop();
          },
          copyIn: async (sql: string, data: Uint8Array<ArrayBuffer>) => {
            const result = await tx.query(sql, [], { blob: new Blob([data]) });
            await yieldToEventLoop();
            return result.affectedRows ?? 0;
          },
        }),
      );
    } catch (error) {
      throw this.failure(error);
    }
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  /**
   * Applies the migrations of `folder` not yet recorded for `scope` in `schema_migrations`, in
   * order, each in its own transaction with its record. Refuses a database that has a migration
   * this code does not know (written by a newer version) or whose applied file has changed.
   */
  async migrate(scope: string, folder: string, vars: Readonly<Record<string, string>> = {}): Promise<string[]> {
    return applyMigrations(this, scope, await readMigrations(folder, vars), `embedded database at ${this.dataDir}`);
  }

  /** Ends this lease; the instance closes (and unlocks its directory) with its last lease. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (--this.entry.leases > 0) return;
    const { pg, releaseLock } = this.shared;
    this.entry.closing = (async () => {
      try {
        if (!pg.closed) await pg.close();
      } finally {
        await releaseLock();
        instances.delete(this.dataDir);
      }
    })();
    await this.entry.closing;
  }

  /** A typed error for anything a query threw; names the backend. */
  private failure(error: unknown): FacematchError {
    if (error instanceof FacematchError) return error;
    if (isSqlError(error)) {
      // Connection, resources, operator intervention, system and internal errors: the store is unusable.
      if (/^(08|53|57|58|XX)/.test(error.code)) return this.unavailable(error);
      // Anything else is a bug of ours (inputs are validated before they reach SQL).
      return new InternalError(`embedded database at ${this.dataDir}: ${error.message} (SQLSTATE ${error.code})`, { cause: error });
    }
    return this.unavailable(error);
  }

  private unavailable(error: unknown): BackendUnavailableError {
    return new BackendUnavailableError(`embedded database at ${this.dataDir}: ${message(error)}`, { cause: error });
  }
}

async function start(dir: string): Promise<Shared> {
  const fail = (error: unknown): FacematchError =>
    error instanceof FacematchError
      ? error
      : new BackendUnavailableError(`embedded database at ${dir}: ${message(error)}`, { cause: error });
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw fail(error);
  }
  const releaseLock = await lock(dir);
  try {
    if (!(await exists(path.join(dir, 'PG_VERSION')))) await initialise(dir);
    const pg = await PGlite.create({ dataDir: dir, extensions: { vector } });
    return { pg, releaseLock };
  } catch (error) {
    await releaseLock();
    throw fail(error);
  }
}

/**
 * Runs initdb in a staging directory inside `dir` (same file system, even when `dir` is a mount
 * point) and moves the result up, PG_VERSION last.
 */
async function initialise(dir: string): Promise<void> {
  const entries = (await readdir(dir)).filter((e) => e !== LOCK_FILE && e !== STAGING && e !== 'lost+found');
  const foreign = entries.filter((e) => !PGDATA_ENTRY.test(e));
  if (foreign.length > 0) {
    throw new ConfigError(`embedded database at ${dir}: the directory is not empty and not a database (${foreign.slice(0, 3).join(', ')})`);
  }
  // Leftovers of an initialisation that was killed before PG_VERSION was in place: never data.
  for (const e of [...entries, STAGING]) await rm(path.join(dir, e), { recursive: true, force: true });

  const staging = path.join(dir, STAGING);
  const pg = await PGlite.create({ dataDir: staging, extensions: { vector } });
  await pg.close();
  for (const e of await readdir(staging)) if (e !== 'PG_VERSION') await rename(path.join(staging, e), path.join(dir, e));
  await rename(path.join(staging, 'PG_VERSION'), path.join(dir, 'PG_VERSION'));
  await rmdir(staging);
}

interface LockOwner {
  pid: number;
  host: string;
  token?: string;
  /** When the process started (Linux: /proc/self/stat's start time): tells this process from an earlier one with its pid. */
  started?: string;
}

/** This process's start time in clock ticks since boot (Linux), the same in every thread of it. */
const STARTED: string | undefined = (() => {
  try {
    // Field 22; the command name (field 2) may hold spaces and parentheses, so count from its end.
    const stat = readFileSync('/proc/self/stat', 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
})();

/** Creates the directory's lock file, taking over one whose process is gone; returns the release. */
async function lock(dir: string): Promise<() => Promise<void>> {
  const file = path.join(dir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: hostname(), token: randomUUID(), ...(STARTED ? { started: STARTED } : {}) };
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(file, 'wx');
      try {
        await handle.writeFile(JSON.stringify({ ...me, since: new Date().toISOString() }));
      } finally {
        await handle.close();
      }
      // Removes the lock only while it is still ours.
      return async () => {
        if ((await readOwner(file))?.token === me.token) await unlink(file).catch(() => undefined);
      };
    } catch (error) {
      if (errno(error) !== 'EEXIST' || attempt > 2) {
        throw new BackendUnavailableError(`embedded database at ${dir}: cannot lock ${file}: ${message(error)}`, { cause: error });
      }
    }
    const owner = await readOwner(file);
    if (owner && isAlive(owner, me)) {
      throw new BackendUnavailableError(
        owner.pid === me.pid
          ? `embedded database at ${dir}: in use by another thread of this process (${file}); one instance at a time`
          : `embedded database at ${dir}: in use by process ${owner.pid} on ${owner.host} (${file}); one process at a time`,
      );
    }
    await unlink(file).catch(() => undefined);
  }
}

/**
 * Removes the directory's lock file if it names this very process (pid and start time): what a
 * thread of this process that died with the database open leaves behind (./pglite.thread.ts). Only
 * for a directory no instance of this process holds any more.
 */
export async function releaseLockOfThisProcess(dataDir: string): Promise<void> {
  const file = path.join(path.resolve(dataDir), LOCK_FILE);
  const owner = await readOwner(file);
  if (owner && owner.host === hostname() && owner.pid === process.pid && STARTED !== undefined && owner.started === STARTED) {
    await unlink(file).catch(() => undefined);
  }
}

async function readOwner(file: string): Promise<LockOwner | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, 'utf8'));
    if (typeof parsed === 'object' && parsed !== null && 'pid' in parsed && 'host' in parsed) {
      const { pid, host } = parsed;
      const token = 'token' in parsed && typeof parsed.token === 'string' ? parsed.token : undefined;
      const started = 'started' in parsed && typeof parsed.started === 'string' ? parsed.started : undefined;
      if (typeof pid === 'number' && typeof host === 'string') return { pid, host, token, ...(started ? { started } : {}) };
    }
  } catch {
    // Unreadable or half-written by a killed process: stale.
  }
  return undefined;
}

/**
 * Whether the lock's process still runs. Our own pid is this process only with our start time:
 * another thread of it holds the directory (`instances` is per thread; the service runs the
 * database in a thread of its own, ./pglite.thread.ts). With another start time, or none recorded,
 * it was an earlier process with our pid (a container restarted: pid 1 again). Another host cannot
 * be checked: a volume moved with a rescheduled pod keeps the old pod's lock, so it counts as gone.
 */
function isAlive(owner: LockOwner, me: LockOwner): boolean {
  if (owner.host !== me.host) return false;
  if (owner.pid === me.pid) return owner.started !== undefined && owner.started === me.started;
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (error) {
    return errno(error) === 'EPERM';
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if (errno(error) === 'ENOENT') return false;
    throw error;
  }
}

function isSqlError(error: unknown): error is Error & { code: string; severity: string } {
  return (
    error instanceof Error &&
    'severity' in error &&
    'code' in error &&
    typeof error.code === 'string' &&
    /^[0-9A-Z]{5}$/.test(error.code)
  );
}

function errno(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
