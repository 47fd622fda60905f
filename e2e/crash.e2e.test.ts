/**
 * Crash safety as an operator meets it: `facematch serve` as a real child process on a temp data
 * directory, SIGKILLed while action shots are being processed, then restarted on the same directory.
 * What a client was told is done survives; what was in flight is either absent or whole, never half
 * written; retrying it completes it; reprocessing never duplicates; SIGTERM stops cleanly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { status, type ServiceError } from '@grpc/grpc-js';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PhotoKind, type ProcessPhotoResponse } from '../src/gen/facematch/v1/facematch.js';
import { GROUPS_DIR, MODELS_DIR, REPO, identities } from '../test/support/shared.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from './support.js';

const EVENT = 'crash';
const PEOPLE = ['facerec_obama', 'facerec_biden', 'faceapi_sheldon', 'faceapi_leonard'];
const BIG = 3;
/** Action shots, where the photo server has them, and who of PEOPLE is in each (testdata/README.md). */
const SHOTS: Record<string, { url: string; people: string[] }> = {
  'shot-obama-and-biden': { url: '/groups/facerec_obama_and_biden.jpg', people: ['facerec_obama', 'facerec_biden'] },
  'shot-two-people': { url: '/groups/facerec_two_people.jpg', people: ['facerec_obama', 'facerec_biden'] },
  'shot-bbt2': { url: '/groups/faceapi_bbt2.jpg', people: ['faceapi_leonard', 'faceapi_sheldon'] },
  'shot-bbt3': { url: '/groups/faceapi_bbt3.jpg', people: ['faceapi_leonard', 'faceapi_sheldon'] },
  // 24-megapixel camera-sized copies of a group photo: they widen the window the kill lands in.
  ...Object.fromEntries(
    Array.from({ length: BIG }, (_, i) => [`big-${i}`, { url: `/big${i}.jpg`, people: ['facerec_obama', 'facerec_biden'] }]),
  ),
};
const SHOT_IDS = Object.keys(SHOTS).sort();

interface Child {
  proc: ChildProcess;
  grpcPort: number;
  httpPort: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

const running = new Set<Child>();
let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
let server: Child;
let c: Client | undefined;
let rpc: ReturnType<typeof api>;

/** `facematch serve` in a child process; resolves once it printed its ports. */
async function startServer(): Promise<Child> {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'serve'], {
    cwd: REPO,
    env: {
      ...process.env,
      FACEMATCH_MODEL_PACK: 'test',
      FACEMATCH_MODELS_DIR: MODELS_DIR,
      FACEMATCH_DATA_DIR: dataDir,
      ...LOOPBACK_SERVICE,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stderr.setEncoding('utf8').on('data', (s: string) => {
    log = (log + s).slice(-16_000);
  });
  // 'exit' comes after the child was reaped: its pid is gone, so a lock naming it is stale.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const child: Child = { proc, grpcPort: 0, httpPort: 0, exited, stderr: () => log };
  running.add(child);
  void exited.then(() => running.delete(child));
  const lines = createInterface({ input: proc.stdout });
  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve printed no ports within 60 s; stderr:\n${log}`)), 60_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      const p = JSON.parse(line) as { grpcPort?: unknown; httpPort?: unknown };
      if (typeof p.grpcPort === 'number' && typeof p.httpPort === 'number') resolve({ grpcPort: p.grpcPort, httpPort: p.httpPort });
      else reject(new Error(`serve printed ${line}, not its ports`));
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited (${code ?? signal}) before it was ready; stderr:\n${log}`));
    });
  });
  child.grpcPort = ports.grpcPort;
  child.httpPort = ports.httpPort;
  return child;
}

async function connect(): Promise<void> {
  server = await startServer();
  c?.close();
  c = client(server.grpcPort);
  rpc = api(c);
}

const processShot = (photoId: string): Promise<ProcessPhotoResponse> =>
  rpc.processPhoto({ photoId, imageUrl: `${photos.base}${SHOTS[photoId]!.url}`, eventId: EVENT, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' });

/** For every user of PEOPLE, the photo ids ListUserPhotos gives, in its order (repeats kept). */
async function lists(): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const userId of PEOPLE) out[userId] = (await rpc.listUserPhotos({ userId, eventId: EVENT })).photos.map((p) => p.photoId);
  return out;
}

/** Photo id -> the users whose lists name it, sorted. */
function usersByPhoto(l: Record<string, string[]>): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const [userId, ids] of Object.entries(l)) for (const id of ids) m.set(id, [...(m.get(id) ?? []), userId].sort());
  return m;
}

const expectedLists = (): Record<string, string[]> =>
  Object.fromEntries(PEOPLE.map((u) => [u, SHOT_IDS.filter((id) => SHOTS[id]!.people.includes(u))]));
const sorted = (l: Record<string, string[]>): Record<string, string[]> =>
  Object.fromEntries(Object.entries(l).map(([u, ids]) => [u, [...ids].sort()]));

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-crash-'));
  const big = await Promise.all(
    Array.from({ length: BIG }, (_, i) =>
      sharp(path.join(GROUPS_DIR, 'facerec_obama_and_biden.jpg'))
        .resize(6000, 4000)
        .modulate({ brightness: 1 + i * 0.02 })
        .jpeg({ quality: 92 })
        .toBuffer(),
    ),
  );
  photos = await photoServer(Object.fromEntries(big.map((b, i) => [`/big${i}.jpg`, b])));
  await connect();
});

