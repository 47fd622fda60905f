/**
 * Envoy sidecar benchmark (`npm run bench:envoy`): what the shipped k8s/envoy/envoy.yaml costs and
 * buys, on loopback. Two `facematch serve` replicas (child processes, `test` pack, one inference
 * worker each) behind a real envoy on the shipped configuration (test/support/envoy.ts: only the
 * addresses swapped for loopback), on the PostgreSQL, Milvus and S3 of `scripts/test-env` when they
 * are up (else each replica on its own embedded stores), and:
 *
 *   1. ProcessPhoto at the same offered load, straight to one replica and through envoy to two:
 *      BENCH_CALLS calls (default 60, the non-crowd group photos of ../shared/testdata under
 *      distinct ids, 4 enrolled facecams so that matching happens) sent at a fixed rate whatever
 *      the answers (open loop). The rate is BENCH_RATE calls/s, or by default 75% of what one
 *      replica completed in a short closed-loop warm-up at concurrency 4: a load one replica can
 *      just carry. Throughput (answers per second, first send to last answer), p50/p99 latency,
 *      failures, and envoy's retries;
 *   2. envoy's added latency per call: the gRPC health Check (no store, no inference) straight to a
 *      replica and through envoy, BENCH_PINGS calls each (default 2000), one at a time on one
 *      connection each, in alternating blocks of 100 so that drift in the machine's load hits both;
 *      p50 and p99, and the difference (goal: under 1 ms at p50). The same calls through a bare TCP
 *      relay in another node process give the cost of any extra process on the path on this
 *      machine (its scheduling), which envoy cannot go below.
 *
 * Prints a table and writes bench/out/envoy.json. Needs envoy (`scripts/test-env up envoy`; the
 * bench reads `scripts/test-env env`). Environment: BENCH_CALLS, BENCH_RATE, BENCH_PINGS.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { api, client, photoServer, type Client as FacematchClient } from '../e2e/support.js';
import { PhotoKind, type ProcessPhotoRequest } from '../src/gen/facematch/v1/facematch.js';
import { startEnvoy, type RunningEnvoy } from '../test/support/envoy.js';
import { startService, type ServiceProcess } from '../test/support/service-process.js';
import { identities } from '../test/support/shared.js';
import { GROUPS_DIR, REPO, cpuDescription, cpuSnapshot, machineInfo, percentile, positiveEnv, round, table, writeReport, type CpuSnapshot } from './support.js';

const CALLS = positiveEnv('BENCH_CALLS', 60);
const PINGS = positiveEnv('BENCH_PINGS', 2000);
const RATE = process.env.BENCH_RATE ? Number(process.env.BENCH_RATE) : undefined;
if (RATE !== undefined && !(RATE > 0)) throw new Error('BENCH_RATE must be a positive number (calls per second)');
const BLOCK = 100;
const RUN = `benv${Date.now().toString(36)}`;
const SHOTS = ['faceapi_bbt1.jpg', 'faceapi_bbt2.jpg', 'faceapi_bbt3.jpg', 'facerec_kit_with_rose.jpg', 'facerec_obama_and_biden.jpg', 'facerec_two_people.jpg', 'hpc203_s_l.jpg', 'insightface_t1.jpg'];
const ENROLLED = ['facerec_obama', 'facerec_biden', 'facerec_kit_harington', 'faceapi_sheldon'];
const STORE_MODULES = ['milvus', 'postgres', 's3'];

/** The KEY=value lines of `scripts/test-env env NAME` for each module that is up; the names of those up. */
function testEnv(modules: readonly string[]): { env: Record<string, string>; up: string[] } {
  const script = path.join(REPO, 'scripts', 'test-env');
  const env: Record<string, string> = {};
  const up: string[] = [];
  for (const name of modules) {
    if (spawnSync(script, ['status', name], { stdio: 'ignore', timeout: 30_000 }).status !== 0) continue;
    up.push(name);
    for (const line of execFileSync(script, ['env', name], { encoding: 'utf8' }).split('\n')) {
      const at = line.indexOf('=');
      if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
    }
  }
  return { env, up };
}

interface Answer {
  ms: number;
  error?: ServiceError;
}

function processPhoto(c: FacematchClient, req: ProcessPhotoRequest): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    c.processPhoto(req, new Metadata(), { deadline: Date.now() + 60_000 }, (error) =>
      resolve({ ms: performance.now() - t0, ...(error ? { error } : {}) }),
    );
  });
}

