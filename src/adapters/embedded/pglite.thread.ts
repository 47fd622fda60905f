/**
 * The embedded database in a thread of its own (./pglite.worker.ts), and the stores on it as the
 * service sees them: ThreadedVectorStore and ThreadedMatchStore send each call to the thread in one
 * message and get its result in one reply, while PgliteVectorStore and PgliteMatchStore run there
 * unchanged, with all their statements. The service uses it with FACEMATCH_EMBEDDED_DB_THREAD=true
 * (off by default: README, "Embedded stores").
 *
 * Why. PGlite runs each statement synchronously on the thread that holds it. On the main thread a
 * table's IVFFlat build holds the event loop for seconds (1.4-1.7 s at 10,000 rows, 11.1 s at 80,000), and a photo's
 * statements for ~40 ms of a loaded core. Session 10 tried one message per statement (two
 * cross-thread wake-ups each, ~19 a photo) and it was slower under load on two cores; a store call
 * is one message each way, 3-5 a photo.
 *
 * One thread per data directory in this process: `open()` hands out leases on it, and it closes
 * with its last lease. A thread that dies fails the calls it had as BACKEND_UNAVAILABLE (a call cut
 * off may or may not have committed, as in a crash); the next call starts a new thread, which opens
 * the database again (PostgreSQL's recovery replays the WAL), and each store is made there again
 * and initialised as it was.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { BackendUnavailableError, errorFromJSON, type FacematchError } from '../../domain/errors.js';
import type { FaceRecord, MatchRecord, PhotoRecord } from '../../domain/photo.js';
import type { MatchStore, UserPhoto } from '../../ports/match-store.js';
import type {
  Collection,
  SearchQuery,
  VectorHit,
  VectorRecord,
  VectorStore,
  VectorStoreInitOptions,
} from '../../ports/vector-store.js';
import { workerModule } from '../../inference/worker/entry.js';
import { releaseLockOfThisProcess } from './pglite.database.js';
import type { DbReply, DbRequest, DbWorkerData, StoreKind } from './pglite.protocol.js';
import type { PgliteVectorStoreOptions } from './pglite.vector-store.js';

/** A request before its id is given. */
type Unsent = DbRequest extends infer R ? (R extends DbRequest ? Omit<R, 'id'> : never) : never;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: FacematchError) => void;
}

/** The thread of one directory: counted leases, and while its last lease closes, `closing`. */
interface Entry {
  dir: string;
  /** The thread now; replaced when it has died (see `PgliteThread.thread`). */
  current: Promise<DbThread>;
  /** Set when `current` failed to start: the next call tries again. */
  failed?: boolean;
  leases: number;
  closing?: Promise<void>;
}

/** Makes `started` the entry's thread; if it fails to start, the next call tries again. */
function track(entry: Entry, started: Promise<DbThread>): void {
  entry.current = started;
  entry.failed = false;
  started.catch(() => {
    if (entry.current === started) entry.failed = true;
  });
}

/** Starts a new thread for the entry; `entry.current` is its start. */
function startIn(entry: Entry): Promise<DbThread> {
  track(entry, DbThread.start(entry.dir));
  return entry.current;
}

const threads = new Map<string, Entry>();

/** A thread running the embedded database of one directory. */
class DbThread {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextStore = 1;
  /** Why the thread is gone, once it is. */
  private gone: FacematchError | undefined;
  /** Whether it opened the database (and so held the directory's lock). */
  private opened = false;
  /** Whether it was closed on purpose. */
  private closing = false;

  private constructor(
    private readonly worker: Worker,
    readonly dataDir: string,
  ) {}

  static start(dataDir: string): Promise<DbThread> {
    const { url, entry } = workerModule('pglite.worker', import.meta.url);
    const worker = new Worker(url, { workerData: { entry, dataDir } satisfies DbWorkerData });
    const thread = new DbThread(worker, dataDir);
    return new Promise((resolve, reject) => {
      thread.pending.set(0, {
        resolve: () => {
          thread.opened = true;
          resolve(thread);
        },
        reject,
      });
      worker.on('message', (m: DbReply) => thread.answer(m));
      worker.on('error', (e) => thread.fail(e));
      worker.on('exit', (code) => thread.fail(new Error(`the thread exited with code ${code}`)));
      thread.idle();
    });
  }

