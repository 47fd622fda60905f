/**
 * The graceful shutdown of `facematch serve`, run as Kubernetes stops a pod: a child process on
 * embedded stores and the test models, photos from a loopback server that answers as slowly as a
 * test asks, SIGTERM while calls are in flight. Short drain and grace periods through the
 * environment (FACEMATCH_SHUTDOWN_DRAIN_MS, FACEMATCH_SHUTDOWN_GRACE_MS).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { api, client, LOOPBACK_SERVICE, type Client } from '../../e2e/support.js';
import { PhotoKind, type ProcessPhotoRequest } from '../../src/gen/facematch/v1/facematch.js';
import { MODELS_DIR, REPO } from '../support/shared.js';
import { healthStatus, rawProcessPhoto } from './raw-grpc.js';
import { slowPhotos } from './slow-photos.js';

const SERVICE = 'facematch.v1.FacematchService';
const TWO_FACES = 'facerec_obama_and_biden.jpg';

interface Service {
  child: ChildProcess;
  grpcPort: number;
  httpPort: number;
  /** Its JSON log lines so far. */
  logs: Record<string, unknown>[];
  /** Resolves when the process has exited, with when (performance.now()). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  stderr: () => string;
}

const started: Service[] = [];
let dataDir: string;
let photos: Awaited<ReturnType<typeof slowPhotos>>;
let c: Client | undefined;

/** `facematch serve` as a child process on embedded stores; resolves once it printed its ports. */
async function startService(env: Record<string, string>): Promise<Service> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'serve'], {
    cwd: REPO,
    env: {
      ...process.env,
      ...LOOPBACK_SERVICE,
      FACEMATCH_VECTOR_STORE: 'embedded',
      FACEMATCH_MATCH_STORE: 'embedded',
      FACEMATCH_OBJECT_STORE: 'embedded',
      FACEMATCH_MODEL_PACK: 'test',
      FACEMATCH_MODELS_DIR: MODELS_DIR,
      FACEMATCH_DATA_DIR: dataDir,
      FACEMATCH_INFERENCE_WORKERS: '1',
      FACEMATCH_FETCH_TIMEOUT_MS: '60000',
      FACEMATCH_LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let text = '';
  createInterface({ input: child.stderr }).on('line', (line) => {
    text = (text + line + '\n').slice(-20_000);
    if (line.startsWith('{')) logs.push(JSON.parse(line) as Record<string, unknown>);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (line) => resolve(JSON.parse(line) as { grpcPort: number; httpPort: number }));
    void exited.then(({ code }) => reject(new Error(`facematch serve exited (${code}) before it served:\n${text}`)));
  });
  const s: Service = { child, ...ports, logs, exited, stderr: () => text };
  console.info(`facematch serve started in ${(performance.now() - t0).toFixed(0)} ms`);
  started.push(s);
  return s;
}