afterAll(async () => {
  c?.close();
  for (const child of running) child.proc.kill('SIGKILL');
  await Promise.all([...running].map((child) => child.exited));
  await photos?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('a service killed mid-request', () => {
  /** Photo ids whose ProcessPhoto answered before the kill: the service said they were done. */
  const completed = new Set<string>();
  const unfinished: string[] = [];

  it('enrols four people, then is SIGKILLed while action shots are in flight', async () => {
    for (const userId of PEOPLE) {
      const file = identities().find((p) => p.id === userId)!.files[0]!;
      const res = await rpc.processPhoto({
        photoId: `selfie-${userId}`,
        imageUrl: `${photos.base}/${path.relative(path.join(GROUPS_DIR, '..'), file).split(path.sep).join('/')}`,
        eventId: EVENT,
        kind: PhotoKind.PHOTO_KIND_FACECAM,
        userId,
      });
      expect(res.faces).toHaveLength(1);
    }

    const victim = server;
    let killedAfter: string | undefined;
    const calls = SHOT_IDS.map((id) =>
      processShot(id).then((res) => {
        // The first answer pulls the trigger, while the others are still being worked on.
        if (killedAfter === undefined) {
          killedAfter = id;
          victim.proc.kill('SIGKILL');
        }
        return res;
      }),
    );
    // Should every call fail before any answer (a broken setup), the kill still has to happen.
    const settled = await Promise.allSettled(calls);
    if (killedAfter === undefined) victim.proc.kill('SIGKILL');
    const exit = await victim.exited;
    expect(exit.signal, victim.stderr()).toBe('SIGKILL');

    settled.forEach((s, i) => {
      const id = SHOT_IDS[i]!;
      if (s.status === 'fulfilled') completed.add(id);
      else {
        unfinished.push(id);
        expect((s.reason as ServiceError).code, String(s.reason)).toBe(status.UNAVAILABLE);
      }
    });
    console.info(`killed after ${killedAfter ?? 'no answer'}; completed: ${[...completed].join(', ') || '-'}; in flight: ${unfinished.join(', ')}`);
    expect(killedAfter, victim.stderr()).toBeDefined();
    expect(unfinished.length).toBeGreaterThan(0);
  });

  it('restarts on the same data directory, taking over the dead process lock, and is ready', async () => {
    expect(existsSync(path.join(dataDir, 'db', 'facematch.lock'))).toBe(true);
    await connect();
    const ready = await fetch(`http://127.0.0.1:${server.httpPort}/readyz`);
    const body = (await ready.json()) as { checks: Record<string, string> };
    expect(ready.status, JSON.stringify(body)).toBe(200);
    expect(body.checks).toMatchObject({ vectors: 'ok', objects: 'ok', matches: 'ok' });
  });

  it('shows every answered photo whole, and an unanswered one either whole or not at all', async () => {
    const l = await lists();
    for (const [userId, ids] of Object.entries(l)) expect(ids, `${userId} lists a photo twice`).toEqual([...new Set(ids)]);
    const by = usersByPhoto(l);
    for (const id of by.keys()) expect([...SHOT_IDS, ...PEOPLE.map((u) => `selfie-${u}`)]).toContain(id);
    for (const id of completed) expect(by.get(id), `answered ${id} before the kill`).toEqual([...SHOTS[id]!.people].sort());
    for (const id of unfinished) expect([undefined, [...SHOTS[id]!.people].sort()], `in flight ${id}`).toContainEqual(by.get(id));
  });

  it('completes every ProcessPhoto that was in flight when retried', async () => {
    const results = await Promise.allSettled(unfinished.map((id) => processShot(id)));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${unfinished[i]}: ${String(r.reason)}`] : []));
    expect(failed).toEqual([]);
    for (const r of results) {
      if (r.status !== 'fulfilled') continue;
      const people = r.value.faces.flatMap((f) => f.matches.map((m) => m.userId));
      expect(people).toEqual(expect.arrayContaining(SHOTS[r.value.photoId]!.people));
    }
    expect(sorted(await lists())).toEqual(expectedLists());
  });

  it('reprocessing every photo again changes nothing: same lists, no duplicates', async () => {
    const before = await rpc.listUserPhotos({ userId: 'facerec_obama', eventId: EVENT });
    for (const id of SHOT_IDS) await processShot(id);
    expect(sorted(await lists())).toEqual(expectedLists());
    const after = await rpc.listUserPhotos({ userId: 'facerec_obama', eventId: EVENT });
    expect(after.photos.map((p) => p.photoId).sort()).toEqual(before.photos.map((p) => p.photoId).sort());
    for (const p of after.photos) {
      expect(p.similarity).toBeCloseTo(before.photos.find((b) => b.photoId === p.photoId)!.similarity, 4);
    }
  });

  it('stops gracefully on SIGTERM: exit status 0, directory unlocked', async () => {
    c?.close();
    c = undefined;
    server.proc.kill('SIGTERM');
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 20_000).unref());
    const exit = await Promise.race([server.exited, timeout]);
    expect(exit, server.stderr()).toEqual({ code: 0, signal: null });
    expect(existsSync(path.join(dataDir, 'db', 'facematch.lock'))).toBe(false);
  });
});
