/**
 * The embedded default stores: the shared contracts, then what only a store on local disk must
 * show — nothing lost after a restart, nothing torn after a crash (SIGKILL) in the middle of writes,
 * filtered vector search that stays exact, and the guards around the data directory.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalObjectStore } from '../../src/adapters/embedded/local.object-store.js';
import { PgliteDatabase, readMigrations, VECTOR_MIGRATIONS_DIR } from '../../src/adapters/embedded/pglite.database.js';
import { PgliteMatchStore } from '../../src/adapters/embedded/pglite.match-store.js';
import { PgliteVectorStore } from '../../src/adapters/embedded/pglite.vector-store.js';
import { applyMigrations } from '../../src/adapters/sql/migrations.js';
import { BackendUnavailableError } from '../../src/domain/errors.js';
import { faceId, type FaceRecord, type PhotoRecord } from '../../src/domain/photo.js';
import type { VectorStoreInitOptions } from '../../src/ports/vector-store.js';
import { matchStoreContract } from '../contract/match-store.contract.js';
import { objectStoreContract } from '../contract/object-store.contract.js';
import {
  CONTRACT_DIMENSION,
  dot,
  randomUnit,
  seededRandom,
  unitNear,
  vectorStoreContract,
} from '../contract/vector-store.contract.js';
import { embeddedStorage, embeddedVectorsOfUser } from '../support/inspect.js';
import {
  CRASH_DIMENSION,
  OBJECT_BYTES,
  crashObjectByte,
  crashObjectKey,
  crashPhotoId,
  REPLACE_SLOTS,
  replaceSlotId,
} from './crash-writer.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const DIM = CONTRACT_DIMENSION;

const scratch: string[] = [];
async function tempDir(what: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), `facematch-${what}-`));
  scratch.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

/**
 * initdb takes seconds; a data directory is initialised once and copied for each store.
 * (The copy is of a closed database: a fresh directory in every respect.)
 */
let template: Promise<string> | undefined;
async function freshDataDir(): Promise<string> {
  template ??= (async () => {
    const dir = path.join(await tempDir('template'), 'db');
    await (await PgliteDatabase.open(dir)).close();
    return dir;
  })();
  const dir = path.join(await tempDir('db'), 'db');
  await cp(await template, dir, { recursive: true });
  return dir;
}

vectorStoreContract('embedded (PGlite + pgvector)', async () => {
  const dir = await freshDataDir();
  const store = new PgliteVectorStore(await PgliteDatabase.open(dir));
  const storage = embeddedStorage(dir);
  return {
    store,
    another: async () => new PgliteVectorStore(await PgliteDatabase.open(dir)),
    vectorsOfUser: (userId) => storage.vectorsOfUser(userId),
    cleanup: () => storage.close(),
  };
});

matchStoreContract('embedded (PGlite)', async () => {
  const dir = await freshDataDir();
  const store = new PgliteMatchStore(await PgliteDatabase.open(dir));
  const storage = embeddedStorage(dir);
  return { store, rowsNamingUser: (userId) => storage.rowsNamingUser(userId), cleanup: () => storage.close() };
});

objectStoreContract('embedded (local folder)', async () => {
  const store = new LocalObjectStore({ root: path.join(await tempDir('objects'), 'bucket') });
  return { store, cleanup: () => Promise.resolve() };
});

/**
 * Runs test/embedded/crash-writer.ts. With `kill`, SIGKILLs it `delayMs` after its `after`-th
 * acknowledgement; without, waits for it to end by itself.
 */
/** A vector store of DIM dimensions alone on a fresh data directory, with its database lease. */
async function freshVectorStore(): Promise<{ lease: PgliteDatabase; vectors: PgliteVectorStore }> {
  const lease = await PgliteDatabase.open(await freshDataDir());
  const vectors = new PgliteVectorStore(lease);
  await vectors.init(DIM);
  return { lease, vectors };
}

async function runWriter(
  args: string[],
  kill?: { after: number; delayMs: number },
): Promise<{ acks: number[]; ended: NodeJS.Signals | number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(HERE, 'crash-writer.ts'), ...args], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const acks: number[] = [];
  let stderr = '';
  let buffered = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) {
      const n = /^committed (\d+)$/.exec(line)?.[1];
      if (n === undefined) continue;
      acks.push(Number(n));
      if (kill && acks.length === kill.after) setTimeout(() => child.kill('SIGKILL'), kill.delayMs);
    }
  });
  // A writer that neither ends nor gets killed fails the test instead of hanging it.
  const watchdog = setTimeout(() => {
    stderr += '\n(crash writer hung: killed by the watchdog)';
    child.kill('SIGTERM');
  }, 30_000);
  // 'close': the process has ended and its output is read to the end, so every acknowledgement
  // written before the kill is counted.
  const ended = await new Promise<NodeJS.Signals | number | null>((resolve) => child.on('close', (code, signal) => resolve(signal ?? code)));
  clearTimeout(watchdog);
  return { acks, ended, stderr };
}

