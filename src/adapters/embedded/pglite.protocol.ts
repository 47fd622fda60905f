/** Messages between the main thread (./pglite.database.ts) and the embedded database's thread (./pglite.worker.ts). */

export interface DbWorkerData {
  /** Which worker (src/inference/worker/entry.ts). */
  entry: string;
  dataDir: string;
}

/**
 * A request; `id` is answered by the reply of the same id (0 is the worker's "started" reply).
 * `tx` names an open transaction by the id of its 'begin'.
 */
export type DbRequest =
  | { id: number; op: 'query'; sql: string; params?: unknown[]; blob?: Uint8Array; tx?: number }
  | { id: number; op: 'exec'; sql: string; tx?: number }
  | { id: number; op: 'begin' }
  | { id: number; op: 'end'; tx: number; commit: boolean }
  | { id: number; op: 'close' };

/** An error as it crosses the thread boundary: a PostgreSQL error keeps its SQLSTATE and severity. */
export interface SqlErrorJSON {
  name: string;
  message: string;
  code?: string;
  severity?: string;
}

export type DbReply =
  | { id: number; ok: true; rows?: unknown[]; affectedRows?: number }
  | { id: number; ok: false; error: SqlErrorJSON };