  /** Sends one request; its reply's value, or its error typed. */
  request(message: Unsent): Promise<unknown> {
    if (this.gone) return Promise.reject(this.gone);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage({ ...message, id });
    });
  }

  /** A new store object in the thread; returns its id. Calls sent after this message find it made. */
  create(kind: StoreKind, options?: PgliteVectorStoreOptions): { store: number; made: Promise<unknown> } {
    const store = this.nextStore++;
    return { store, made: this.request({ op: 'create', store, kind, ...(options ? { options } : {}) }) };
  }

  /** Whether it has died (not closed): the next call needs a new thread. */
  get dead(): boolean {
    return this.gone !== undefined && !this.closing;
  }

  async close(): Promise<void> {
    this.closing = true;
    try {
      if (!this.gone) await this.request({ op: 'close' });
    } finally {
      this.gone ??= new BackendUnavailableError(`embedded database at ${this.dataDir}: closed`);
      await this.worker.terminate();
    }
  }

  /** Stops the thread at once, as a crash would (tests). */
  async terminate(): Promise<void> {
    await this.worker.terminate();
  }

  /**
   * After a death: the lock file the thread's database wrote names this process, and no instance
   * holds it any more (a thread of ours opens the directory only when nothing else of this process
   * does). A thread that never opened the database took no lock.
   */
  async releaseLock(): Promise<void> {
    if (this.opened) await releaseLockOfThisProcess(this.dataDir);
  }

  private answer(m: DbReply): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    this.idle();
    if (m.ok) p.resolve(m.value);
    else p.reject(errorFromJSON(m.error));
  }

  private fail(e: Error): void {
    this.gone ??= new BackendUnavailableError(`embedded database at ${this.dataDir}: its thread failed: ${e.message}`, { cause: e });
    for (const p of this.pending.values()) p.reject(this.gone);
    this.pending.clear();
  }

  /** Idle, the thread must not keep the process alive; with calls in flight, it must. */
  private idle(): void {
    if (this.pending.size === 0) this.worker.unref();
  }
}

/** A lease on the embedded database thread of a data directory. */
export class PgliteThread {
  private closed = false;

  private constructor(
    private readonly entry: Entry,
    readonly dataDir: string,
  ) {}

  /**
   * Starts (or shares) the thread of `dataDir`, which opens the database there (creating it if
   * needed, under the directory's lock: see ./pglite.database.ts). Every call returns a new lease.
   */
  static async open(dataDir: string): Promise<PgliteThread> {
    const dir = path.resolve(dataDir);
    let entry = threads.get(dir);
    while (entry?.closing) {
      await entry.closing.catch(() => undefined);
      entry = threads.get(dir);
    }
    if (!entry) {
      const current = DbThread.start(dir);
      const created: Entry = { dir, current, leases: 0 };
      track(created, current);
      threads.set(dir, created);
      entry = created;
    }
    entry.leases++;
    const lease = new PgliteThread(entry, dir);
    try {
      await lease.thread();
      return lease;
    } catch (error) {
      entry.leases--;
      if (entry.leases === 0 && threads.get(dir) === entry) threads.delete(dir);
      throw error;
    }
  }

  /** Whether this process has a thread on `dataDir` (for tests' inspection of the storage). */
  static holds(dataDir: string): boolean {
    return threads.has(path.resolve(dataDir));
  }

  /** A vector store in the thread (its own lease there). */
  vectorStore(options?: PgliteVectorStoreOptions): ThreadedVectorStore {
    return new ThreadedVectorStore(this, 'vectors', options);
  }

  /** A match store in the thread (its own lease there). */
  matchStore(): ThreadedMatchStore {
    return new ThreadedMatchStore(this, 'matches');
  }

  /** One statement outside the stores (diagnostics and tests); rows as PGlite returns them. */
  async query<T>(sql: string, params?: unknown[]): Promise<T[]> {
    return (await (await this.thread()).request({ op: 'query', sql, ...(params ? { params } : {}) })) as T[];
  }

  /** Stops the thread at once, as a crash would: its calls fail, the next call starts a new one (tests). */
  async terminate(): Promise<void> {
    await (await this.thread()).terminate();
  }

  /** The thread to send a call to: the running one, or, if it has died, a new one. */
  async thread(): Promise<DbThread> {
    if (this.closed) throw new BackendUnavailableError(`embedded database at ${this.dataDir}: closed`);
    const { entry } = this;
    if (entry.failed) track(entry, DbThread.start(entry.dir));
    const current = entry.current;
    const thread = await current;
    if (!thread.dead) return thread;
    // Died: the first call to see it starts the next thread; the others wait for that one.
    if (entry.current === current) {
      entry.current = thread.releaseLock().then(() => startIn(entry));
    }
    return this.thread();
  }

