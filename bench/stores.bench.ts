/**
 * Vector stores: search latency at 10k and 100k stored faces, and insert throughput, for the
 * embedded store (PGlite + pgvector, on a temporary directory) and Milvus (when
 * FACEMATCH_MILVUS_ADDRESS is set: `scripts/test-env up milvus`). Prints a table and writes
 * bench/out/stores.json.
 *
 *   npm run bench:stores
 *
 * Data: synthetic unit vectors of 512 dimensions (ArcFace's), from a seeded PRNG, spread over a few
 * events, of two kinds: `random`, uniformly random (the hard case for an approximate index), and
 * `faces`, as a face model makes them: people of 20 photos each, every face at cosine 0.7 to its
 * person's centre, a person's faces in one event. Each query is a stored face perturbed to cosine
 * 0.9 of it, searched in that face's event (limit 10): the face must come first ("top-1"), which
 * checks that the fast answer is also right; "exact" is the share whose first hit is the exact
 * nearest of the event (brute force here).
 * Writes go through the adapters' upsert(), in batches, as the service writes.
 *
 * Milvus is measured after its writes are flushed and indexed (what a store that has been running a
 * while looks like), at the consistency the service uses (Strong: every search waits one or two
 * time ticks of 200 ms for the query node to catch up with its start) and at Bounded, which shows
 * what the search itself costs.
 *
 * Embedded inserts: "load rec/s" is the whole load up to that size, IVFFlat builds included (the
 * store builds its index at 10k rows and again at 20k, 40k, 80k: see pglite.vector-store.ts);
 * "insert rec/s" is measured after it, STEADY_PHOTOS crowd photos of 200 faces upserted one by one
 * into the table of that size (no build falls in them), which is what a photo pays.
 *
 * The embedded store runs in the database's own thread (src/adapters/embedded/pglite.thread.ts, the
 * service's FACEMATCH_EMBEDDED_DB_THREAD=true); STORES_BENCH_EMBEDDED=main runs it on this thread,
 * as the service does by default. "loop max ms" is the longest the event loop waited while an upsert of the
 * load was awaited (a 5 ms timer; the builds fall in the load).
 *
 * Knobs: STORES_BENCH_QUERIES (200 per row), STORES_BENCH_DATA (random,faces: both),
 * STORES_BENCH_SIZES (10000,100000), STORES_BENCH_EMBEDDED (thread | main).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MilvusClient } from '@zilliz/milvus2-sdk-node';
import { PgliteDatabase } from '../src/adapters/embedded/pglite.database.js';
import { PgliteThread } from '../src/adapters/embedded/pglite.thread.js';
import { PgliteVectorStore } from '../src/adapters/embedded/pglite.vector-store.js';
import { MilvusVectorStore, type MilvusReadConsistency } from '../src/adapters/milvus/milvus.vector-store.js';
import { parseConfig } from '../src/config/config.js';
import type { VectorRecord, VectorStore } from '../src/ports/vector-store.js';
import { seededRandom } from '../test/support/seeded-random.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(REPO, 'bench', 'out', 'stores.json');

const DIM = 512;
const EVENTS = 4;
const SIZES = (process.env.STORES_BENCH_SIZES ?? '10000,100000').split(',').map(Number);
const LIMIT = 10;
const QUERIES = positiveEnv('STORES_BENCH_QUERIES', 200);
const WARMUP = 20;
const EMBEDDED_BATCH = 1_000;
/** The adapter sends 250 rows per request (see BATCH_ROWS there); this is per upsert() call. */
const MILVUS_BATCH = 5_000;
/** Photos of 200 faces written into the store at each size for "insert rec/s". */
const STEADY_PHOTOS = 10;
const PHOTO_FACES = 200;
type Data = 'random' | 'faces';
const DATA = (process.env.STORES_BENCH_DATA ?? 'random,faces').split(',') as Data[];
if (DATA.some((d) => d !== 'random' && d !== 'faces')) throw new Error('STORES_BENCH_DATA lists random and/or faces');
const FACES_PER_PERSON = 20;
const EMBEDDED = process.env.STORES_BENCH_EMBEDDED ?? 'thread';
if (EMBEDDED !== 'thread' && EMBEDDED !== 'main') throw new Error('STORES_BENCH_EMBEDDED is thread or main');

