/**
 * The embedded database in its own thread, as the service opens it (src/adapters/stores.ts): the
 * store contracts through it, then what the thread is for and what must not change across it — the
 * event loop stays free while the database works, errors keep their codes, one instance per
 * directory.
 */
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, describe, expect, it } from 'vitest';
import { PgliteDatabase } from '../../src/adapters/embedded/pglite.database.js';
import { PgliteThread } from '../../src/adapters/embedded/pglite.thread.js';
import type { VectorRecord } from '../../src/ports/vector-store.js';
import { matchStoreContract } from '../contract/match-store.contract.js';
import { randomUnit, seededRandom, vectorStoreContract } from '../contract/vector-store.contract.js';
import { embeddedStorage } from '../support/inspect.js';

const scratch: string[] = [];
afterAll(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

/** initdb takes seconds: one closed, initialised directory, copied for each test. */
let template: Promise<string> | undefined;
async function freshDataDir(): Promise<string> {
  template ??= (async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'facematch-thread-template-'));
    scratch.push(root);
    const dir = path.join(root, 'db');
    await (await PgliteThread.open(dir)).close();
    return dir;
  })();
  const root = await mkdtemp(path.join(tmpdir(), 'facematch-thread-'));
  scratch.push(root);
  const dir = path.join(root, 'db');
  await cp(await template, dir, { recursive: true });
  return dir;
}

vectorStoreContract('embedded, in its own thread', async () => {
  const dir = await freshDataDir();
  const lease = await PgliteThread.open(dir);
  const storage = embeddedStorage(dir);
  const others: PgliteThread[] = [];
  return {
    store: lease.vectorStore(),
    another: async () => {
      const other = await PgliteThread.open(dir);
      others.push(other);
      return other.vectorStore();
    },
    vectorsOfUser: (userId) => storage.vectorsOfUser(userId),
    cleanup: async () => {
      for (const o of others) await o.close();
      await lease.close();
    },
  };
});

matchStoreContract('embedded, in its own thread', async () => {
  const dir = await freshDataDir();
  const lease = await PgliteThread.open(dir);
  const storage = embeddedStorage(dir);
  return { store: lease.matchStore(), rowsNamingUser: (userId) => storage.rowsNamingUser(userId), cleanup: () => lease.close() };
});

