/**
 * The embedded database in a thread of its own (./pglite.worker.ts), and the stores on it as the
 * service sees them: ThreadedVectorStore and ThreadedMatchStore send each call to the thread in one
 * message and get its result in one reply, while PgliteVectorStore and PgliteMatchStore run there
 * unchanged, with all their statements.
 *
 * Why. PGlite runs each statement synchronously on the thread that holds it. On the main thread a
 * table's IVFFlat build held the event loop for seconds (7.8 s at 10,000 rows), and a photo's
 * statements for ~40 ms of a loaded core. Session 10 tried one message per statement (two
 * cross-thread wake-ups each, ~19 a photo) and it was slower under load on two cores; a store call
 * is one message each way, 3-5 a photo.
 *
 * One thread per data directory in this process: `open()` hands out leases on it, and it closes
 * with its last lease. A thread that dies fails the calls it had and every later one as
 * BACKEND_UNAVAILABLE (what the committed transactions hold stays on disk: PostgreSQL's recovery
 * replays the WAL at the next open).
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
  ready: Promise<DbThread>;
  leases: number;
  closing?: Promise<void>;
}

const threads = new Map<string, Entry>();

/** A thread running the embedded database of one directory. */
class DbThread {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextStore = 1;
  /** Why the thread is gone, once it is. */
  private gone: FacematchError | undefined;

  private constructor(
    private readonly worker: Worker,
    readonly dataDir: string,
  ) {}

  static start(dataDir: string): Promise<DbThread> {
    const { url, entry } = workerModule('pglite.worker', import.meta.url);
    const worker = new Worker(url, { workerData: { entry, dataDir } satisfies DbWorkerData });
    const thread = new DbThread(worker, dataDir);
    return new Promise((resolve, reject) => {
      thread.pending.set(0, { resolve: () => resolve(thread), reject });
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

  async close(): Promise<void> {
    try {
      if (!this.gone) await this.request({ op: 'close' });
    } finally {
      this.gone ??= new BackendUnavailableError(`embedded database at ${this.dataDir}: closed`);
      await this.worker.terminate();
    }
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
    private readonly thread: DbThread,
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
      const created: Entry = { ready: DbThread.start(dir), leases: 0 };
      threads.set(dir, created);
      created.ready.catch(() => {
        if (threads.get(dir) === created) threads.delete(dir);
      });
      entry = created;
    }
    entry.leases++;
    try {
      return new PgliteThread(entry, await entry.ready, dir);
    } catch (error) {
      entry.leases--;
      throw error;
    }
  }

  /** Whether this process has a thread on `dataDir` (for tests' inspection of the storage). */
  static holds(dataDir: string): boolean {
    return threads.has(path.resolve(dataDir));
  }

  /** A vector store in the thread (its own lease there). */
  vectorStore(options?: PgliteVectorStoreOptions): ThreadedVectorStore {
    return new ThreadedVectorStore(this.live(), this.live().create('vectors', options));
  }

  /** A match store in the thread (its own lease there). */
  matchStore(): ThreadedMatchStore {
    return new ThreadedMatchStore(this.live(), this.live().create('matches'));
  }

  /** One statement outside the stores (diagnostics and tests); rows as PGlite returns them. */
  async query<T>(sql: string, params?: unknown[]): Promise<T[]> {
    return (await this.live().request({ op: 'query', sql, ...(params ? { params } : {}) })) as T[];
  }

  /** Ends this lease; the thread closes the database and stops with the last one. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (--this.entry.leases > 0) return;
    this.entry.closing = (async () => {
      try {
        await this.thread.close();
      } finally {
        threads.delete(this.dataDir);
      }
    })();
    await this.entry.closing;
  }

  private live(): DbThread {
    if (this.closed) throw new BackendUnavailableError(`embedded database at ${this.dataDir}: closed`);
    return this.thread;
  }
}

/** A store object in the thread: each call one message. */
abstract class InThread {
  constructor(
    private readonly thread: DbThread,
    private readonly handle: { store: number; made: Promise<unknown> },
  ) {
    // A failed creation surfaces at the first call.
    handle.made.catch(() => undefined);
  }

  protected async call<T>(method: string, ...args: unknown[]): Promise<T> {
    await this.handle.made;
    return (await this.thread.request({ op: 'call', store: this.handle.store, method, args })) as T;
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