interface Row {
  store: 'embedded' | 'milvus';
  data: Data;
  faces: number;
  consistency: MilvusReadConsistency | null;
  /** Records written to reach `faces` (since the previous size), and how long that took. */
  inserted: number | null;
  insertSeconds: number | null;
  insertPerSecond: number | null;
  /** Milvus: from the last write until the data is flushed, indexed and loaded. */
  indexWaitSeconds: number | null;
  queries: number;
  p50Ms: number | null;
  p99Ms: number | null;
  meanMs: number | null;
  top1: number | null;
  /** Share of queries whose first hit is the exact nearest of the event. */
  exact: number | null;
  /** Embedded: rows/s of STEADY_PHOTOS photos of 200 faces written at this size. */
  steadyPerSecond?: number | null;
  /** Embedded: the longest the event loop waited while the load's upserts were awaited. */
  loopMaxMs?: number | null;
  note?: string;
}

function positiveEnv(name: string, fallback: number): number {
  const v = Number.parseInt(process.env[name] ?? String(fallback), 10);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
}


function normalise(v: Float64Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n);
  return Float32Array.from(v, (x) => x / n);
}

function gaussianUnit(random: () => number): Float32Array {
  const v = new Float64Array(DIM);
  for (let i = 0; i < DIM; i++) v[i] = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  return normalise(v);
}

let data: Data = 'random';
/** Stored face i of the current data: the same vector on every run and in every store. */
function faceVector(i: number): Float32Array {
  if (data === 'random') return gaussianUnit(seededRandom(1_000_003 + i));
  const centre = gaussianUnit(seededRandom(7_000_003 + Math.floor(i / FACES_PER_PERSON)));
  return near(centre, 0.7, seededRandom(5_000_011 + i));
}
const eventOf = (i: number): string => `bench-event-${(data === 'random' ? i : Math.floor(i / FACES_PER_PERSON)) % EVENTS}`;
const faceRecord = (i: number): VectorRecord => ({
  id: `bench-face-${i}`,
  eventId: eventOf(i),
  photoId: `bench-photo-${Math.floor(i / 3)}`,
  embedding: faceVector(i),
});

/** A unit vector at cosine `similarity` to the unit vector `to`. */
function near(to: Float32Array, similarity: number, random: () => number): Float32Array {
  const w = Float64Array.from(gaussianUnit(random));
  let d = 0;
  for (let i = 0; i < DIM; i++) d += w[i]! * to[i]!;
  for (let i = 0; i < DIM; i++) w[i] = w[i]! - d * to[i]!;
  const o = normalise(w);
  const rest = Math.sqrt(1 - similarity * similarity);
  return normalise(Float64Array.from(to, (x, i) => similarity * x + rest * o[i]!));
}

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const round = (x: number, digits = 1): number => Number(x.toFixed(digits));

/**
 * The longest the event loop waited while upserts were awaited: a 5 ms timer notes each turn, and
 * the gaps between turns (and from the call to the first turn, and the last turn to the result)
 * that fall inside an upsert count.
 */
let loopMax = 0;
async function timedUpsert(store: VectorStore, records: VectorRecord[]): Promise<void> {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    loopMax = Math.max(loopMax, now - last);
    last = now;
  }, 5);
  try {
    await store.upsert('action_faces', records);
  } finally {
    clearInterval(timer);
    loopMax = Math.max(loopMax, performance.now() - last);
  }
}

