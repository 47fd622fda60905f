/**
 * Milvus's time tick against a photo's store calls (`npm run bench:milvus-tick`): what
 * `proxy.timeTickInterval` (the chart's `milvus.timeTickIntervalMs`) buys in latency and costs in
 * Milvus's idle CPU. Prints a table and writes bench/out/milvus-tick.json.
 *
 * Every read of the service is Strong (see milvus.vector-store.ts): Milvus answers it once its query
 * node's clock has passed the read's start, and that clock moves in time ticks. So does a delete by
 * photo, which Milvus runs as a query first. For each interval (BENCH_MILVUS_TICKS, ms, default
 * 200,100,50,20; 200 is Milvus's own default) the bench restarts the test Milvus of
 * `scripts/test-env` with `FACEMATCH_TEST_ENV_MILVUS_TIME_TICK_MS` set to it, lets it settle, and
 * measures through the service's adapter, as ProcessPhoto calls it:
 *
 *   - replacePhoto: a 4-face action shot's vectors replace the photo's (deletes by photo, then the
 *     write: on 2.3 a delete of the ids and an insert);
 *   - searchMany: the photo's 4 faces against the enrolled users, one call;
 *   - Milvus's CPU while idle (the whole process group, BENCH_MILVUS_IDLE_S seconds, default 30).
 *
 * BENCH_MILVUS_PHOTOS photos (default 30) after 3 warm-up ones, a few ms apart, one at a time. The
 * test Milvus is left running with the test environment's default interval afterwards.
 * Needs `scripts/test-env` (installs Milvus on first use); takes ~1.5 minutes an interval.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { MilvusVectorStore } from '../src/adapters/milvus/milvus.vector-store.js';
import type { VectorRecord } from '../src/ports/vector-store.js';
import { seededRandom } from '../test/support/seeded-random.js';
import { cpuDescription, f1, median, percentile, positiveEnv, REPO, table, writeReport } from './support.js';

const run = promisify(execFile);
const TEST_ENV = path.join(REPO, 'scripts', 'test-env');
const STATE = process.env.FACEMATCH_TEST_ENV_STATE ?? '/tmp/facematch-test-env';
const ADDRESS = `127.0.0.1:${process.env.FACEMATCH_TEST_ENV_MILVUS_PORT ?? '19531'}`;
const TICKS = (process.env.BENCH_MILVUS_TICKS ?? '200,100,50,20').split(',').map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n <= 0) throw new Error(`BENCH_MILVUS_TICKS: ${JSON.stringify(s)} is not a positive integer (ms)`);
  return n;
});
const PHOTOS = positiveEnv('BENCH_MILVUS_PHOTOS', 30);
const IDLE_S = positiveEnv('BENCH_MILVUS_IDLE_S', 30);
const SETTLE_MS = 15_000;
const FACES = 4;
const DIM = 512;

/** Seeded unit vectors, so that every interval stores and searches the same data. */
function vectors(seed: number, n: number): Float32Array[] {
  const next = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const v = Float32Array.from({ length: DIM }, () => next() - 0.5);
    const norm = Math.hypot(...v);
    return v.map((x) => x / norm);
  });
}

async function testEnv(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await run(TEST_ENV, args, { env, maxBuffer: 16 * 1024 * 1024 });
}

/** CPU seconds used so far by every process of Milvus's process group (the launcher's). */
async function milvusCpuSeconds(): Promise<number> {
  const group = (await readFile(path.join(STATE, 'milvus.pid'), 'utf8')).trim();
  let ticks = 0;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      // Fields after the command (which may hold spaces): state is field 3, pgrp 5, utime 14, stime 15.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (f[2] === group) ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone in between
    }
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}

interface Row {
  tick_ms: number;
  replace_p50_ms: number;
  replace_p95_ms: number;
  search_p50_ms: number;
  search_p95_ms: number;
  photo_p50_ms: number;
  idle_cpu_share_of_a_core: number;
}

async function measure(tick: number): Promise<Row> {
  await testEnv(['down', 'milvus']);
  await testEnv(['up', 'milvus'], { ...process.env, FACEMATCH_TEST_ENV_MILVUS_TIME_TICK_MS: String(tick) });
  const store = MilvusVectorStore.connect({
    address: ADDRESS,
    collectionPrefix: 'bench_tick',
    index: 'HNSW',
    hnswM: 16,
    hnswEfConstruction: 200,
    searchEf: 64,
    timeoutMs: 10_000,
  });
  try {
    await store.init(DIM);
    const users = vectors(7, 50);
    await store.upsert(
      'user_samples',
      users.map((embedding, i) => ({ id: `u${i}#0`, eventId: 'e1', photoId: `selfie${i}`, userId: `u${i}`, embedding })),
    );
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const cpu0 = await milvusCpuSeconds();
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const idle = (await milvusCpuSeconds()) - cpu0;
    const replace: number[] = [];
    const search: number[] = [];
    for (let i = -3; i < PHOTOS; i++) {
      const photoId = `shot${((i % 10) + 10) % 10}`;
      const faces = vectors(1000 + i, FACES);
      const records: VectorRecord[] = faces.map((embedding, k) => ({ id: `${photoId}#${k}`, eventId: 'e1', photoId, embedding }));
      const t0 = performance.now();
      await store.replacePhoto(photoId, 'action_faces', records);
      const t1 = performance.now();
      await store.searchMany(
        'user_samples',
        faces.map((embedding) => ({ eventId: 'e1', embedding, limit: 5, minSimilarity: 0.3 })),
      );
      const t2 = performance.now();
      if (i >= 0) {
        replace.push(t1 - t0);
        search.push(t2 - t1);
      }
      // Photos arrive at no fixed phase of the tick.
      await new Promise((r) => setTimeout(r, 5 + ((i * 37) % 60)));
    }
    const photo = replace.map((r, i) => r + (search[i] ?? 0));
    return {
      tick_ms: tick,
      replace_p50_ms: median(replace),
      replace_p95_ms: percentile(replace, 95),
      search_p50_ms: median(search),
      search_p95_ms: percentile(search, 95),
      photo_p50_ms: median(photo),
      idle_cpu_share_of_a_core: idle / IDLE_S,
    };
  } finally {
    await store.close();
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  const rows: Row[] = [];
  try {
    for (const tick of TICKS) {
      rows.push(await measure(tick));
      console.error(`tick ${tick} ms measured`);
    }
  } finally {
    // Back to the test environment's default interval.
    await testEnv(['down', 'milvus']);
    await testEnv(['up', 'milvus']);
  }
  console.log(
    `Milvus time tick against a 4-face photo's store calls: Milvus 2.3.5 standalone (scripts/test-env), ${cpuDescription(os.cpus())}; ` +
      `${PHOTOS} photos one at a time after 3 warm-up ones; idle CPU over ${IDLE_S} s\n`,
  );
  console.log(
    table(
      ['proxy.timeTickInterval ms', 'replacePhoto p50', 'p95', 'searchMany (4 faces) p50', 'p95', 'both p50', "Milvus's idle CPU (share of a core)"],
      rows.map((r) => [
        String(r.tick_ms),
        f1(r.replace_p50_ms),
        f1(r.replace_p95_ms),
        f1(r.search_p50_ms),
        f1(r.search_p95_ms),
        f1(r.photo_p50_ms),
        `${Math.round(r.idle_cpu_share_of_a_core * 100)}%`,
      ]),
    ),
  );
  const file = await writeReport('milvus-tick.json', { cpu: cpuDescription(os.cpus()), photos: PHOTOS, idle_s: IDLE_S, rows });
  console.log(`\nwrote ${file} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

await main();
