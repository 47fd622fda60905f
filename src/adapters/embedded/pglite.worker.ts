/**
 * The embedded database's thread: PGlite (PostgreSQL in WASM) runs every statement synchronously on
 * the thread that holds it, so it lives here and not on the service's event loop. The main thread
 * (./pglite.database.ts) sends statements and transaction boundaries; PGlite's own lock runs them
 * one at a time (a statement outside a transaction waits for the open transaction to end).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite, type Transaction } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import type { DbReply, DbRequest, DbWorkerData, SqlErrorJSON } from './pglite.protocol.js';

const port = parentPort;
if (!port) throw new Error('pglite.worker runs as a worker thread');
const { dataDir } = workerData as DbWorkerData;

/** An open transaction: its handle, and how the main thread ends it. */
interface Open {
  tx: Transaction;
  /** Ends it; `id` is the 'end' request to answer. */
  end: (id: number, commit: boolean) => void;
}
const open = new Map<number, Open>();

const reply = (message: DbReply): void => port.postMessage(message);
const failed = (id: number, error: unknown): void => reply({ id, ok: false, error: toJSON(error) });

let pg: PGlite;
try {
  pg = await PGlite.create({ dataDir, extensions: { vector } });
  reply({ id: 0, ok: true });
} catch (error) {
  failed(0, error);
  process.exit(1);
}

port.on('message', (m: DbRequest) => {
  void handle(m);
});

async function handle(m: DbRequest): Promise<void> {
  try {
    switch (m.op) {
      case 'query': {
        const on = m.tx === undefined ? pg : opened(m.tx).tx;
        const result = await on.query(m.sql, m.params ?? [], m.blob ? { blob: new Blob([m.blob]) } : undefined);
        reply({ id: m.id, ok: true, rows: result.rows, affectedRows: result.affectedRows ?? 0 });
        return;
      }
      case 'exec': {
        await (m.tx === undefined ? pg : opened(m.tx).tx).exec(m.sql);
        reply({ id: m.id, ok: true });
        return;
      }
      case 'begin': {
        // PGlite's transaction() commits when its callback resolves and rolls back when it throws;
        // the callback waits here for the main thread's 'end'. 'begin' is answered once the
        // transaction holds PGlite's lock, 'end' once it has committed or rolled back.
        let endId = 0;
        try {
          await pg.transaction(async (tx) => {
            const commit = await new Promise<boolean>((resolve) => {
              open.set(m.id, {
                tx,
                end: (id, c) => {
                  endId = id;
                  resolve(c);
                },
              });
              reply({ id: m.id, ok: true });
            });
            if (!commit) await tx.rollback();
          });
          reply({ id: endId, ok: true });
        } catch (error) {
          // Before the callback ran, BEGIN failed; after it, the COMMIT or the ROLLBACK did.
          failed(endId === 0 ? m.id : endId, error);
        } finally {
          open.delete(m.id);
        }
        return;
      }
      case 'end': {
        opened(m.tx).end(m.id, m.commit);
        return;
      }
      case 'close': {
        await pg.close();
        reply({ id: m.id, ok: true });
        return;
      }
    }
  } catch (error) {
    failed(m.id, error);
  }
}

function opened(tx: number): Open {
  const found = open.get(tx);
  if (!found) throw new Error(`no open transaction ${tx}`);
  return found;
}

function toJSON(error: unknown): SqlErrorJSON {
  if (error instanceof Error) {
    const { code, severity } = error as Error & { code?: unknown; severity?: unknown };
    return {
      name: error.name,
      message: error.message,
      ...(typeof code === 'string' ? { code } : {}),
      ...(typeof severity === 'string' ? { severity } : {}),
    };
  }
  return { name: 'Error', message: String(error) };
}