interface Stores {
  db: PgliteDatabase;
  vectors: PgliteVectorStore;
  matches: PgliteMatchStore;
  close: () => Promise<void>;
}

async function openStores(dataDir: string, dimension = DIM, options?: VectorStoreInitOptions): Promise<Stores> {
  const db = await PgliteDatabase.open(dataDir);
  const vectors = new PgliteVectorStore(await PgliteDatabase.open(dataDir));
  const matches = new PgliteMatchStore(await PgliteDatabase.open(dataDir));
  await vectors.init(dimension, options);
  await matches.init();
  return {
    db,
    vectors,
    matches,
    close: async () => {
      await vectors.close();
      await matches.close();
      await db.close();
    },
  };
}

const photoOf = (photoId: string, eventId: string): PhotoRecord => ({
  photoId,
  eventId,
  kind: 'ACTION_SHOT',
  sourceUrl: `https://photos.example/${photoId}.jpg`,
  width: 640,
  height: 480,
  processedAt: new Date(Date.UTC(2025, 0, 1)),
});
const facesOf = (photoId: string, n: number): FaceRecord[] =>
  Array.from({ length: n }, (_, index) => ({
    faceId: faceId(photoId, index),
    photoId,
    index,
    box: { x: index * 50, y: 5, width: 40, height: 40 },
    score: 0.8,
    landmarks: [
      [1, 1],
      [2, 1],
      [1.5, 1.5],
      [1, 2],
      [2, 2],
    ],
  }));