/** Writes faces [from, to) in batches; returns the seconds it took. */
async function load(store: VectorStore, from: number, to: number, batch: number, label: string): Promise<number> {
  const started = performance.now();
  let lastReport = started;
  for (let start = from; start < to; start += batch) {
    const records: VectorRecord[] = [];
    for (let i = start; i < Math.min(to, start + batch); i++) records.push(faceRecord(i));
    await timedUpsert(store, records);
    if (performance.now() - lastReport > 15_000) {
      lastReport = performance.now();
      const done = Math.min(to, start + batch) - from;
      console.error(`  ${label}: ${done}/${to - from} written, ${round(done / ((lastReport - started) / 1000), 0)} records/s`);
    }
  }
  return (performance.now() - started) / 1000;
}

/** The stored vectors of faces [0, size), for the exact answers. */
function allVectors(size: number): Float32Array {
  const all = new Float32Array(size * DIM);
  for (let i = 0; i < size; i++) all.set(faceVector(i), i * DIM);
  return all;
}

/** Id of the exact nearest face of the event (brute force). */
function exactNearest(all: Float32Array, size: number, eventId: string, query: Float32Array): string {
  let best = -Infinity;
  let id = '';
  for (let i = 0; i < size; i++) {
    if (eventOf(i) !== eventId) continue;
    let d = 0;
    for (let k = 0, o = i * DIM; k < DIM; k++) d += all[o + k]! * query[k]!;
    if (d > best) [best, id] = [d, `bench-face-${i}`];
  }
  return id;
}

/** Times QUERIES searches (after WARMUP untimed ones) over faces [0, size). */
async function measure(store: VectorStore, size: number, seed: number): Promise<{ times: number[]; top1: number; exact: number }> {
  const random = seededRandom(seed);
  const all = allVectors(size);
  const times: number[] = [];
  let right = 0;
  let exact = 0;
  for (let q = 0; q < WARMUP + QUERIES; q++) {
    const target = Math.floor(random() * size);
    const query = near(faceVector(target), 0.9, random);
    const started = performance.now();
    const hits = await store.search('action_faces', { eventId: eventOf(target), embedding: query, limit: LIMIT, minSimilarity: -1 });
    const took = performance.now() - started;
    if (q < WARMUP) continue;
    times.push(took);
    if (hits[0]?.id === `bench-face-${target}`) right++;
    if (hits[0]?.id === exactNearest(all, size, eventOf(target), query)) exact++;
  }
  return { times, top1: right / QUERIES, exact: exact / QUERIES };
}

/** Rows/s of STEADY_PHOTOS photos of 200 faces upserted one by one after faces [0, size). */
async function steady(store: VectorStore, size: number): Promise<number> {
  // Made before the clock starts: only the store is timed.
  const photos = Array.from({ length: STEADY_PHOTOS }, (_, p) =>
    Array.from({ length: PHOTO_FACES }, (_, k): VectorRecord => ({ ...faceRecord(10_000_000 + size + p * PHOTO_FACES + k), photoId: `bench-steady-${size}-${p}` })),
  );
  const started = performance.now();
  for (const records of photos) await store.upsert('action_faces', records);
  const rate = (STEADY_PHOTOS * PHOTO_FACES) / ((performance.now() - started) / 1000);
  // Out again, so that the searches see faces [0, size) only.
  for (let p = 0; p < STEADY_PHOTOS; p++) await store.deleteByPhoto('action_faces', `bench-steady-${size}-${p}`);
  return rate;
}

function searchRow(base: Omit<Row, 'queries' | 'p50Ms' | 'p99Ms' | 'meanMs' | 'top1' | 'exact'>, m: { times: number[]; top1: number; exact: number }): Row {
  return {
    ...base,
    queries: m.times.length,
    p50Ms: round(percentile(m.times, 50), 2),
    p99Ms: round(percentile(m.times, 99), 2),
    meanMs: round(m.times.reduce((a, b) => a + b, 0) / m.times.length, 2),
    top1: round(m.top1, 3),
    exact: round(m.exact, 3),
  };
}

