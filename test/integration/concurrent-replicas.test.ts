/**
 * Two real service processes (`facematch serve`, as the image runs it) on the same PostgreSQL,
 * Milvus and S3, hammered with the same ids at the same time, as Envoy's retries and hedges do:
 *
 *   - ProcessPhoto of one photo id on both replicas at once, with the same image or another one:
 *     after every round the photo's recorded faces are exactly its vectors, once each (Milvus does
 *     not enforce unique primary keys), its matches point only at those faces, and the call that
 *     finished last is the one recorded;
 *   - ForgetUser on one replica racing an enrolment (or re-enrolment) of the same user on the other:
 *     once both returned, the user is fully enrolled or nothing of them is left.
 *
 * The checks (test/support/consistency.ts) read the stores through the ports, and what still names
 * a user from PostgreSQL and Milvus directly (test/support/inspect.ts). Needs the three
 * servers of scripts/test-env; stops none of them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStores, type OpenStores } from '../../src/adapters/stores.js';
import { PhotoKind, type ProcessPhotoResponse } from '../../src/gen/facematch/v1/facematch.js';
import { annotatedKey } from '../../src/services/matching.service.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from '../../e2e/support.js';
import { photoProblems, userProblems } from '../support/consistency.js';
import { inspectStorage, type StorageInspector } from '../support/inspect.js';
import { seededRandom } from '../support/seeded-random.js';
import { identities, MODELS_DIR, REPO, sharedAnalyzer, testConfig } from '../support/shared.js';

const REAL = Boolean(process.env.FACEMATCH_MILVUS_ADDRESS && process.env.FACEMATCH_POSTGRES_URL && process.env.FACEMATCH_S3_ENDPOINT);
if (!REAL) console.warn('concurrent-replicas.test.ts skipped: needs Milvus, S3 and PostgreSQL (scripts/test-env up; npm run test:integration)');

const ROUNDS = 8;
const RUN = `cr${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const EVENT = `${RUN}-event`;

interface Replica {
  child: ChildProcess;
  c: Client;
  rpc: ReturnType<typeof api>;
  dataDir: string;
}

/**
 * A pass-through to the S3 server that holds the annotated uploads of the duplicate-photo rounds
 * for UPLOAD_DELAY_MS: the replica that talks to S3 through it is then still inside its write phase
 * (its vectors written, its record not yet) when the other replica's call for the same photo
 * arrives, the interleaving a slow network makes. The Host header is passed on unchanged, so the
 * request's SigV4 signature still holds.
 */