/** Polls `check` every 20 ms until it holds; fails after `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms = 10_000, what = 'the condition'): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`${what} did not hold within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const phases = (s: Service): unknown[] => s.logs.filter((l) => l.phase !== undefined).map((l) => l.phase);
const phase = (s: Service, name: string): Record<string, unknown> | undefined => s.logs.find((l) => l.phase === name);
const readyz = async (s: Service): Promise<number> => (await fetch(`http://127.0.0.1:${s.httpPort}/readyz`)).status;

const shot = (photoId: string, imageUrl: string): ProcessPhotoRequest => ({
  photoId,
  imageUrl,
  eventId: 'shutdown',
  kind: PhotoKind.PHOTO_KIND_ACTION_SHOT,
  userId: '',
});

const failure = async (p: Promise<unknown>): Promise<ServiceError> => {
  try {
    await p;
  } catch (error) {
    return error as ServiceError;
  }
  throw new Error('expected the call to fail');
};

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-shutdown-'));
  photos = await slowPhotos();
});
afterEach(async () => {
  c?.close();
  c = undefined;
  for (const s of started.splice(0)) {
    if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
    await s.exited;
  }
});
afterAll(async () => {
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('facematch serve on SIGTERM', () => {
  it('says NOT_SERVING and /readyz 503 at once, serves new calls through the drain, finishes the calls in flight, then refuses with a trailers-only UNAVAILABLE and exits 0', async () => {
    const DRAIN = 2000;
    const GRACE = 10_000;
    const s = await startService({ FACEMATCH_SHUTDOWN_DRAIN_MS: String(DRAIN), FACEMATCH_SHUTDOWN_GRACE_MS: String(GRACE) });
    expect(await healthStatus(s.grpcPort, SERVICE)).toBe('SERVING');
    expect(await readyz(s)).toBe(200);
    c = client(s.grpcPort);
    const rpc = api(c);
    const reference = await rpc.processPhoto(shot('reference', photos.url(TWO_FACES, 0)));
    expect(reference.faces.length).toBeGreaterThan(0);

    // Three calls whose photo takes 4 s to arrive: in flight through the drain and into the refusals.
    const before = photos.arrived();
    const slow = [0, 1, 2].map((i) => rpc.processPhoto(shot(`slow-${i}`, photos.url(TWO_FACES, 4000))));
    await until(() => photos.arrived() === before + 3, 10_000, 'the three photo fetches');

    const t0 = performance.now();
    s.child.kill('SIGTERM');
    await until(async () => (await healthStatus(s.grpcPort, SERVICE)) === 'NOT_SERVING', 2000, 'NOT_SERVING');
    const notServingMs = performance.now() - t0;
    expect(await healthStatus(s.grpcPort, '')).toBe('NOT_SERVING');
    expect(await readyz(s)).toBe(503);

    // A new call during the drain delay is served in full.
    const sentAt = performance.now() - t0;
    const during = await rpc.processPhoto(shot('during-drain', photos.url('facerec_kit_with_rose.jpg', 0)));
    expect(sentAt).toBeLessThan(DRAIN);
    expect(during.faces.length).toBeGreaterThan(0);

    // After the drain: refused before any message (Envoy retries it on another replica).
    await until(() => phase(s, 'refuse') !== undefined, DRAIN + 2000, 'the refuse phase');
    const refused = await rawProcessPhoto(s.grpcPort, 'after-drain', photos.url(TWO_FACES, 0));
    expect(refused.headers['grpc-status']).toBe(String(status.UNAVAILABLE));
    expect(refused.headers['facematch-error-code']).toBe('BACKEND_UNAVAILABLE');
    expect(refused.endStream).toBe(true);
    expect(refused.data).toHaveLength(0);
    expect(refused.trailers).toBeUndefined();
    const rest = await fetch(`http://127.0.0.1:${s.httpPort}/v1/photos`, {
      method: 'POST',
      body: JSON.stringify({ photoId: 'after-drain-rest', imageUrl: photos.url(TWO_FACES, 0), kind: 'PHOTO_KIND_ACTION_SHOT' }),
    });
    expect(rest.status).toBe(503);
    expect(rest.headers.get('retry-after')).toBe('1');
    expect(await rest.json()).toMatchObject({ code: 'BACKEND_UNAVAILABLE' });

    // The calls in flight all complete.
    const done = await Promise.all(slow);
    for (const r of done) expect(r.faces).toHaveLength(reference.faces.length);

    const exit = await s.exited;
    const exitMs = exit.at - t0;
    console.info(
      `SIGTERM with 3 calls in flight: NOT_SERVING after ${notServingMs.toFixed(0)} ms, refusing at ${String(phase(s, 'refuse')?.atMs)} ms, exit ${exit.code} after ${exitMs.toFixed(0)} ms (drain ${DRAIN}, grace ${GRACE})`,
    );
    expect(notServingMs).toBeLessThan(500);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exitMs).toBeLessThan(DRAIN + GRACE);
    expect(phases(s)).toEqual(['drain', 'refuse', 'close', 'stopped']);
    expect(phase(s, 'refuse')).toMatchObject({ inFlight: 3 });
  });

  it('cuts a call that cannot finish within the grace at the bound: UNAVAILABLE, trailers-only; the process exits 0 at the bound', async () => {
    const DRAIN = 500;
    const GRACE = 1500;
    const s = await startService({ FACEMATCH_SHUTDOWN_DRAIN_MS: String(DRAIN), FACEMATCH_SHUTDOWN_GRACE_MS: String(GRACE) });
    c = client(s.grpcPort);
    const rpc = api(c);
    // Photos that take a minute to arrive: nothing finishes within the grace.
    const before = photos.arrived();
    const raw = rawProcessPhoto(s.grpcPort, 'hangs-raw', photos.url(TWO_FACES, 60_000));
    const viaClient = failure(rpc.processPhoto(shot('hangs-client', photos.url(TWO_FACES, 60_000))));
    await until(() => photos.arrived() === before + 2, 10_000, 'the two photo fetches');

    const t0 = performance.now();
    s.child.kill('SIGTERM');
    const cut = await raw;
    const cutMs = performance.now() - t0;
    expect(cut.headers['grpc-status']).toBe(String(status.UNAVAILABLE));
    expect(cut.headers['facematch-error-code']).toBe('BACKEND_UNAVAILABLE');
    expect(cut.endStream).toBe(true);
    expect(cut.data).toHaveLength(0);
    const e = await viaClient;
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.metadata.get('facematch-error-code')).toEqual(['BACKEND_UNAVAILABLE']);

    const exit = await s.exited;
    const exitMs = exit.at - t0;
    console.info(`SIGTERM with 2 calls that cannot finish: cut after ${cutMs.toFixed(0)} ms, exit ${exit.code} after ${exitMs.toFixed(0)} ms (drain ${DRAIN} + grace ${GRACE})`);
    expect(cutMs).toBeGreaterThanOrEqual(DRAIN + GRACE - 100);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exitMs).toBeLessThan(DRAIN + GRACE + 2000);
    expect(phases(s)).toEqual(['drain', 'refuse', 'cut', 'close', 'stopped']);
    expect(phase(s, 'cut')).toMatchObject({ cut: 2 });
  });

  it('exits at once on a second signal during the drain', async () => {
    const s = await startService({ FACEMATCH_SHUTDOWN_DRAIN_MS: '30000' });
    s.child.kill('SIGTERM');
    await until(() => phase(s, 'drain') !== undefined, 5000, 'the drain phase').catch((e: Error) => {
      throw new Error(`${e.message} (exit ${String(s.child.exitCode)}, signal ${String(s.child.signalCode)})\n${s.stderr()}`);
    });
    const t0 = performance.now();
    s.child.kill('SIGINT');
    const exit = await s.exited;
    expect(exit).toMatchObject({ code: 1, signal: null });
    expect(exit.at - t0).toBeLessThan(1000);
    expect(s.logs.some((l) => l.msg === 'second signal: exiting now')).toBe(true);
  });
});