describe('embedded database', () => {
  it('shares one PGlite instance per directory, records migrations once, and refuses another dimension', async () => {
    const dir = await freshDataDir();
    const stores = await openStores(dir);
    const other = await PgliteDatabase.open(dir);
    expect(other.pg).toBe(stores.db.pg);
    await other.close();
    // One lease closed; the instance stays open for the others.
    await expect(stores.vectors.ping()).resolves.toBeUndefined();

    const recorded = await stores.db.query<{ scope: string; version: string }>('SELECT scope, version FROM schema_migrations ORDER BY scope, version');
    expect(recorded).toEqual([
      { scope: 'facematch', version: '0001_photos_faces_matches' },
      { scope: 'facematch', version: '0002_match_offers' },
      { scope: 'facematch', version: '0003_forgotten_users' },
      { scope: 'facematch', version: '0004_photos_event_order' },
      { scope: 'vectors', version: '0001_vectors' },
      { scope: 'vectors', version: '0002_embedding_space' },
      { scope: 'vectors', version: '0003_ivfflat' },
      { scope: 'vectors', version: '0004_staging' },
    ]);
    await stores.close();

    const again = await openStores(dir);
    expect(await again.db.query('SELECT count(*)::int AS n FROM schema_migrations')).toEqual([{ n: 8 }]);
    const wrong = new PgliteVectorStore(await PgliteDatabase.open(dir));
    await expect(wrong.init(128)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('512') as string });
    await wrong.close();
    await again.close();
  });

  it('a database of the version before embedders were recorded keeps its vectors and adopts the first embedder; a namespace is a schema of its own', async () => {
    const dir = await freshDataDir();
    // What the previous version left: the vector tables (0001 only) and a vector in them.
    const old = await PgliteDatabase.open(dir);
    await applyMigrations(old, 'vectors', (await readMigrations(VECTOR_MIGRATIONS_DIR, { DIM: String(DIM) })).slice(0, 1), 'old version');
    const v = randomUnit(seededRandom(11));
    await old.query(`INSERT INTO action_faces (id, event_id, photo_id, embedding) VALUES ('f1', 'e1', 'p1', $1::text::vector)`, [`[${v.join(',')}]`]);
    await old.close();

    const A = { pack: 'buffalo_l', sha256: '4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43' };
    const B = { pack: 'buffalo_s', sha256: '9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f' };
    const stores = await openStores(dir, DIM, { embedder: A });
    expect((await stores.vectors.search('action_faces', { eventId: 'e1', embedding: v, limit: 3, minSimilarity: 0.9 })).map((h) => h.id)).toEqual(['f1']);
    expect(await stores.db.query('SELECT pack, sha256 FROM embedding_space')).toEqual([A]);

    const refused = new PgliteVectorStore(await PgliteDatabase.open(dir));
    await expect(refused.init(DIM, { embedder: B })).rejects.toMatchObject({
      code: 'EMBEDDER_MISMATCH',
      message: expect.stringMatching(/embedded database at .* holds embeddings of model pack buffalo_l \(embedder sha256 4c06341c33c2…\), but this service runs model pack buffalo_s \(embedder sha256 9cc6e4a75f0e…\)/) as string,
    });
    await refused.close();

    const next = new PgliteVectorStore(await PgliteDatabase.open(dir));
    await next.init(DIM, { embedder: B, namespace: 'next' });
    expect(await next.search('action_faces', { eventId: 'e1', embedding: v, limit: 3, minSimilarity: -1 })).toEqual([]);
    await next.close();
    const tables = await stores.db.query<{ schema: string; name: string }>(
      `SELECT table_schema AS schema, table_name AS name FROM information_schema.tables
        WHERE table_name IN ('action_faces', 'user_samples', 'embedding_space', 'photos', 'vector_upserts') ORDER BY 1, 2`,
    );
    expect(tables).toEqual([
      { schema: 'public', name: 'action_faces' },
      { schema: 'public', name: 'embedding_space' },
      { schema: 'public', name: 'photos' },
      { schema: 'public', name: 'user_samples' },
      { schema: 'public', name: 'vector_upserts' },
      { schema: 'vectors_next', name: 'action_faces' },
      { schema: 'vectors_next', name: 'embedding_space' },
      { schema: 'vectors_next', name: 'user_samples' },
      { schema: 'vectors_next', name: 'vector_upserts' },
    ]);
    expect(await stores.db.query("SELECT version FROM schema_migrations WHERE scope = 'vectors:next' ORDER BY 1")).toEqual([
      { version: '0001_vectors' },
      { version: '0002_embedding_space' },
      { version: '0003_ivfflat' },
      { version: '0004_staging' },
    ]);
    expect(await stores.db.query('SELECT pack FROM vectors_next.embedding_space')).toEqual([{ pack: 'buffalo_s' }]);
    await stores.close();
  });

  it('reports BACKEND_UNAVAILABLE, naming the directory, once closed', async () => {
    const dir = await freshDataDir();
    const stores = await openStores(dir);
    await stores.close();
    await expect(stores.vectors.ping()).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining(dir) as string });
    await expect(stores.matches.getPhoto('x')).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
  });

  it('refuses a directory used by another live process, and takes over the lock of a dead one', async () => {
    const dir = await freshDataDir();
    const lock = path.join(dir, 'facematch.lock');
    // The parent of this test process is alive.
    await writeFile(lock, JSON.stringify({ pid: process.ppid, host: hostname() }));
    await expect(PgliteDatabase.open(dir)).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('in use by process') as string });

    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    await writeFile(lock, JSON.stringify({ pid: dead, host: hostname() }));
    const db = await PgliteDatabase.open(dir);
    expect(JSON.parse(await readFile(lock, 'utf8'))).toMatchObject({ pid: process.pid });
    await db.close();
    await expect(readFile(lock)).rejects.toMatchObject({ code: 'ENOENT' });

    // Our own pid, from an earlier process (a container restarted: pid 1 again), with or without
    // the start time the lock records since session 11: taken over. (The same pid and start time is
    // another thread of this process: test/embedded/pglite-thread.test.ts.)
    for (const earlier of [{ pid: process.pid, host: hostname() }, { pid: process.pid, host: hostname(), started: '1' }]) {
      await writeFile(lock, JSON.stringify(earlier));
      const again = await PgliteDatabase.open(dir);
      expect(JSON.parse(await readFile(lock, 'utf8'))).toMatchObject({ pid: process.pid, started: expect.stringMatching(/^\d+$/) as string });
      await again.close();
    }
  });

  it('refuses to initialise a directory that holds other files', async () => {
    const dir = path.join(await tempDir('foreign'), 'db');
    await mkdir(dir);
    await writeFile(path.join(dir, 'holiday.jpg'), 'not a database');
    await expect(PgliteDatabase.open(dir)).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    expect(await readdir(dir)).toEqual(['holiday.jpg']);
  });

  it('initialises over the leftovers of a first open that was killed', async () => {
    const parent = await tempDir('leftovers');
    const dir = path.join(parent, 'db');
    // What a kill leaves: part of a data directory without PG_VERSION, and the staging directory.
    await mkdir(path.join(dir, 'base', '1'), { recursive: true });
    await writeFile(path.join(dir, 'base', '1', '1259'), 'half a catalog');
    await mkdir(path.join(dir, '.initdb', 'global'), { recursive: true });
    const stores = await openStores(dir);
    await stores.matches.replacePhoto(photoOf('p', 'e'), facesOf('p', 1), []);
    expect((await stores.matches.getPhoto('p'))?.faces).toHaveLength(1);
    await stores.close();
    expect(await readdir(parent)).toEqual(['db']);
    expect(await readdir(dir)).not.toContain('.initdb');
  });

  it('keeps everything across a restart', async () => {
    const dir = await freshDataDir();
    const objectsDir = await tempDir('objects');
    const random = seededRandom(7);
    const v = randomUnit(random);
    let stores = await openStores(dir);
    let objects = new LocalObjectStore({ root: objectsDir });
    await objects.init();
    await stores.vectors.upsert('action_faces', [{ id: 'p1/0', eventId: 'e', photoId: 'p1', embedding: v }]);
    await stores.vectors.upsert('user_samples', [{ id: 'u1/cam', eventId: 'e', photoId: 'cam', userId: 'u1', embedding: v }]);
    const faces = facesOf('p1', 2);
    await stores.matches.replacePhoto(photoOf('p1', 'e'), faces, [
      { photoId: 'p1', faceId: faces[0]!.faceId, userId: 'u1', eventId: 'e', similarity: 0.75, matchedAt: new Date(Date.UTC(2025, 0, 2)) },
    ]);
    await objects.put('annotated/p1.jpg', new Uint8Array([1, 2, 3]), 'image/jpeg');
    const before = await stores.matches.getPhoto('p1');
    await stores.close();

    stores = await openStores(dir);
    objects = new LocalObjectStore({ root: objectsDir });
    await objects.init();
    expect(await stores.matches.getPhoto('p1')).toEqual(before);
    expect(await stores.matches.photosOfUser('u1')).toEqual([{ photoId: 'p1', eventId: 'e', similarity: 0.75 }]);
    const hits = await stores.vectors.search('action_faces', { eventId: 'e', embedding: v, limit: 5, minSimilarity: 0.5 });
    expect(hits.map((h) => h.id)).toEqual(['p1/0']);
    expect(await embeddedVectorsOfUser(stores.db, 'u1')).toBe(1);
    expect([...(await objects.get('annotated/p1.jpg'))]).toEqual([1, 2, 3]);
    await stores.close();
  });

  it('stores every vector bit for bit and ids in any script (binary upserts), the last record of an id winning', async () => {
    const { lease, vectors } = await freshVectorStore();
    const random = seededRandom(11);
    const odd = randomUnit(random);
    // Extremes of float32: the smallest subnormal, the largest finite value, negative zero.
    odd.set([1.401298464324817e-45, -3.4028234663852886e38, -0, 1 / 3], 0);
    const records = [
      { id: 'фото/0', eventId: 'évènement', photoId: '写真', userId: 'ユーザー', embedding: randomUnit(random) },
      { id: 'фото/0', eventId: 'évènement', photoId: '写真', userId: 'ユーザー', embedding: odd },
      { id: 'plain/1', eventId: 'e', photoId: 'p', embedding: randomUnit(random) },
    ];
    await vectors.upsert('user_samples', records);
    const rows = await lease.query<{ id: string; event_id: string; photo_id: string; user_id: string | null; v: number[] }>(
      'SELECT id, event_id, photo_id, user_id, embedding::real[] AS v FROM user_samples ORDER BY id',
    );
    expect(rows.map((r) => [r.id, r.event_id, r.photo_id, r.user_id])).toEqual([
      ['plain/1', 'e', 'p', null],
      ['фото/0', 'évènement', '写真', 'ユーザー'],
    ]);
    expect(Float32Array.from(rows[1]!.v)).toEqual(odd);
    expect(Object.is(rows[1]!.v[2], -0)).toBe(true);
    expect(Float32Array.from(rows[0]!.v)).toEqual(records[2]!.embedding);
    await lease.close();
  });

  it('leaves nothing in its staging tables, whether a write empties them by DELETE or, past 2,048 rows, by TRUNCATE', async () => {
    const { lease, vectors } = await freshVectorStore();
    const random = seededRandom(13);
    const staged = (): Promise<unknown[]> =>
      lease.query('SELECT (SELECT count(*) FROM vector_upserts)::int AS upserts, (SELECT count(*) FROM vector_queries)::int AS queries');
    const crowd = Array.from({ length: 2100 }, (_, i) => ({ id: `big/${i}`, eventId: 'e', photoId: `big${i % 7}`, embedding: randomUnit(random) }));
    await vectors.upsert('action_faces', crowd);
    expect(await staged()).toEqual([{ upserts: 0, queries: 0 }]);
    for (let i = 0; i < 3; i++) await vectors.upsert('action_faces', [{ id: `small/${i}`, eventId: 'e', photoId: `small${i}`, embedding: randomUnit(random) }]);
    const hits = await vectors.searchMany(
      'action_faces',
      crowd.slice(0, 40).map((r) => ({ eventId: 'e', embedding: r.embedding, limit: 1, minSimilarity: -1 })),
    );
    expect(hits.map((h) => h[0]?.id)).toEqual(crowd.slice(0, 40).map((r) => r.id));
    expect(await staged()).toEqual([{ upserts: 0, queries: 0 }]);
    expect(await lease.query('SELECT count(*)::int AS n FROM action_faces')).toEqual([{ n: 2103 }]);
    await vectors.close();
  });

  it('finds the true nearest of the searched event among 2,000 vectors, whichever plan the planner picks', async () => {
    const dir = await freshDataDir();
    const stores = await openStores(dir);
    // An IVFFlat index of 40 lists over these 2,000 rows (built at 1,000 rows, again at 2,000).
    const vectors = new PgliteVectorStore(await PgliteDatabase.open(dir), { annMinRows: 1000, rowsPerList: 50 });
    await vectors.init(DIM);
    const random = seededRandom(42);
    const query = randomUnit(random);
    // A crowded event whose 200 nearest are all nearer to the query than anything elsewhere: an
    // index scan that filters the rows of its first lists finds little of the other events.
    const sizes = { crowd: 1400, e1: 300, e2: 200, e3: 100 };
    const records: { id: string; eventId: string; photoId: string; embedding: Float32Array }[] = [];
    for (const [eventId, size] of Object.entries(sizes)) {
      for (let i = 0; i < size; i++) {
        const near = eventId === 'crowd' ? i < 200 : i < 10;
        const similarity = eventId === 'crowd' ? 0.95 + random() * 0.04 : 0.5 + random() * 0.4;
        const embedding = near ? unitNear(query, similarity, random) : randomUnit(random);
        records.push({ id: `${eventId}/${i}`, eventId, photoId: `${eventId}-p${i}`, embedding });
      }
    }
    for (let i = 0; i < records.length; i += 250) await vectors.upsert('action_faces', records.slice(i, i + 250));

    const bruteForce = (eventId: string, limit: number) =>
      records
        .filter((r) => r.eventId === eventId)
        .map((r) => ({ id: r.id, similarity: dot(query, r.embedding) }))
        .sort((a, b) => b.similarity - a.similarity)
        .slice(0, limit);
    const check = async () => {
      for (const eventId of Object.keys(sizes)) {
        for (const limit of [1, 10, 25]) {
          const hits = await vectors.search('action_faces', { eventId, embedding: query, limit, minSimilarity: -1 });
          const truth = bruteForce(eventId, limit);
          expect(hits).toHaveLength(limit);
          expect(hits.every((h) => h.eventId === eventId)).toBe(true);
          // The planted neighbours (the first 10 of each small event) come back exactly, in order.
          const exact = Math.min(limit, eventId === 'crowd' ? limit : 10);
          expect(hits.slice(0, exact).map((h) => h.id)).toEqual(truth.slice(0, exact).map((t) => t.id));
          hits.slice(0, exact).forEach((h, i) => expect(h.similarity).toBeCloseTo(truth[i]!.similarity, 4));
        }
      }
    };
    const plan = async () =>
      (await stores.db.query<Record<string, string>>(`EXPLAIN SELECT id FROM action_faces WHERE event_id = 'e3' ORDER BY embedding <=> $1::vector LIMIT 10`, [`[${Array.from(query).join(',')}]`]))
        .map((r) => Object.values(r)[0])
        .join('\n');

    expect(await stores.db.query("SELECT reloptions FROM pg_class WHERE relname = 'action_faces_embedding_ivf'")).toEqual([{ reloptions: ['lists=40'] }]);
    await check();
    // Force the IVFFlat index scan (the planner prefers the event index at this size).
    await stores.db.pg.exec('SET enable_bitmapscan = off; SET enable_seqscan = off; SET enable_sort = off');
    expect(await plan()).toMatch(/Index Scan using action_faces_embedding_ivf/);
    await check();
    // The control: without the iterative scan, a filtered IVFFlat query scans one list (~50 rows,
    // a few of e3) and comes back short; the store's search of the same comes back whole.
    const elsewhere = randomUnit(seededRandom(1));
    const plain = await stores.db.query(`SELECT id FROM action_faces WHERE event_id = 'e3' ORDER BY embedding <=> $1::vector LIMIT 10`, [
      `[${Array.from(elsewhere).join(',')}]`,
    ]);
    expect(await vectors.search('action_faces', { eventId: 'e3', embedding: elsewhere, limit: 10, minSimilarity: -1 })).toHaveLength(10);
    expect(plain.length).toBeLessThan(10);
    await stores.db.pg.exec('RESET enable_bitmapscan; RESET enable_seqscan; RESET enable_sort');
    await vectors.close();
    await stores.close();
  });

  it('finds each query’s top-1 while the table outgrows its vector index, and after a restart', async () => {
    const dir = await freshDataDir();
    const db = await PgliteDatabase.open(dir);
    const options = { annMinRows: 600, rowsPerList: 60 };
    let vectors = new PgliteVectorStore(await PgliteDatabase.open(dir), options);
    await vectors.init(DIM);
    const lists = async () =>
      (await db.query<{ reloptions: string[] }>("SELECT reloptions FROM pg_class WHERE relname = 'action_faces_embedding_ivf'"))[0]?.reloptions ?? 'none';
    // Faces as a model sees them: people (a centre each) photographed 8 times, at cosine ~0.7 to the
    // centre; 3 events. Each query is a stored face at cosine 0.9 and must come back first.
    const random = seededRandom(5);
    const records: { id: string; eventId: string; photoId: string; embedding: Float32Array }[] = [];
    for (let person = 0; person < 300; person++) {
      const centre = randomUnit(random);
      for (let k = 0; k < 8; k++) {
        const i = records.length;
        records.push({ id: `f${i}`, eventId: `e${person % 3}`, photoId: `p${Math.floor(i / 200)}`, embedding: unitNear(centre, 0.7, random) });
      }
    }
    const topOnes = async (upTo: number): Promise<number> => {
      let right = 0;
      for (let q = 0; q < 30; q++) {
        const target = records[Math.floor(random() * upTo)]!;
        const hits = await vectors.search('action_faces', { eventId: target.eventId, embedding: unitNear(target.embedding, 0.9, random), limit: 5, minSimilarity: -1 });
        if (hits[0]?.id === target.id) right++;
      }
      return right;
    };
    const seen: unknown[] = [];
    const right: Record<string, number> = {};
    // A crowd photo's 200 faces per upsert: no index below 600 rows, 10 lists from 600, 20 from
    // 1,200, 40 from 2,400. 30 queries after each: at least 99% of the 360 come back first, and at
    // least 29 of each 30.
    for (let stored = 200; stored <= records.length; stored += 200) {
      await vectors.upsert('action_faces', records.slice(stored - 200, stored));
      const l = await lists();
      if (JSON.stringify(seen.at(-1)) !== JSON.stringify(l)) seen.push(l);
      right[`${stored} stored, index ${String(l)}`] = await topOnes(stored);
    }
    expect(seen).toEqual(['none', ['lists=10'], ['lists=20'], ['lists=40']]);
    expect(Object.entries(right).filter(([, n]) => n < 29)).toEqual([]);
    expect(Object.values(right).reduce((a, b) => a + b, 0) / (30 * Object.keys(right).length), JSON.stringify(right)).toBeGreaterThanOrEqual(0.99);
    // Started again: the index is found, not built again, and searches stay right.
    await vectors.close();
    vectors = new PgliteVectorStore(await PgliteDatabase.open(dir), options);
    await vectors.init(DIM);
    expect(await lists()).toEqual(['lists=40']);
    expect(await topOnes(records.length)).toBeGreaterThanOrEqual(29);
    await vectors.close();
    await db.close();
  });

  it('writes a crowd photo’s 200 vectors whole or not at all: a failure before the commit leaves the previous ones', async () => {
    const { lease, vectors } = await freshVectorStore();
    const random = seededRandom(9);
    const before = Array.from({ length: 200 }, (_, i) => ({ id: `crowd/${i}`, eventId: 'e', photoId: 'crowd', embedding: randomUnit(random) }));
    await vectors.upsert('action_faces', before);
    // The photo processed again: new vectors for its 200 faces (and 50 more), and the database
    // fails once they are written, before the commit.
    const transaction = lease.transaction.bind(lease);
    lease.transaction = (fn) =>
      transaction((tx) =>
        fn({
          query: async <T>(sql: string, params?: unknown[]): Promise<T[]> => {
            await tx.query<T>(sql, params);
            throw new BackendUnavailableError('embedded database: no space left on device');
          },
          exec: (sql) => tx.exec(sql),
          copyIn: (sql, data) => tx.copyIn(sql, data),
        }),
      );
    const again = [...before, ...Array.from({ length: 50 }, (_, i) => ({ id: `crowd/${200 + i}`, eventId: 'e', photoId: 'crowd', embedding: randomUnit(random) }))].map((r) => ({
      ...r,
      embedding: randomUnit(random),
    }));
    await expect(vectors.upsert('action_faces', again)).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    lease.transaction = transaction;

    expect(await lease.query('SELECT count(*)::int AS n FROM action_faces')).toEqual([{ n: 200 }]);
    // Nor did the failed write leave its copied rows where upserts are staged.
    expect(await lease.query('SELECT count(*)::int AS n FROM vector_upserts')).toEqual([{ n: 0 }]);
    for (const face of before.filter((_, i) => i % 20 === 0)) {
      const [hit] = await vectors.search('action_faces', { eventId: 'e', embedding: face.embedding, limit: 1, minSimilarity: -1 });
      expect({ id: hit?.id, same: (hit?.similarity ?? 0) > 0.9999 }).toEqual({ id: face.id, same: true });
    }
    await vectors.close();
  });

  it('stays consistent, and keeps every acknowledged write, when the writer is SIGKILLed mid-write', async () => {
    const dataDir = await freshDataDir();
    const objectsDir = await tempDir('crash-objects');
    // mixed: photos with vectors and objects; replace: replacePhoto back to back, so that a kill
    // lands inside a replacement. The kill comes a few ms after an acknowledgement.
    const rounds = [
      { mode: 'mixed', killAfter: 25, delayMs: 3 },
      { mode: 'replace', killAfter: 40, delayMs: 1 },
      { mode: 'mixed', killAfter: 15, delayMs: 14 },
    ] as const;
    const acked = { mixed: -1, replace: -1 };
    /** Last acknowledged photo of each mixed round: the photos around it may be half-written across stores. */
    const killedAt: number[] = [];

    for (const { mode, killAfter, delayMs } of rounds) {
      const run = await runWriter([dataDir, objectsDir, String(acked[mode] + 1), mode], { after: killAfter, delayMs });
      expect(run.ended, run.stderr).toBe('SIGKILL');
      acked[mode] = run.acks.at(-1)!;
      if (mode === 'mixed') killedAt.push(acked.mixed);
    }
    // Killed from inside replacePhoto's transaction, right after its statement k.
    for (const k of [1, 2, 3]) {
      const run = await runWriter([dataDir, objectsDir, String(k), 'inject']);
      expect({ ended: run.ended, acks: run.acks }, run.stderr).toEqual({ ended: 'SIGKILL', acks: [0] });
    }
    const lastAcked = acked.mixed;

    // Reopen in this process: the lock of the killed writer is taken over, recovery replays the WAL.
    const stores = await openStores(dataDir, CRASH_DIMENSION);
    const { db } = stores;
    expect(await db.query('SELECT scope, version FROM schema_migrations ORDER BY scope, version')).toEqual([
      { scope: 'facematch', version: '0001_photos_faces_matches' },
      { scope: 'facematch', version: '0002_match_offers' },
      { scope: 'facematch', version: '0003_forgotten_users' },
      { scope: 'facematch', version: '0004_photos_event_order' },
      { scope: 'vectors', version: '0001_vectors' },
      { scope: 'vectors', version: '0002_embedding_space' },
      { scope: 'vectors', version: '0003_ivfflat' },
      { scope: 'vectors', version: '0004_staging' },
    ]);
    // The killed writes left no rows where vectors are staged.
    expect(await db.query('SELECT (SELECT count(*) FROM vector_upserts)::int AS u, (SELECT count(*) FROM vector_queries)::int AS q')).toEqual([{ u: 0, q: 0 }]);
    // Every photo has exactly the faces its record says, numbered from 0; no face without its photo.
    const photos = await db.query<{ photo_id: string; source_url: string; faces: number; max_idx: number | null }>(
      `SELECT p.photo_id, p.source_url, count(f.face_id)::int AS faces, max(f.idx) AS max_idx
         FROM photos p LEFT JOIN faces f ON f.photo_id = p.photo_id GROUP BY p.photo_id, p.source_url ORDER BY p.photo_id`,
    );
    for (const p of photos) {
      const expected = Number(/faces=(\d+)/.exec(p.source_url)![1]);
      expect({ photo: p.photo_id, faces: p.faces, maxIdx: p.max_idx }).toEqual({ photo: p.photo_id, faces: expected, maxIdx: expected > 0 ? expected - 1 : null });
    }
    expect(await db.query('SELECT f.face_id FROM faces f LEFT JOIN photos p ON p.photo_id = f.photo_id WHERE p.photo_id IS NULL')).toEqual([]);
    expect(await db.query('SELECT m.face_id FROM matches m LEFT JOIN faces f ON f.face_id = m.face_id WHERE f.face_id IS NULL')).toEqual([]);
    // Indexes agree with their tables.
    await db.pg.exec('SET enable_seqscan = off; SET enable_bitmapscan = off');
    const viaIndex = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM faces WHERE face_id > ''`);
    await db.pg.exec('RESET enable_seqscan; RESET enable_bitmapscan; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off');
    const viaHeap = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM faces WHERE face_id > ''`);
    await db.pg.exec('RESET enable_indexscan; RESET enable_indexonlyscan; RESET enable_bitmapscan');
    expect(viaIndex).toEqual(viaHeap);

    const byId = new Map(photos.map((p) => [p.photo_id, p]));
    // A transaction killed midway left nothing: the photo is as it was before.
    for (const k of [1, 2, 3]) {
      const photo = await stores.matches.getPhoto(`crash-i-${k}`);
      expect({ url: photo?.photo.sourceUrl, faces: photo?.faces.length, matches: photo?.matches.length }).toEqual({
        url: `crash://crash-i-${k}?faces=3&v=0`,
        faces: 3,
        matches: 2,
      });
    }
    // Nothing acknowledged is lost: each replaced photo holds its last acknowledged version, or
    // the one that was being written when the kill came.
    for (let slot = 0; slot < REPLACE_SLOTS; slot++) {
      const latest = acked.replace - ((acked.replace - slot + REPLACE_SLOTS) % REPLACE_SLOTS);
      const inFlight = acked.replace + 1;
      const version = Number(/v=(\d+)/.exec(byId.get(replaceSlotId(slot))!.source_url)![1]);
      expect([latest, ...(inFlight % REPLACE_SLOTS === slot ? [inFlight] : [])], replaceSlotId(slot)).toContain(version);
    }
    // Every photo up to the last acknowledged one is there. Each one that no write was touching at
    // a kill has its vectors and a whole annotated object of its version. (The stores do not share
    // transactions: a photo killed between its vectors and its record is redone by a retry.)
    expect(lastAcked).toBeGreaterThanOrEqual(39);
    const objects = new LocalObjectStore({ root: objectsDir });
    for (let n = 0; n <= lastAcked; n++) {
      const photo = byId.get(crashPhotoId(n));
      expect(photo, crashPhotoId(n)).toBeDefined();
      if (killedAt.some((k) => n >= k - 2 && n <= k + 1)) continue;
      const vectors = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM action_faces WHERE photo_id = $1', [crashPhotoId(n)]);
      expect(vectors[0]!.n, crashPhotoId(n)).toBe(photo!.faces);
      const version = Number(/v=(\d+)/.exec(photo!.source_url)![1]);
      const bytes = await objects.get(crashObjectKey(n));
      expect(bytes.length).toBe(OBJECT_BYTES);
      expect(bytes.every((b) => b === crashObjectByte(n, version))).toBe(true);
    }
    // No object is torn, acknowledged or not.
    for (const name of await readdir(path.join(objectsDir, 'annotated'))) {
      if (name.startsWith('.')) continue;
      const bytes = await readFile(path.join(objectsDir, 'annotated', name));
      expect(bytes.length, name).toBe(OBJECT_BYTES);
      expect(bytes.every((b) => b === bytes[0]), name).toBe(true);
    }

    // And the store takes writes again.
    const hit = (await db.query<{ embedding: string }>('SELECT embedding::text AS embedding FROM action_faces LIMIT 1'))[0]!;
    const embedding = Float32Array.from(JSON.parse(hit.embedding) as number[]);
    await stores.vectors.upsert('action_faces', [{ id: 'after/0', eventId: 'after', photoId: 'after', embedding }]);
    await stores.matches.replacePhoto(photoOf('after', 'after'), facesOf('after', 1), []);
    expect((await stores.vectors.search('action_faces', { eventId: 'after', embedding, limit: 1, minSimilarity: 0.99 })).map((h) => h.id)).toEqual(['after/0']);
    expect((await stores.matches.getPhoto('after'))?.faces).toHaveLength(1);
    await stores.close();
  });
});