const UPLOAD_DELAY_MS = 800;
async function slowUploads(target: URL): Promise<{ endpoint: string; held: () => number; close: () => Promise<void> }> {
  let held = 0;
  const server = createServer((req, res) => {
    const hold = req.method === 'PUT' && /\/annotated\/[^?]*-(dup|retry)-\d+\.jpg/.test(req.url ?? '');
    if (hold) held++;
    setTimeout(
      () => {
        const upstream = httpRequest(
          { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        upstream.on('error', (error) => res.destroy(error));
        req.pipe(upstream);
      },
      hold ? UPLOAD_DELAY_MS : 0,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held: () => held,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Starts `facematch serve` as a child process; resolves once it printed its ports. */
async function startReplica(extra: NodeJS.ProcessEnv = {}): Promise<Replica> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-replica-'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...LOOPBACK_SERVICE,
    FACEMATCH_MODEL_PACK: 'test',
    FACEMATCH_MODELS_DIR: MODELS_DIR,
    FACEMATCH_DATA_DIR: dataDir,
    FACEMATCH_INFERENCE_WORKERS: '1',
    FACEMATCH_LOG_LEVEL: 'warn',
    ...extra,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'serve'], {
    cwd: REPO,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ports = await new Promise<{ grpcPort: number }>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => resolve(JSON.parse(line) as { grpcPort: number }));
    child.once('exit', (code) => reject(new Error(`facematch serve exited with ${code} before it served`)));
  });
  const c = client(ports.grpcPort);
  return { child, c, rpc: api(c), dataDir };
}

async function stopReplica(r: Replica | undefined): Promise<void> {
  if (!r) return;
  r.c.close();
  if (r.child.exitCode === null) {
    const exited = new Promise((resolve) => r.child.once('exit', resolve));
    r.child.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    if (r.child.exitCode === null) r.child.kill('SIGKILL');
  }
  await rm(r.dataDir, { recursive: true, force: true });
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const rel = (abs: string): string => abs.split(`${path.sep}testdata${path.sep}`)[1]!;
const firstPhoto = (id: string): string => rel(identities().find((p) => p.id === id)!.files[0]!);

describe.runIf(REAL)('two replicas on PostgreSQL + Milvus + S3, the same ids at once', () => {
  let a: Replica | undefined;
  let b: Replica | undefined;
  let photos: Awaited<ReturnType<typeof photoServer>>;
  let proxy: Awaited<ReturnType<typeof slowUploads>> | undefined;
  let stores: OpenStores;
  let storage: StorageInspector | undefined;
  let dimension: number;
  const random = seededRandom(11);
  const url = (file: string): string => `${photos.base}/${file}`;

  beforeAll(async () => {
    photos = await photoServer();
    proxy = await slowUploads(new URL(process.env.FACEMATCH_S3_ENDPOINT!));
    // Replica a uploads through the slow pass-through; b straight to S3.
    [a, b] = await Promise.all([startReplica({ FACEMATCH_S3_ENDPOINT: proxy.endpoint }), startReplica()]);
    dimension = (await sharedAnalyzer()).embedder.dimension;
    const config = testConfig({ FACEMATCH_DATA_DIR: a.dataDir });
    stores = await openStores(config, createLogger('warn'));
    await stores.vectors.init(dimension);
    storage = inspectStorage(config);
    for (const user of ['facerec_obama', 'facerec_biden', 'facerec_kit_harington', 'facerec_rose_leslie']) {
      await a.rpc.processPhoto({ photoId: `${RUN}-selfie-${user}`, imageUrl: url(firstPhoto(user)), eventId: EVENT, kind: PhotoKind.PHOTO_KIND_FACECAM, userId: `${RUN}-${user}` });
    }
  }, 300_000);

  afterAll(async () => {
    // What this file made goes again (the servers are shared with the other files).
    if (a) {
      for (const user of ['facerec_obama', 'facerec_biden', 'facerec_kit_harington', 'facerec_rose_leslie']) {
        await a.rpc.forgetUser({ userId: `${RUN}-${user}` }).catch(() => undefined);
      }
      for (let round = 0; round < ROUNDS; round++) {
        for (const id of [`${RUN}-dup-${round}`, `${RUN}-retry-${round}`]) await a.rpc.deletePhoto({ photoId: id }).catch(() => undefined);
      }
    }
    await stores?.close();
    await storage?.close();
    await Promise.all([stopReplica(a), stopReplica(b)]);
    await proxy?.close();
    await photos?.close();
  }, 120_000);

  /** One call on each replica, the second `delay` ms later; the answers in the order they came. */
  async function race(
    x: () => Promise<ProcessPhotoResponse>,
    y: () => Promise<ProcessPhotoResponse>,
    delay: number,
  ): Promise<ProcessPhotoResponse[]> {
    const finished: ProcessPhotoResponse[] = [];
    await Promise.all([x().then((r) => finished.push(r)), pause(delay).then(y).then((r) => finished.push(r))]);
    return finished;
  }

  it('one photo id on both replicas at once, with the same image or another: consistent, the last call wins', async () => {
    const images = ['groups/facerec_obama_and_biden.jpg', 'groups/facerec_kit_with_rose.jpg', 'groups/insightface_t1.jpg'];
    const problems: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const same of [true, false]) {
        const photoId = `${RUN}-${same ? 'retry' : 'dup'}-${round}`;
        const x = images[round % images.length]!;
        const y = same ? x : images[(round + 1) % images.length]!;
        const finished = await race(
          () => a!.rpc.processPhoto({ photoId, imageUrl: url(x), eventId: EVENT, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' }),
          () => b!.rpc.processPhoto({ photoId, imageUrl: url(y), eventId: EVENT, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' }),
          Math.floor(random() * 100),
        );
        problems.push(...(await photoProblems(stores, EVENT, photoId, dimension)));
        const rec = await stores.matches.getPhoto(photoId);
        const last = finished.at(-1)!;
        if (rec && (rec.photo.width !== last.width || rec.faces.length !== last.faces.length)) {
          problems.push(`${photoId}: recorded ${rec.photo.width}px/${rec.faces.length} faces, the last answer was ${last.width}px/${last.faces.length} faces`);
        }
      }
    }
    console.info(
      `concurrent-replicas: ${ROUNDS * 2} rounds of duplicate ProcessPhoto on two replicas (${proxy!.held()} uploads of replica a held ${UPLOAD_DELAY_MS} ms), ${problems.length} inconsistencies`,
    );
    expect(proxy!.held()).toBeGreaterThanOrEqual(ROUNDS * 2);
    expect(problems).toEqual([]);
  });

  it('ForgetUser on one replica racing an enrolment of the same user on the other: all or nothing', async () => {
    const problems: string[] = [];
    const outcomes = { enrolled: 0, forgotten: 0 };
    for (let round = 0; round < ROUNDS * 2; round++) {
      const userId = `${RUN}-racer-${round}`;
      const photoId = `${RUN}-selfie-racer-${round}`;
      const enrol = (r: Replica) =>
        r.rpc.processPhoto({ photoId, imageUrl: url(firstPhoto('facerec_lin_manuel_miranda')), eventId: EVENT, kind: PhotoKind.PHOTO_KIND_FACECAM, userId });
      if (round % 2 === 1) await enrol(a!);
      const [x, y] = round % 4 < 2 ? [a!, b!] : [b!, a!];
      // Half the rounds forget at once (before the enrolment reaches its write phase, usually), half
      // later (while or after it writes): both orders happen, whatever the machine's speed.
      const delay = round % 8 < 4 ? random() * 150 : 400 + random() * 1100;
      const results = await Promise.allSettled([enrol(x), pause(Math.floor(delay)).then(() => y.rpc.forgetUser({ userId }))]);
      for (const r of results) if (r.status === 'rejected') problems.push(`${userId}: a call failed: ${String(r.reason)}`);
      const state = await userProblems(stores, storage!, userId, photoId, annotatedKey(EVENT, photoId));
      problems.push(...state.problems);
      outcomes[state.enrolled ? 'enrolled' : 'forgotten']++;
      await a!.rpc.forgetUser({ userId });
    }
    console.info(`concurrent-replicas: ${ROUNDS * 2} rounds of ForgetUser vs enrolment on two replicas: ${outcomes.enrolled} enrolled, ${outcomes.forgotten} forgotten, ${problems.length} inconsistencies`);
    expect(problems).toEqual([]);
    expect(outcomes.enrolled).toBeGreaterThan(0);
    expect(outcomes.forgotten).toBeGreaterThan(0);
  });
});
