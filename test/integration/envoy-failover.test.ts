/**
 * Failover behind the sidecar, end to end: two real `facematch serve` replicas (child processes,
 * each its own temp data directory, one inference worker) on the PostgreSQL, Milvus and S3 of
 * `scripts/test-env`, behind one real envoy running the shipped k8s/envoy/envoy.yaml (only the
 * addresses swapped for loopback: test/support/envoy.ts). A steady, bounded load of ProcessPhoto
 * calls (real photos from ../shared/testdata, unique photo ids, a few enrolled facecams so that
 * matching happens) goes through envoy while:
 *
 *   1. one replica is SIGKILLed: no call fails; envoy retried and took the dead replica out
 *      (outlier ejection and/or failed health checks); every photo's record matches its vectors
 *      exactly once; restarted on its port (same data directory), the replica gets calls again
 *      within seconds (counted on its own /metrics);
 *   2. one replica gets SIGTERM: no call fails and envoy needed no retry (the service says
 *      NOT_SERVING and keeps serving for a drain delay until envoy's health check has taken it
 *      out, then finishes what it has in flight);
 *   3. one replica is at its in-flight bound (FACEMATCH_MAX_IN_FLIGHT=1, held by a slow call):
 *      its RESOURCE_EXHAUSTED answers are retried by envoy and complete on the other replica.
 *
 * Each scenario prints one `envoy-failover figures` line (calls sent, failed, retried, ejections,
 * time to recover). Needs envoy, Milvus, S3 and PostgreSQL (scripts/test-env up); stops none of
 * them, and removes what it wrote.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStores, type OpenStores } from '../../src/adapters/stores.js';
import { PhotoKind, type ProcessPhotoRequest, type ProcessPhotoResponse } from '../../src/gen/facematch/v1/facematch.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { api, client, photoServer, type Client } from '../../e2e/support.js';
import { photoProblems } from '../support/consistency.js';
import { envoyBinary, startEnvoy, type AccessLogEntry, type EnvoyHost, type RunningEnvoy } from '../support/envoy.js';
import { freePort, inFlight, requestCounts, startService, type ServiceProcess } from '../support/service-process.js';
import { GROUPS_DIR, identities, sharedAnalyzer, testConfig } from '../support/shared.js';

const ENVOY = envoyBinary();
const REAL = Boolean(process.env.FACEMATCH_MILVUS_ADDRESS && process.env.FACEMATCH_POSTGRES_URL && process.env.FACEMATCH_S3_ENDPOINT);
if (!ENVOY || !REAL) {
  console.warn('envoy-failover.test.ts skipped: needs envoy, Milvus, S3 and PostgreSQL (scripts/test-env up; npm run test:integration)');
}

const RUN = `ef${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
/** One event per scenario: the consistency check lists an event's vectors with one search of at most 1000. */
const eventOf = (label: string): string => `${RUN}-${label}`;
const METHOD = 'ProcessPhoto';
/** Callers at once, and the least time between the starts of one caller's calls: ~2.9 calls/s. */
const CALLERS = 4;
const PACE_MS = 1400;
/** When the fault lands, after the load started. */
const FAULT_AT_MS = 4000;
const ENROLLED = ['facerec_obama', 'facerec_biden', 'facerec_kit_harington', 'faceapi_sheldon'];
/** Group photos with a handful of faces each (not the two crowds: they take seconds on these cores). */
const SHOTS = ['faceapi_bbt1.jpg', 'faceapi_bbt2.jpg', 'faceapi_bbt3.jpg', 'facerec_kit_with_rose.jpg', 'facerec_obama_and_biden.jpg', 'facerec_two_people.jpg', 'hpc203_s_l.jpg', 'insightface_t1.jpg'];

interface CallResult {
  photoId: string;
  requestId: string;
  startedMs: number;
  ms: number;
  error?: ServiceError;
  response?: ProcessPhotoResponse;
}

/** ProcessPhoto with an x-request-id (the access log's key), a 60 s deadline (the route's timeout); never rejects. */
function processPhoto(c: Client, req: ProcessPhotoRequest, requestId: string): Promise<{ error?: ServiceError; response?: ProcessPhotoResponse }> {
  const md = new Metadata();
  md.set('x-request-id', requestId);
  return new Promise((resolve) => {
    c.processPhoto(req, md, { deadline: Date.now() + 60_000 }, (error, response) => resolve(error ? { error } : { response }));
  });
}