const raw = (b: Buffer): Buffer => b;
/** HealthCheckRequest{service: "facematch.v1.FacematchService"}, encoded by hand. */
const HEALTH_REQUEST = ((name: Buffer) => Buffer.concat([Buffer.from([0x0a, name.length]), name]))(Buffer.from('facematch.v1.FacematchService'));

function healthCheck(c: Client): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    c.makeUnaryRequest('/grpc.health.v1.Health/Check', raw, raw, HEALTH_REQUEST, new Metadata(), { deadline: Date.now() + 5000 }, (e, r) => {
      if (e || !r) reject(e ?? new Error('no reply'));
      // SERVING is status 1: 08 01.
      else if (r[0] !== 0x08 || r[1] !== 0x01) reject(new Error(`not SERVING: ${r.toString('hex')}`));
      else resolve(performance.now() - t0);
    });
  });
}

/** The share of all the machine's cores busy (every process: the replicas, envoy, the stores, others) between two snapshots. */
function busyShare(a: CpuSnapshot | null, b: CpuSnapshot | null): number | null {
  if (!a || !b) return null;
  return round((b.machineMs - a.machineMs) / ((b.wallMs - a.wallMs) * os.cpus().length), 3);
}

interface LoadResult {
  rate: number;
  sent: number;
  ok: number;
  failed: Record<string, number>;
  seconds: number;
  throughput: number;
  p50: number;
  p99: number;
  machine_busy_share: number | null;
}

/**
 * A bare TCP relay in its own process (node, no parsing, Nagle off) to `port`: the cost of one more
 * process on a call's path, whatever it does, as a floor for envoy's.
 */