async function benchEmbedded(rows: Row[]): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'facematch-stores-bench-'));
  try {
    const thread = EMBEDDED === 'thread' ? await PgliteThread.open(path.join(dir, 'db')) : undefined;
    const store: VectorStore = thread ? thread.vectorStore() : new PgliteVectorStore(await PgliteDatabase.open(path.join(dir, 'db')));
    await store.init(DIM);
    let stored = 0;
    for (const size of SIZES) {
      console.error(`embedded ${data}: writing faces ${stored}..${size}`);
      loopMax = 0;
      const seconds = await load(store, stored, size, EMBEDDED_BATCH, 'embedded');
      const loopMaxMs = round(loopMax, 0);
      const inserted = size - stored;
      stored = size;
      console.error(`embedded ${data}: ${STEADY_PHOTOS} photos of ${PHOTO_FACES} faces at ${size}`);
      const steadyPerSecond = round(await steady(store, size), 0);
      console.error(`embedded ${data}: searching ${size}`);
      const m = await measure(store, size, 42 + size);
      const row = searchRow(
        { store: 'embedded', data, faces: size, consistency: null, inserted, insertSeconds: round(seconds), insertPerSecond: round(inserted / seconds, 0), steadyPerSecond, loopMaxMs, indexWaitSeconds: null },
        m,
      );
      rows.push(row);
      // As it comes, so that a run cut short still tells.
      console.error(`embedded ${data} ${size}: ${steadyPerSecond} rec/s (200-face photos), load ${row.insertPerSecond} rec/s (loop max ${loopMaxMs} ms), search p50 ${row.p50Ms} ms, top-1 ${row.top1}, exact ${row.exact}`);
    }
    await store.close();
    await thread?.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Until Milvus has flushed and indexed every row written, then a few seconds for the query node to
 * swap its growing segments for the indexed ones. (GetQuerySegmentInfo, which would tell, answers
 * an empty list on this Milvus Lite.)
 */
async function settleMilvus(client: MilvusClient, collection: string, rows: number): Promise<void> {
  await client.flushSync({ collection_names: [collection] });
  const until = Date.now() + 15 * 60_000;
  for (;;) {
    const index = await client.describeIndex({ collection_name: collection, field_name: 'embedding' });
    const d = index.index_descriptions[0];
    if (d && Number(d.indexed_rows) >= rows && Number(d.pending_index_rows) === 0) break;
    if (Date.now() > until) throw new Error(`Milvus did not index ${collection} within 15 min (indexed ${d?.indexed_rows ?? '?'} of ${rows})`);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  await new Promise((resolve) => setTimeout(resolve, 5_000));
}

async function benchMilvus(rows: Row[], address: string): Promise<string> {
  const prefix = `bench_${Date.now().toString(36)}`;
  const config = parseConfig({ ...process.env, FACEMATCH_MILVUS_COLLECTION_PREFIX: prefix }).milvus;
  const collection = `${prefix}_action_faces`;
  const connect = () => new MilvusClient({ address, ...(config.token ? { token: config.token } : {}), timeout: 60_000, logLevel: 'error' });
  const admin = connect();
  const version = (await admin.getVersion()).version;
  // Bulk loads take longer than a request's deadline: a generous one for the bench.
  const strong = new MilvusVectorStore(connect(), { ...config, timeoutMs: 60_000, readConsistency: 'Strong' });
  const bounded = new MilvusVectorStore(connect(), { ...config, timeoutMs: 60_000, readConsistency: 'Bounded' });
  try {
    await strong.init(DIM);
    await bounded.init(DIM);
    let stored = 0;
    for (const size of SIZES) {
      console.error(`milvus: writing faces ${stored}..${size}`);
      const seconds = await load(strong, stored, size, MILVUS_BATCH, 'milvus');
      const inserted = size - stored;
      stored = size;
      console.error(`milvus: waiting for flush + index of ${size}`);
      const settleStarted = performance.now();
      await settleMilvus(admin, collection, size);
      const indexWaitSeconds = round((performance.now() - settleStarted) / 1000);
      const insert = { inserted, insertSeconds: round(seconds), insertPerSecond: round(inserted / seconds, 0), indexWaitSeconds };
      for (const [consistency, store] of [['Strong', strong], ['Bounded', bounded]] as const) {
        console.error(`milvus: searching ${size} (${consistency})`);
        const m = await measure(store, size, 42 + size);
        rows.push(searchRow({ store: 'milvus', data, faces: size, consistency, ...insert }, m));
      }
    }
  } finally {
    await strong.close();
    await bounded.close();
    await admin.dropCollection({ collection_name: `${prefix}_action_faces` }).catch(() => undefined);
    await admin.dropCollection({ collection_name: `${prefix}_user_samples` }).catch(() => undefined);
    admin.closeConnection();
  }
  return version;
}

function table(rows: readonly Row[]): string {
  const head = ['store', 'data', 'faces', 'consistency', 'insert rec/s', 'load rec/s', 'load s', 'loop max ms', 'index wait s', 'search p50 ms', 'p99 ms', 'top-1', 'exact', 'queries'];
  const cell = (x: number | string | null | undefined): string => (x === null || x === undefined ? '-' : String(x));
  const body = rows.map((r) => [
    r.store === 'embedded' ? `embedded (${EMBEDDED === 'thread' ? 'own' : 'main'} thread)` : r.store,
    r.data,
    r.faces.toLocaleString('en-US'),
    r.store === 'milvus' ? cell(r.consistency) : 'local',
    cell(r.steadyPerSecond),
    cell(r.insertPerSecond),
    cell(r.insertSeconds),
    cell(r.loopMaxMs),
    cell(r.indexWaitSeconds),
    cell(r.p50Ms),
    cell(r.p99Ms),
    r.top1 === null ? '-' : `${(r.top1 * 100).toFixed(1)}%`,
    r.exact === null ? '-' : `${(r.exact * 100).toFixed(1)}%`,
    r.note ? 'skipped*' : cell(r.queries),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (i < 4 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const notes = rows.filter((r) => r.note).map((r) => `* ${r.store} ${r.faces.toLocaleString('en-US')}: ${r.note!}`);
  return [line(head), `|${widths.map((w, i) => (i < 4 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...body.map(line), ...notes].join('\n');
}

async function main(): Promise<void> {
  const started = new Date();
  const loadBefore = os.loadavg();
  const rows: Row[] = [];
  const address = process.env.FACEMATCH_MILVUS_ADDRESS;
  for (const d of DATA) {
    data = d;
    await benchEmbedded(rows);
  }
  let milvusVersion: string | null = null;
  data = 'random';
  if (address) milvusVersion = await benchMilvus(rows, address);
  else console.error('milvus: skipped (FACEMATCH_MILVUS_ADDRESS is not set; `scripts/test-env up milvus` starts one)');

  const report = {
    bench: 'stores',
    startedAt: started.toISOString(),
    seconds: round((Date.now() - started.getTime()) / 1000),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? '?', memoryGiB: round(os.totalmem() / 2 ** 30), loadBefore, loadAfter: os.loadavg() },
    milvus: address ? { address, version: milvusVersion } : null,
    parameters: { dimension: DIM, events: EVENTS, data: DATA, facesPerPerson: FACES_PER_PERSON, steadyPhotos: STEADY_PHOTOS, photoFaces: PHOTO_FACES, limit: LIMIT, queries: QUERIES, warmup: WARMUP, embeddedBatch: EMBEDDED_BATCH, milvusBatch: MILVUS_BATCH, querySimilarity: 0.9 },
    rows,
  };
  await mkdir(path.dirname(OUT), { recursive: true });
  await writeFile(OUT, `${JSON.stringify(report, null, 2)}\n`);
  console.log(table(rows));
  console.log(`\n${report.seconds} s; load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} before; written to ${path.relative(REPO, OUT)}`);
}

await main();