/** A loopback image source whose /held.jpg answers only once released (a slow photographer's server). */
async function heldPhotoServer(file: string): Promise<{ url: string; release: () => void; requested: () => number; close: () => Promise<void> }> {
  const bytes = await readFile(file);
  let released = false;
  let requested = 0;
  const waiting: (() => void)[] = [];
  const server: Server = createServer((_req, res) => {
    requested++;
    const answer = (): void => void res.writeHead(200, { 'content-type': 'image/jpeg' }).end(bytes);
    if (released) answer();
    else waiting.push(answer);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/held.jpg`,
    release: () => {
      released = true;
      for (const w of waiting.splice(0)) w();
    },
    requested: () => requested,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Runs `fn` on every item, `width` at a time. */
async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    for (let i = next++; i < items.length; i = next++) await fn(items[i]!);
  }));
}

const counter = (stats: Record<string, number>, name: string): number => stats[`cluster.facematch.${name}`] ?? 0;
const delta = (before: Record<string, number>, after: Record<string, number>, name: string): number => counter(after, name) - counter(before, name);
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

describe.runIf(ENVOY && REAL)('two replicas behind the shipped envoy, on PostgreSQL + Milvus + S3', () => {
  const replicas = new Map<'a' | 'b', ServiceProcess>();
  const ports = { a: 0, b: 0 };
  const dirs = { a: '', b: '' };
  let envoy: RunningEnvoy;
  let viaEnvoy: Client;
  let photos: Awaited<ReturnType<typeof photoServer>>;
  let stores: OpenStores;
  let dimension: number;
  const written: string[] = [];
  let shot = 0;

  const replica = (name: 'a' | 'b'): ServiceProcess => {
    const r = replicas.get(name);
    if (!r) throw new Error(`replica ${name} is not running`);
    return r;
  };
  const hostOf = (name: 'a' | 'b'): string => `127.0.0.1:${ports[name]}`;
  const start = async (name: 'a' | 'b', env: NodeJS.ProcessEnv = {}): Promise<ServiceProcess> => {
    const r = await startService({ name, dataDir: dirs[name], grpcPort: ports[name], env });
    replicas.set(name, r);
    return r;
  };
  const host = async (name: 'a' | 'b'): Promise<EnvoyHost | undefined> => (await envoy.hosts()).find((h) => h.address === hostOf(name));
  const accessLines = async (results: readonly CallResult[]): Promise<AccessLogEntry[]> => {
    const ids = new Set(results.map((r) => r.requestId));
    // The access log reaches its file within 100 ms of a call (--file-flush-interval-msec).
    return until(
      'every call in the access log',
      async () => {
        const lines = (await envoy.accessLog()).filter((l) => ids.has(String(l.x_request_id)));
        return lines.length === ids.size ? lines : undefined;
      },
      5000,
    );
  };

  /**
   * `calls` ProcessPhoto calls through envoy, CALLERS at a time, each caller starting a call at
   * most every PACE_MS; `fault` runs alongside, FAULT_AT_MS in. No call is retried by the caller:
   * whatever fails here failed through envoy.
   */
  async function steadyLoad(label: string, event: string, calls: number, fault?: () => Promise<void>): Promise<CallResult[]> {
    const results: CallResult[] = [];
    const t0 = performance.now();
    let next = 0;
    const caller = async (): Promise<void> => {
      for (let i = next++; i < calls; i = next++) {
        const begun = performance.now();
        const photoId = `${RUN}-${label}-${i}`;
        written.push(photoId);
        const file = SHOTS[shot++ % SHOTS.length]!;
        const { error, response } = await processPhoto(
          viaEnvoy,
          { photoId, imageUrl: `${photos.base}/groups/${file}`, eventId: event, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' },
          `${photoId}-req`,
        );
        results.push({ photoId, requestId: `${photoId}-req`, startedMs: begun - t0, ms: performance.now() - begun, ...(error ? { error } : {}), ...(response ? { response } : {}) });
        await sleep(Math.max(0, PACE_MS - (performance.now() - begun)));
      }
    };
    await Promise.all([...Array.from({ length: CALLERS }, caller), fault ? sleep(FAULT_AT_MS).then(fault) : Promise.resolve()]);
    const ms = results.map((r) => r.ms).sort((x, y) => x - y);
    console.info(
      `envoy-failover: ${label}: ${calls} calls in ${seconds(performance.now() - t0)}, ` +
        `latency p50 ${ms[Math.floor(ms.length / 2)]!.toFixed(0)} ms, max ${ms.at(-1)!.toFixed(0)} ms`,
    );
    return results;
  }

  const failures = (results: readonly CallResult[]): string[] =>
    results.filter((r) => r.error).map((r) => `${r.photoId}: ${r.error!.code} ${r.error!.details}`);

  /** Every photo's record against its vectors (test/support/consistency.ts), a few photos at a time. */
  async function consistency(event: string, photoIds: readonly string[]): Promise<string[]> {
    const t0 = performance.now();
    const problems: string[] = [];
    await pool(photoIds, 6, async (id) => void problems.push(...(await photoProblems(stores, event, id, dimension))));
    console.info(`envoy-failover: ${photoIds.length} photos checked against their vectors in ${seconds(performance.now() - t0)}`);
    return problems;
  }

  /** The ENROLLED people's selfies in `event`, through envoy, so that the load's action shots are matched. */
  async function enrol(event: string): Promise<void> {
    for (const p of identities().filter((i) => ENROLLED.includes(i.id))) {
      const photoId = `${event}-selfie-${p.id}`;
      written.push(photoId);
      const rel = path.relative(path.dirname(GROUPS_DIR), p.files[0]!);
      const { error } = await processPhoto(
        viaEnvoy,
        { photoId, imageUrl: `${photos.base}/${rel}`, eventId: event, kind: PhotoKind.PHOTO_KIND_FACECAM, userId: `${RUN}-${p.id}` },
        `${photoId}-req`,
      );
      if (error) throw error;
    }
  }

  beforeAll(async () => {
    [ports.a, ports.b] = [await freePort(), await freePort()];
    dirs.a = await mkdtemp(path.join(tmpdir(), 'facematch-failover-a-'));
    dirs.b = await mkdtemp(path.join(tmpdir(), 'facematch-failover-b-'));
    photos = await photoServer();
    await Promise.all([start('a'), start('b')]);
    envoy = await startEnvoy({ upstreams: [ports.a, ports.b] });
    viaEnvoy = client(envoy.port);
    await until('both replicas healthy in envoy', async () => (await envoy.hosts()).filter((h) => h.healthy).length === 2, 20_000);

    dimension = (await sharedAnalyzer()).embedder.dimension;
    stores = await openStores(testConfig({ FACEMATCH_DATA_DIR: dirs.a }), createLogger('warn'));
    await stores.vectors.init(dimension);
  }, 180_000);

  afterAll(async () => {
    // What this file wrote goes again (the servers are shared with the other files).
    const live = [...replicas.values()].find((r) => r.running());
    if (live) {
      const c = client(live.grpcPort);
      const rpc = api(c);
      for (const p of ENROLLED) await rpc.forgetUser({ userId: `${RUN}-${p}` }).catch(() => undefined);
      await pool(written, 4, (photoId) => rpc.deletePhoto({ photoId }).then(() => undefined, () => undefined));
      c.close();
    }
    viaEnvoy?.close();
    await stores?.close();
    await envoy?.stop();
    await Promise.all([...replicas.values()].map((r) => r.stop()));
    await photos?.close();
    for (const d of Object.values(dirs)) if (d) await rm(d, { recursive: true, force: true });
  }, 180_000);

  it('SIGKILL one replica under load: no call fails, envoy retries and takes it out; restarted, it gets calls again within seconds', async () => {
    const event = eventOf('kill');
    await enrol(event);
    const before = await envoy.stats();
    const seen = { flags: new Set<string>(), outAtMs: 0 };
    let killedAt = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const h = await host('b').catch(() => undefined);
        if (h && !h.healthy && killedAt) {
          for (const f of h.flags) seen.flags.add(f);
          seen.outAtMs ||= Date.now() - killedAt;
        }
        await sleep(200);
      }
    })();
    const results = await steadyLoad('kill', event, 56, async () => {
      killedAt = Date.now();
      replica('b').child.kill('SIGKILL');
      await replica('b').exited;
    });
    watching = false;
    await watch;
    const after = await envoy.stats();
    const lines = await accessLines(results);
    const onB = lines.filter((l) => l.upstream_host === hostOf('b')).length;
    const retried = delta(before, after, 'upstream_rq_retry');
    const retriedCalls = lines.filter((l) => Number(l.attempts) > 1).length;
    const ejections = delta(before, after, 'outlier_detection.ejections_enforced_total');
    const hcFailures = delta(before, after, 'health_check.failure');
    const problems = await consistency(event, results.map((r) => r.photoId));

    // Back on its port, on the same data directory: it gets calls again within seconds. When envoy
    // marks it healthy, sends it a call (its host's rq_total in /clusters) and it completes one
    // (its own /metrics), each from the moment it serves.
    const sentBefore = (await host('b'))?.stats.rq_total ?? 0;
    const restartAt = Date.now();
    const b = await start('b');
    const servingAt = Date.now();
    const back = { healthy: 0, sent: 0, completed: 0 };
    watching = true;
    const poll = (async () => {
      while (watching && !back.completed) {
        const h = await host('b').catch(() => undefined);
        if (h?.healthy) back.healthy ||= Date.now() - servingAt;
        if ((h?.stats.rq_total ?? 0) > sentBefore) back.sent ||= Date.now() - servingAt;
        const ok = (await requestCounts(b.httpPort, METHOD).catch((): Record<string, number> => ({}))).OK ?? 0;
        if (ok > 0) back.completed = Date.now() - servingAt;
        else await sleep(100);
      }
    })();
    const again = await steadyLoad('back', event, 12);
    watching = false;
    await poll;
    const onRestarted = (await requestCounts(b.httpPort, METHOD)).OK ?? 0;
    const failed = [...failures(results), ...failures(again)];
    console.log(
      `envoy-failover figures | SIGKILL: sent ${results.length + again.length}, failed ${failed.length}, ` +
        `retried ${retried} (calls with >1 try: ${retriedCalls}), ejections ${ejections} (outlier), health-check failures ${hcFailures}, ` +
        `b out of rotation ${seconds(seen.outAtMs)} after the kill (${[...seen.flags].join(' + ')}), calls on b before the kill ${onB}; ` +
        `restarted b: serving ${seconds(servingAt - restartAt)} after its start; then healthy in envoy after ${seconds(back.healthy)}, ` +
        `first call sent to it after ${seconds(back.sent)} (time to recover), first completed after ${seconds(back.completed)}; ${onRestarted} of the next ${again.length} calls on it`,
    );

    expect(failed).toEqual([]);
    // The enrolled people were found in the action shots.
    expect(results.some((r) => r.response!.faces.some((f) => f.matches.length > 0))).toBe(true);
    // b served calls before it died; envoy retried the calls it lost and those sent to it after.
    expect(onB).toBeGreaterThan(0);
    expect(retried).toBeGreaterThan(0);
    expect(retriedCalls).toBeGreaterThan(0);
    expect(delta(before, after, 'upstream_rq_retry_overflow')).toBe(0);
    // Taken out of rotation: ejected by outlier detection (3 gateway failures in a row) or marked
    // down by the health check (2 failures), whichever came first.
    expect(seen.flags.size).toBeGreaterThan(0);
    expect(ejections + hcFailures).toBeGreaterThan(0);
    expect(problems).toEqual([]);

    expect(onRestarted).toBeGreaterThan(0);
    // Health checked every second while down (unhealthy_interval), in after one success.
    expect(back.sent).toBeGreaterThan(0);
    expect(back.sent).toBeLessThan(5000);
    expect((await host('b'))?.healthy).toBe(true);
    expect(await consistency(event, again.map((r) => r.photoId))).toEqual([]);
  }, 150_000);

  it('SIGTERM one replica under load: no call fails, and envoy needs no retry', async () => {
    // Each scenario starts from two serving replicas, whatever the one before left.
    for (const name of ['a', 'b'] as const) if (!replicas.get(name)?.running()) await start(name);
    await until('both replicas healthy in envoy', async () => (await envoy.hosts()).filter((h) => h.healthy).length === 2, 20_000);
    const event = eventOf('term');
    await enrol(event);
    const before = await envoy.stats();
    let termAt = 0;
    let exit: { code: number | null; signal: NodeJS.Signals | null; afterMs: number } | undefined;
    const a = replica('a');
    const results = await steadyLoad('term', event, 56, () => {
      termAt = Date.now();
      a.child.kill('SIGTERM');
      void a.exited.then((e) => (exit = { ...e, afterMs: Date.now() - termAt }));
      return Promise.resolve();
    });
    // The replica finishes what it had in flight and exits; SIGKILL after 30 s, as a kubelet's grace period.
    await Promise.race([a.exited, sleep(30_000)]);
    if (!exit) a.child.kill('SIGKILL');
    const after = await envoy.stats();
    const lines = await accessLines(results);
    const onA = lines.filter((l) => l.upstream_host === hostOf('a')).length;
    const retriedCalls = lines.filter((l) => Number(l.attempts) !== 1);
    const retried = delta(before, after, 'upstream_rq_retry');
    const hostOfCall = new Map(lines.map((l) => [String(l.x_request_id), l.upstream_host]));
    const lastOnA = Math.max(0, ...results.filter((r) => hostOfCall.get(r.requestId) === hostOf('a')).map((r) => r.startedMs));

    console.log(
      `envoy-failover figures | SIGTERM: sent ${results.length}, failed ${failures(results).length}, retried ${retried} ` +
        `(calls with >1 try: ${retriedCalls.length}), ejections ${delta(before, after, 'outlier_detection.ejections_enforced_total')}, ` +
        `calls on a ${onA} (the last one sent ${seconds(lastOnA - FAULT_AT_MS)} after the SIGTERM), ` +
        `a exited ${exit ? `${exit.code ?? exit.signal} after ${seconds(exit.afterMs)}` : 'not within 30 s (killed)'}`,
    );
    expect(failures(results)).toEqual([]);
    expect(onA).toBeGreaterThan(0);
    expect(exit).toMatchObject({ code: 0 });
    expect(await consistency(event, results.map((r) => r.photoId))).toEqual([]);
    // Needs the service's graceful shutdown: NOT_SERVING, then serving on for a drain delay until
    // envoy's health check has taken the replica out (2 failures 2 s apart), then finishing what is
    // in flight. Without the drain delay, calls envoy still sends to the stopping replica are
    // refused and retried on the other (they do not fail, but envoy needed a retry).
    expect(
      retriedCalls.map((l) => `${String(l.x_request_id)}: ${String(l.attempts)} tries, ended on ${String(l.upstream_host)}`),
      'envoy retried calls of the replica shutting down: the service must keep serving after NOT_SERVING until envoy has taken it out (drain delay)',
    ).toEqual([]);
    expect(retried).toBe(0);
  }, 120_000);

  it('one replica at its in-flight bound: its RESOURCE_EXHAUSTED answers are retried by envoy and complete on the other', async () => {
    // a again (after the SIGTERM), bounded to one request in flight, with room for a slow source.
    await replicas.get('a')?.stop(5000);
    const a = await start('a', { FACEMATCH_MAX_IN_FLIGHT: '1', FACEMATCH_FETCH_TIMEOUT_MS: '90000' });
    await until('a healthy in envoy', async () => (await host('a'))?.healthy, 20_000);
    const event = eventOf('full');
    await enrol(event);
    const held = await heldPhotoServer(path.join(GROUPS_DIR, 'facerec_obama_and_biden.jpg'));
    try {
      // The slow call, straight to a: it holds a's only slot while its photo is held.
      const slowId = `${event}-slow`;
      written.push(slowId);
      const direct = client(a.grpcPort);
      const slow = processPhoto(direct, { photoId: slowId, imageUrl: held.url, eventId: event, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' }, `${slowId}-req`);
      await until('a at its bound', async () => held.requested() > 0 && (await inFlight(a.httpPort)) === 1, 10_000);

      const before = await envoy.stats();
      const countsBefore = await requestCounts(a.httpPort, METHOD);
      const results = await steadyLoad('full', event, 40);
      const countsAfter = await requestCounts(a.httpPort, METHOD);
      const after = await envoy.stats();
      held.release();
      const slowResult = await slow;
      direct.close();

      const lines = await accessLines(results);
      const refused = (countsAfter.OVERLOADED ?? 0) - (countsBefore.OVERLOADED ?? 0);
      const extraTries = lines.reduce((n, l) => n + Number(l.attempts) - 1, 0);
      const retried = delta(before, after, 'upstream_rq_retry');
      console.log(
        `envoy-failover figures | in-flight bound: sent ${results.length}, failed ${failures(results).length}, retried ${retried}, ` +
          `RESOURCE_EXHAUSTED on the bounded replica ${refused} (its calls completed there: ${(countsAfter.OK ?? 0) - (countsBefore.OK ?? 0)}), ` +
          `ejections ${delta(before, after, 'outlier_detection.ejections_enforced_total')}, bounded replica healthy at the end: ${String((await host('a'))?.healthy)}`,
      );
      expect(failures(results)).toEqual([]);
      expect(slowResult.error).toBeUndefined();
      // Envoy sent some first tries to the full replica (least-request sees no active calls of its own there) ...
      expect(refused).toBeGreaterThan(0);
      // ... each refusal was retried once, on the other replica, and completed there.
      expect(extraTries).toBe(refused);
      expect(retried).toBe(refused);
      expect(lines.every((l) => l.upstream_host === hostOf('b') && Number(l.grpc_status) === 0)).toBe(true);
      expect((countsAfter.OK ?? 0) - (countsBefore.OK ?? 0)).toBe(0);
      // A full replica is not a broken one: not ejected, still healthy.
      expect(delta(before, after, 'outlier_detection.ejections_enforced_total')).toBe(0);
      expect((await host('a'))?.healthy).toBe(true);
      expect(await consistency(event, [...results.map((r) => r.photoId), slowId])).toEqual([]);
    } finally {
      held.release();
      await held.close();
    }
  }, 120_000);
});
