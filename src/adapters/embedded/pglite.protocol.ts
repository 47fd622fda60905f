/**
 * Messages between the main thread (./pglite.thread.ts) and the embedded database's thread
 * (./pglite.worker.ts). One request is one store call: the thread runs the store's code, with all of
 * its statements, and answers once.
 */
import type { ErrorCode } from '../../domain/errors.js';
import type { PgliteVectorStoreOptions } from './pglite.vector-store.js';

export interface DbWorkerData {
  /** Which worker (src/inference/worker/entry.ts). */
  entry: string;
  dataDir: string;
}

/** The store objects a thread holds, each made by a 'create' and named by its id. */
export type StoreKind = 'vectors' | 'matches';

/** `id` is answered by the reply of the same id; 0 is the thread's "database open" reply. */
export type DbRequest =
  | { id: number; op: 'create'; store: number; kind: StoreKind; options?: PgliteVectorStoreOptions }
  | { id: number; op: 'call'; store: number; method: string; args: unknown[] }
  | { id: number; op: 'query'; sql: string; params?: unknown[] }
  | { id: number; op: 'close' };

export type DbReply =
  | { id: number; ok: true; value?: unknown }
  | { id: number; ok: false; error: { code: ErrorCode; message: string } };
