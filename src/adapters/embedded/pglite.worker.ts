/**
 * The embedded database's thread. PGlite (PostgreSQL in WASM) runs every statement synchronously on
 * the thread that holds it, so the database, and the store code that drives it, live here and not on
 * the service's event loop: an IVFFlat build (seconds), a crowd's search or a photo's writes never
 * hold the loop. The main thread (./pglite.thread.ts) sends one message per store call.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { toFacematchError } from '../../domain/errors.js';
import { PgliteDatabase } from './pglite.database.js';
import { PgliteMatchStore } from './pglite.match-store.js';
import type { DbReply, DbRequest, DbWorkerData } from './pglite.protocol.js';
import { PgliteVectorStore } from './pglite.vector-store.js';

if (!parentPort) throw new Error('pglite.worker runs as a worker thread');
const port = parentPort;
const { dataDir } = workerData as DbWorkerData;

const reply = (message: DbReply): void => port.postMessage(message);
const failed = (id: number, error: unknown): void => reply({ id, ok: false, error: toFacematchError(error).toJSON() });

/** Store objects by id; each holds a lease of its own on the thread's one instance. */
const stores = new Map<number, PgliteVectorStore | PgliteMatchStore>();

let db: PgliteDatabase;
try {
  db = await PgliteDatabase.open(dataDir);
  reply({ id: 0, ok: true });
} catch (error) {
  failed(0, error);
  port.close();
  throw error;
}

port.on('message', (m: DbRequest) => {
  void handle(m);
});

async function handle(m: DbRequest): Promise<void> {
  try {
    switch (m.op) {
      case 'create': {
        const lease = await PgliteDatabase.open(dataDir);
        stores.set(m.store, m.kind === 'vectors' ? new PgliteVectorStore(lease, m.options) : new PgliteMatchStore(lease));
        reply({ id: m.id, ok: true });
        return;
      }
      case 'call': {
        const store = stores.get(m.store);
        if (!store) throw new Error(`no store ${m.store} in the database thread`);
        const method = (store as unknown as Record<string, unknown>)[m.method];
        if (typeof method !== 'function') throw new Error(`the store has no method ${m.method}`);
        const value: unknown = await (method as (...args: unknown[]) => Promise<unknown>).apply(store, m.args);
        if (m.method === 'close') stores.delete(m.store);
        reply({ id: m.id, ok: true, value });
        return;
      }
      case 'query': {
        reply({ id: m.id, ok: true, value: await db.query(m.sql, m.params) });
        return;
      }
      case 'close': {
        await Promise.allSettled([...stores.values()].map((s) => s.close()));
        stores.clear();
        await db.close();
        reply({ id: m.id, ok: true });
        port.close();
        return;
      }
    }
  } catch (error) {
    failed(m.id, error);
  }
}