  /** Ends this lease; the thread closes the database and stops with the last one. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (--this.entry.leases > 0) return;
    this.entry.closing = (async () => {
      try {
        const thread = await this.entry.current.catch(() => undefined);
        if (thread?.dead) await thread.releaseLock();
        else await thread?.close();
      } finally {
        threads.delete(this.dataDir);
      }
    })();
    await this.entry.closing;
  }

}

/**
 * A store object in the thread: each call one message. Made in the thread at the first call, and
 * again (with its last successful init() replayed) in a thread that replaced a dead one.
 */
abstract class InThread {
  private made: { thread: DbThread; store: number; ready: Promise<unknown> } | undefined;
  /** The arguments of the last init() that succeeded. */
  private initArgs: unknown[] | undefined;

  constructor(
    private readonly lease: PgliteThread,
    private readonly kind: StoreKind,
    private readonly options?: PgliteVectorStoreOptions,
  ) {}

  protected async call<T>(method: string, ...args: unknown[]): Promise<T> {
    // A store whose thread died holds nothing to close; no new thread is started for it.
    if (method === 'close' && (!this.made || this.made.thread.dead)) return undefined as T;
    const thread = await this.lease.thread();
    if (this.made?.thread !== thread) {
      const { store, made } = thread.create(this.kind, this.options);
      const replay = this.initArgs;
      const ready = replay && method !== 'init' ? made.then(() => thread.request({ op: 'call', store, method: 'init', args: replay })) : made;
      this.made = { thread, store, ready };
    }
    const { store, ready } = this.made;
    await ready;
    const value = (await thread.request({ op: 'call', store, method, args })) as T;
    if (method === 'init') this.initArgs = args;
    return value;
  }
}

/** VectorStore on the embedded database thread: PgliteVectorStore, run there. */
export class ThreadedVectorStore extends InThread implements VectorStore {
  init(dimension: number, options?: VectorStoreInitOptions): Promise<void> {
    return this.call('init', dimension, options);
  }
  upsert(collection: Collection, records: readonly VectorRecord[]): Promise<void> {
    return this.call('upsert', collection, records);
  }
  search(collection: Collection, query: SearchQuery): Promise<VectorHit[]> {
    return this.call('search', collection, query);
  }
  searchMany(collection: Collection, queries: readonly SearchQuery[]): Promise<VectorHit[][]> {
    return this.call('searchMany', collection, queries);
  }
  deleteByPhoto(collection: Collection, photoId: string): Promise<number> {
    return this.call('deleteByPhoto', collection, photoId);
  }
  replacePhoto(photoId: string, collection: Collection, records: readonly VectorRecord[]): Promise<void> {
    return this.call('replacePhoto', photoId, collection, records);
  }
  deleteByUser(userId: string): Promise<number> {
    return this.call('deleteByUser', userId);
  }
  ping(): Promise<void> {
    return this.call('ping');
  }
  close(): Promise<void> {
    return this.call('close');
  }
}

/** MatchStore on the embedded database thread: PgliteMatchStore, run there. */
export class ThreadedMatchStore extends InThread implements MatchStore {
  init(): Promise<void> {
    return this.call('init');
  }
  replacePhoto(photo: PhotoRecord, faces: readonly FaceRecord[], matches: readonly MatchRecord[]): Promise<void> {
    return this.call('replacePhoto', photo, faces, matches);
  }
  offerMatches(matches: readonly MatchRecord[]): Promise<MatchRecord[]> {
    return this.call('offerMatches', matches);
  }
  getPhoto(photoId: string): Promise<{ photo: PhotoRecord; faces: FaceRecord[]; matches: MatchRecord[] } | undefined> {
    return this.call('getPhoto', photoId);
  }
  photoRecord(photoId: string): Promise<PhotoRecord | undefined> {
    return this.call('photoRecord', photoId);
  }
  photosOfUser(userId: string, eventId?: string): Promise<UserPhoto[]> {
    return this.call('photosOfUser', userId, eventId);
  }
  photosOfEvent(eventId: string, after: string | undefined, limit: number): Promise<PhotoRecord[]> {
    return this.call('photosOfEvent', eventId, after, limit);
  }
  samplesOfUser(userId: string): Promise<PhotoRecord[]> {
    return this.call('samplesOfUser', userId);
  }
  deletePhoto(photoId: string): Promise<PhotoRecord | undefined> {
    return this.call('deletePhoto', photoId);
  }
  forgetUser(userId: string): Promise<PhotoRecord[]> {
    return this.call('forgetUser', userId);
  }
  ping(): Promise<void> {
    return this.call('ping');
  }
  close(): Promise<void> {
    return this.call('close');
  }
}