describe('the embedded database in its own thread', () => {
  it("builds a table's vector index without holding the event loop", async () => {
    const dir = await freshDataDir();
    const lease = await PgliteThread.open(dir);
    try {
      // The index is first built by the upsert that takes the table to 3,000 rows (512-d).
      const vectors = lease.vectorStore({ annMinRows: 3000, rowsPerList: 100 });
      await vectors.init(512);
      const random = seededRandom(7);
      const records: VectorRecord[] = Array.from({ length: 3000 }, (_, i) => ({
        id: `f${i}`,
        eventId: `e${i % 3}`,
        photoId: `p${i}`,
        embedding: randomUnit(random, 512),
      }));
      await vectors.upsert('action_faces', records.slice(0, 2000));
      expect(await lease.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'action_faces' AND indexdef ILIKE '%ivfflat%'`)).toEqual([]);

      const delay = monitorEventLoopDelay({ resolution: 5 });
      delay.enable();
      let longestGap = 0;
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        longestGap = Math.max(longestGap, now - last);
        last = now;
      }, 5);
      const t0 = performance.now();
      await vectors.upsert('action_faces', records.slice(2000));
      const took = performance.now() - t0;
      clearInterval(timer);
      delay.disable();

      const indexes = await lease.query<{ indexname: string }>(
        `SELECT indexname FROM pg_indexes WHERE tablename = 'action_faces' AND indexdef ILIKE '%ivfflat%'`,
      );
      expect(indexes).toHaveLength(1);
      // The call did real work (the build), and the loop ran its 5 ms timer throughout.
      expect(took).toBeGreaterThan(300);
      expect(longestGap).toBeLessThan(100);
      const [hit] = await vectors.search('action_faces', { eventId: 'e1', embedding: records[2500]!.embedding, limit: 1, minSimilarity: 0.5 });
      expect(hit?.id).toBe('f2500');
    } finally {
      await lease.close();
    }
  });

  it('gives errors their codes across the thread and keeps what was stored', async () => {
    const dir = await freshDataDir();
    const lease = await PgliteThread.open(dir);
    try {
      const vectors = lease.vectorStore();
      await vectors.init(8, { embedder: { pack: 'a', sha256: 'a'.repeat(64) } });
      const random = seededRandom(3);
      await vectors.upsert('user_samples', [{ id: 's1', eventId: 'e', photoId: 'p1', userId: 'u', embedding: randomUnit(random, 8) }]);
      await expect(vectors.upsert('user_samples', [{ id: '', eventId: 'e', photoId: 'p2', embedding: randomUnit(random, 8) }])).rejects.toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: expect.stringContaining('needs id') as string,
      });
      // Another embedder's store on the same directory is refused, by name.
      const other = lease.vectorStore();
      await expect(other.init(8, { embedder: { pack: 'b', sha256: 'b'.repeat(64) } })).rejects.toMatchObject({ code: 'EMBEDDER_MISMATCH' });
      const hits = await vectors.search('user_samples', { eventId: 'e', embedding: randomUnit(seededRandom(3), 8), limit: 5, minSimilarity: -1 });
      expect(hits.map((h) => h.id)).toEqual(['s1']);
    } finally {
      await lease.close();
    }
  });

  it('starts a new thread when its thread dies: the calls cut off fail, the stores go on, nothing committed is lost', async () => {
    const dir = await freshDataDir();
    const lease = await PgliteThread.open(dir);
    try {
      const vectors = lease.vectorStore();
      const matches = lease.matchStore();
      await matches.init();
      await vectors.init(8, { namespace: 'crash' });
      const random = seededRandom(5);
      const kept = randomUnit(random, 8);
      await vectors.upsert('action_faces', [{ id: 'kept', eventId: 'e', photoId: 'p1', embedding: kept }]);

      // A statement of seconds, cut off by the thread's end.
      const cut = lease.query('SELECT count(*) FROM generate_series(1, 300000000)');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await lease.terminate();
      await expect(cut).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('its thread failed') as string });

      // The next calls start a new thread; each store is made there again, initialised as before
      // (the vector namespace too), and finds what was committed.
      const hits = await vectors.search('action_faces', { eventId: 'e', embedding: kept, limit: 1, minSimilarity: 0.5 });
      expect(hits.map((h) => h.id)).toEqual(['kept']);
      await vectors.upsert('action_faces', [{ id: 'after', eventId: 'e', photoId: 'p2', embedding: randomUnit(random, 8) }]);
      expect(await lease.query(`SELECT id FROM vectors_crash.action_faces ORDER BY id`)).toEqual([{ id: 'after' }, { id: 'kept' }]);
      expect(await matches.photosOfEvent('e', undefined, 10)).toEqual([]);
      await matches.ping();
    } finally {
      await lease.close();
    }
    // Closed with its last lease: the lock file is gone.
    await expect(readFile(path.join(dir, 'facematch.lock'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('is the one instance of its directory in this process', async () => {
    const dir = await freshDataDir();
    const a = await PgliteThread.open(dir);
    const b = await PgliteThread.open(dir);
    try {
      // Two leases share the thread: what one writes, the other reads at once.
      await a.query('CREATE TABLE shared_check (n int)');
      await a.query('INSERT INTO shared_check VALUES (1)');
      expect(await b.query('SELECT n FROM shared_check')).toEqual([{ n: 1 }]);
      // The main thread's own instance would be a second PGlite on the files: refused.
      await expect(PgliteDatabase.open(dir)).rejects.toMatchObject({
        code: 'BACKEND_UNAVAILABLE',
        message: expect.stringContaining('another thread of this process') as string,
      });
    } finally {
      await a.close();
      await b.close();
    }
    // Closed with its last lease: the directory is free again, the data on it.
    const db = await PgliteDatabase.open(dir);
    try {
      expect(await db.query('SELECT n FROM shared_check')).toEqual([{ n: 1 }]);
    } finally {
      await db.close();
    }
  });
});