async function startRelay(port: number): Promise<{ port: number; close: () => void }> {
  const code = `
    const net = require('node:net');
    const server = net.createServer((down) => {
      down.setNoDelay(true);
      const up = net.connect({ host: '127.0.0.1', port: ${port} }, () => up.setNoDelay(true));
      down.pipe(up).pipe(down);
      const end = () => { down.destroy(); up.destroy(); };
      down.on('error', end); up.on('error', end); down.on('close', end); up.on('close', end);
    });
    server.listen(0, '127.0.0.1', () => console.log(server.address().port));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (c) => reject(new Error(`the relay exited with ${c}`)));
  });
  return { port: Number(line), close: () => void child.kill('SIGKILL') };
}

async function main(): Promise<void> {
  const { env: servers, up } = testEnv(['envoy', ...STORE_MODULES]);
  if (!servers.FACEMATCH_TEST_ENVOY) throw new Error('envoy is not up: scripts/test-env up envoy');
  process.env.FACEMATCH_TEST_ENVOY = servers.FACEMATCH_TEST_ENVOY;
  const realStores = STORE_MODULES.every((m) => up.includes(m));
  // startService hands this process's environment to the replicas: the shared stores, when up.
  if (realStores) for (const [k, v] of Object.entries(servers)) if (k.startsWith('FACEMATCH_') && !k.startsWith('FACEMATCH_TEST_')) process.env[k] = v;
  const stores = realStores ? 'PostgreSQL + Milvus + S3 (shared)' : 'embedded (each replica its own)';
  const loadAverage = os.loadavg()[0]!;

  const dirs = [await mkdtemp(path.join(os.tmpdir(), 'facematch-bench-envoy-a-')), await mkdtemp(path.join(os.tmpdir(), 'facematch-bench-envoy-b-'))];
  const replicas: ServiceProcess[] = [];
  let envoy: RunningEnvoy | undefined;
  const photos = await photoServer();
  const written: string[] = [];
  const closers: (() => void)[] = [];
  try {
    replicas.push(...(await Promise.all(dirs.map((dataDir, i) => startService({ name: 'ab'[i]!, dataDir })))));
    const [a, b] = replicas as [ServiceProcess, ServiceProcess];
    envoy = await startEnvoy({ upstreams: [a.grpcPort, b.grpcPort] });
    const ready = Date.now() + 20_000;
    while ((await envoy.hosts()).filter((h) => h.healthy).length < 2) {
      if (Date.now() > ready) throw new Error('the replicas were not healthy in envoy within 20 s');
      await sleep(100);
    }
    const direct = client(a.grpcPort);
    const viaEnvoy = client(envoy.port);
    closers.push(() => direct.close(), () => viaEnvoy.close());
    console.error(`replicas on :${a.grpcPort} and :${b.grpcPort}, envoy on :${envoy.port}; stores: ${stores}`);

    // The gallery (on both replicas' stores when each has its own).
    const event = `${RUN}-event`;
    for (const target of realStores ? [a] : [a, b]) {
      const c = client(target.grpcPort);
      for (const p of identities().filter((x) => ENROLLED.includes(x.id))) {
        const photoId = `${RUN}-selfie-${p.id}`;
        written.push(photoId);
        const rel = path.relative(path.dirname(GROUPS_DIR), p.files[0]!);
        const r = await processPhoto(c, { photoId, imageUrl: `${photos.base}/${rel}`, eventId: event, kind: PhotoKind.PHOTO_KIND_FACECAM, userId: `${RUN}-${p.id}` });
        if (r.error) throw r.error;
      }
      c.close();
    }

    let shot = 0;
    const request = (label: string, i: number): ProcessPhotoRequest => {
      const photoId = `${RUN}-${label}-${i}`;
      written.push(photoId);
      return { photoId, imageUrl: `${photos.base}/groups/${SHOTS[shot++ % SHOTS.length]!}`, eventId: event, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' };
    };

    // Warm-up (closed loop, concurrency 4, straight to a): one replica's capacity, for the default rate.
    const warmCalls = 16;
    let next = 0;
    const warmStart = performance.now();
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let i = next++; i < warmCalls; i = next++) {
          const r = await processPhoto(direct, request('warm', i));
          if (r.error) throw r.error;
        }
      }),
    );
    const capacity = warmCalls / ((performance.now() - warmStart) / 1000);
    const rate = RATE ?? round(capacity * 0.75, 2);
    console.error(`one replica: ${capacity.toFixed(2)} calls/s closed loop; offered load ${rate} calls/s, ${CALLS} calls per path`);

    /** CALLS calls sent every 1/rate s, whatever the answers. */
    async function openLoop(label: string, c: FacematchClient): Promise<LoadResult> {
      const cpu0 = await cpuSnapshot();
      const t0 = performance.now();
      const answers = await Promise.all(
        Array.from({ length: CALLS }, async (_, i) => {
          await sleep(Math.max(0, t0 + (i * 1000) / rate - performance.now()));
          return processPhoto(c, request(label, i));
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      const okMs = answers.filter((x) => !x.error).map((x) => x.ms);
      const failed: Record<string, number> = {};
      for (const x of answers) if (x.error) failed[String(x.error.code)] = (failed[String(x.error.code)] ?? 0) + 1;
      return { rate, sent: CALLS, ok: okMs.length, failed, seconds: round(seconds, 2), throughput: round(okMs.length / seconds, 2), p50: round(percentile(okMs, 50), 1), p99: round(percentile(okMs, 99), 1), machine_busy_share: busyShare(cpu0, await cpuSnapshot()) };
    }

    const directLoad = await openLoop('direct', direct);
    console.error(`direct: ${directLoad.ok}/${CALLS} in ${directLoad.seconds} s`);
    const statsBefore = await envoy.stats();
    const envoyLoad = await openLoop('envoy', viaEnvoy);
    const statsAfter = await envoy.stats();
    const retried = (statsAfter['cluster.facematch.upstream_rq_retry'] ?? 0) - (statsBefore['cluster.facematch.upstream_rq_retry'] ?? 0);
    const split = (await envoy.hosts()).map((h) => h.stats.rq_total ?? 0);
    console.error(`through envoy: ${envoyLoad.ok}/${CALLS} in ${envoyLoad.seconds} s`);

    // Envoy's added latency: health Check, direct vs through envoy vs through a bare TCP relay (the
    // cost of any extra process on the path, on this machine), alternating blocks.
    const relay = await startRelay(a.grpcPort);
    closers.push(relay.close);
    const pingDirect = new Client(`127.0.0.1:${a.grpcPort}`, credentials.createInsecure());
    const pingEnvoy = new Client(`127.0.0.1:${envoy.port}`, credentials.createInsecure());
    const pingRelay = new Client(`127.0.0.1:${relay.port}`, credentials.createInsecure());
    closers.push(() => pingDirect.close(), () => pingEnvoy.close(), () => pingRelay.close());
    for (let i = 0; i < 200; i++) for (const c of [pingDirect, pingEnvoy, pingRelay]) await healthCheck(c);
    const pings = { direct: [] as number[], envoy: [] as number[], relay: [] as number[] };
    const pingCpu0 = await cpuSnapshot();
    for (let done = 0; done < PINGS; done += BLOCK) {
      const n = Math.min(BLOCK, PINGS - done);
      for (let i = 0; i < n; i++) pings.direct.push(await healthCheck(pingDirect));
      for (let i = 0; i < n; i++) pings.envoy.push(await healthCheck(pingEnvoy));
      for (let i = 0; i < n; i++) pings.relay.push(await healthCheck(pingRelay));
    }
    const pingBusy = busyShare(pingCpu0, await cpuSnapshot());
    const p = (xs: number[], q: number): number => round(percentile(xs, q), 3);
    const added = {
      direct: { p50: p(pings.direct, 50), p99: p(pings.direct, 99) },
      envoy: { p50: p(pings.envoy, 50), p99: p(pings.envoy, 99) },
      tcp_relay: { p50: p(pings.relay, 50), p99: p(pings.relay, 99) },
      relay_added_p50_ms: round(percentile(pings.relay, 50) - percentile(pings.direct, 50), 3),
      added_p50_ms: round(percentile(pings.envoy, 50) - percentile(pings.direct, 50), 3),
      added_p99_ms: round(percentile(pings.envoy, 99) - percentile(pings.direct, 99), 3),
    };

    const report = {
      date: new Date().toISOString(),
      machine: { ...machineInfo(), load_average_1m_at_start: round(loadAverage, 2) },
      envoy: { config: 'k8s/envoy/envoy.yaml (addresses swapped for loopback)', concurrency: 1 },
      replicas: { count: 2, inference_workers: 1, pack: 'test', stores },
      process_photo: {
        calls_per_path: CALLS,
        offered_rate_per_s: rate,
        rate_from: RATE === undefined ? `75% of one replica's closed-loop capacity (${round(capacity, 2)} calls/s at concurrency 4)` : 'BENCH_RATE',
        direct_one_replica: directLoad,
        envoy_two_replicas: { ...envoyLoad, retried, calls_per_replica: split },
      },
      added_latency: { rpc: 'grpc.health.v1.Health/Check', calls_per_path: PINGS, ...added, goal_p50_ms: 1, met: added.added_p50_ms < 1, machine_busy_share: pingBusy },
    };

    const fails = (r: LoadResult): string => String(r.sent - r.ok);
    const share = (x: number | null): string => (x === null ? '?' : `${(x * 100).toFixed(0)}%`);
    console.log(`${cpuDescription()}; load average ${loadAverage.toFixed(2)} at start; stores: ${stores}`);
    console.log(`ProcessPhoto, ${CALLS} calls per path at ${rate} calls/s offered (open loop):`);
    console.log(
      table(
        ['path', 'seconds', 'answers/s', 'p50 ms', 'p99 ms', 'failed', 'retried', 'machine busy'],
        [
          ['direct, one replica', directLoad.seconds.toFixed(1), directLoad.throughput.toFixed(2), directLoad.p50.toFixed(0), directLoad.p99.toFixed(0), fails(directLoad), '-', share(directLoad.machine_busy_share)],
          ['envoy, two replicas', envoyLoad.seconds.toFixed(1), envoyLoad.throughput.toFixed(2), envoyLoad.p50.toFixed(0), envoyLoad.p99.toFixed(0), fails(envoyLoad), String(retried), share(envoyLoad.machine_busy_share)],
        ],
      ),
    );
    console.log(`\nEnvoy's added latency, ${PINGS} health Checks per path, one at a time (machine ${share(pingBusy)} busy):`);
    console.log(
      table(
        ['path', 'p50 ms', 'p99 ms'],
        [
          ['direct', added.direct.p50.toFixed(3), added.direct.p99.toFixed(3)],
          ['through envoy', added.envoy.p50.toFixed(3), added.envoy.p99.toFixed(3)],
          ['added by envoy', added.added_p50_ms.toFixed(3), added.added_p99_ms.toFixed(3)],
          ['through a bare TCP relay (node)', added.tcp_relay.p50.toFixed(3), added.tcp_relay.p99.toFixed(3)],
        ],
      ),
    );
    console.log(`added at p50: ${added.added_p50_ms.toFixed(3)} ms (goal: under 1 ms) ${report.added_latency.met ? 'met' : 'NOT met'}`);
    console.log(`wrote ${await writeReport('envoy.json', report)}`);
  } finally {
    // What the bench wrote goes again (the stores may be shared).
    const live = replicas.find((r) => r.running());
    if (live) {
      const c = client(live.grpcPort);
      const rpc = api(c);
      for (const p of ENROLLED) await rpc.forgetUser({ userId: `${RUN}-${p}` }).catch(() => undefined);
      let next = 0;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          for (let i = next++; i < written.length; i = next++) await rpc.deletePhoto({ photoId: written[i]! }).catch(() => undefined);
        }),
      );
      c.close();
    }
    for (const close of closers) close();
    await envoy?.stop();
    await Promise.all(replicas.map((r) => r.stop()));
    await photos.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
}

await main();
