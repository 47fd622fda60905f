/**
 * The running service (src/bin/serve.ts, gRPC + HTTP, as e2e/support.ts starts it) on Milvus + S3 +
 * PostgreSQL, while each server in turn is stopped and started again (scripts/test-env down/up NAME):
 *
 *   - ProcessPhoto fails fast (under FAIL_FAST_MS) with gRPC UNAVAILABLE, the BACKEND_UNAVAILABLE
 *     error code and a message naming the stopped backend;
 *   - GET /readyz answers 503 with that store's check naming the backend, the others ok;
 *   - once the server is back, /readyz answers 200 again (within RECOVERY_MS) and the same service
 *     instance processes the photo it failed, without a restart;
 *   - no photo is half there: a failed request leaves no record (the match store's transaction is
 *     the commit point), every recorded photo has its faces and only matches of those faces, and a
 *     user's photos list each retried photo once.
 *
 * Needs the three servers of scripts/test-env (npm run test:integration sets their lines when they
 * answer); stops only servers that scripts/test-env runs. Works under ids of its own, in the default
 * collections, bucket and database, and removes what it made.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Serving } from '../../src/bin/serve.js';
import { PhotoKind, type ProcessPhotoResponse } from '../../src/gen/facematch/v1/facematch.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from '../../e2e/support.js';
import { identities, testConfig } from '../support/shared.js';
import { testEnv, testEnvLines, timed, type TestEnvModule } from './test-env.js';

const MILVUS = process.env.FACEMATCH_MILVUS_ADDRESS;
const POSTGRES = process.env.FACEMATCH_POSTGRES_URL;
const S3 = process.env.FACEMATCH_S3_ENDPOINT;
const REAL = Boolean(MILVUS && POSTGRES && S3);
if (!REAL) console.warn('service-faults.test.ts skipped: needs Milvus, S3 and PostgreSQL (scripts/test-env up; npm run test:integration)');

/** A request to a stopped backend must fail within this (Milvus's and PostgreSQL's call deadlines are 5 s). */
const FAIL_FAST_MS = 3_000;
/** After `scripts/test-env up NAME` returns, /readyz must be 200 again within this. */
const RECOVERY_MS = 120_000;

interface Backend {
  module: TestEnvModule;
  /** The /readyz check of its store. */
  check: 'vectors' | 'objects' | 'matches';
  /** What the messages must name. */
  name: RegExp;
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const BACKENDS: Backend[] = REAL
  ? [
      { module: 'postgres', check: 'matches', name: new RegExp(`PostgreSQL at ${escape(new URL(POSTGRES!).host)}`) },
      { module: 's3', check: 'objects', name: new RegExp(`S3 at ${escape(new URL(S3!).origin)}`) },
      // Last: the end-to-end test that runs next (vitest.integration.config.ts) then starts on a Milvus just restarted.
      { module: 'milvus', check: 'vectors', name: new RegExp(`Milvus at ${escape(MILVUS!)}`) },
    ]
  : [];

const RUN = `sf${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const EVENT = `${RUN}-event`;
const OBAMA = `${RUN}-obama`;

let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
let serving: Serving;
let c: Client;
let rpc: ReturnType<typeof api>;
/** Whether scripts/test-env runs the servers this file was pointed at (only those may be stopped). */
let ours = false;
/** Every photo id this file asked the service to process, with its event. */
const attempted = new Map<string, string>();
/** Those the service said it processed. */
const succeeded = new Set<string>();
const figures: string[] = [];

const rel = (abs: string): string => abs.split(`${path.sep}testdata${path.sep}`)[1]!;
const firstPhoto = (id: string): string => rel(identities().find((p) => p.id === id)!.files[0]!);

async function processPhoto(photoId: string, file: string, kind: PhotoKind, userId = '', eventId = EVENT): Promise<ProcessPhotoResponse> {
  attempted.set(photoId, eventId);
  const res = await rpc.processPhoto({ photoId, imageUrl: `${photos.base}/${file}`, eventId, kind, userId });
  succeeded.add(photoId);
  return res;
}

async function readyz(): Promise<{ status: number; checks: Record<string, string> }> {
  const res = await fetch(`http://127.0.0.1:${serving.httpPort}/readyz`);
  return { status: res.status, checks: ((await res.json()) as { checks: Record<string, string> }).checks };
}

const usersIn = (r: ProcessPhotoResponse): string[] => r.faces.flatMap((f) => f.matches.map((m) => m.userId));

beforeAll(async () => {
  if (!REAL) return;
  const lines = await testEnvLines('milvus', 's3', 'postgres');
  ours = lines.FACEMATCH_MILVUS_ADDRESS === MILVUS && lines.FACEMATCH_POSTGRES_URL === POSTGRES && lines.FACEMATCH_S3_ENDPOINT === S3;
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-service-faults-'));
  photos = await photoServer();
  const config = testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE });
  expect(config.stores).toMatchObject({ vectorStore: 'milvus', objectStore: 's3', matchStore: 'postgres' });
  serving = await serve(config, createLogger('fatal'));
  c = client(serving.grpcPort);
  rpc = api(c);
}, 300_000);

afterAll(async () => {
  if (!REAL) return;
  try {
    // Whatever happened, every server runs again for what comes next.
    if (ours) for (const b of BACKENDS) await testEnv('up', b.module);
    if (rpc) {
      for (const userId of [OBAMA, `${RUN}-biden`]) await rpc.forgetUser({ userId }).catch(() => undefined);
      for (const photoId of attempted.keys()) await rpc.deletePhoto({ photoId }).catch(() => undefined);
    }
  } finally {
    c?.close();
    await serving?.stop();
    await photos?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    if (figures.length > 0) console.info(`service fault figures:\n${figures.join('\n')}`);
  }
}, 600_000);

describe.skipIf(!REAL)('the service while its backends stop and come back', () => {
  it('is ready, enrols a user and finds him in an action shot', async () => {
    expect(await readyz()).toEqual({ status: 200, checks: expect.objectContaining({ vectors: 'ok', objects: 'ok', matches: 'ok' }) as unknown });
    const selfie = await processPhoto(`${RUN}-selfie`, firstPhoto('facerec_obama'), PhotoKind.PHOTO_KIND_FACECAM, OBAMA);
    expect(selfie.faces).toHaveLength(1);
    const shot = await processPhoto(`${RUN}-before`, 'groups/facerec_obama_and_biden.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT);
    expect(usersIn(shot)).toEqual([OBAMA]);
  });

  describe('an enrolment that failed', () => {
    // In an event of its own, so that the photos of the other tests are not affected.
    const event = `${RUN}-enrolment-event`;
    const biden = `${RUN}-biden`;
    let shot: ProcessPhotoResponse | undefined;

    it('(S3 stopped while it was written) is reported UNAVAILABLE, and the user has no enrolment', async (ctx) => {
      if (!ours) ctx.skip('the servers are not the ones scripts/test-env runs: not stopping them');
      await testEnv('down', 's3');
      try {
        const failed = await timed(processPhoto(`${RUN}-selfie-biden`, firstPhoto('facerec_biden'), PhotoKind.PHOTO_KIND_FACECAM, biden, event));
        expect((failed.error as ServiceError | undefined)?.code).toBe(status.UNAVAILABLE);
        expect((failed.error as ServiceError).details).toMatch(/S3 at /);
      } finally {
        await testEnv('up', 's3');
      }
      await expect.poll(async () => (await readyz()).status, { timeout: RECOVERY_MS, interval: 250 }).toBe(200);
      // The caller was told the enrolment failed and does not retry it: Biden is not enrolled.
      expect(await serving.app.stores.matches.samplesOfUser(biden)).toEqual([]);
      shot = await processPhoto(`${RUN}-after-failed-enrolment`, 'groups/facerec_two_people.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT, '', event);
    }, 600_000);

    // The selfie's vector was upserted before the annotated image failed to upload: the service
    // takes it back (compensation), or action shots would match a user who is not enrolled.
    it('does not make its user findable in later action shots', async () => {
      expect(shot, 'the setup above did not run').toBeDefined();
      expect(usersIn(shot!)).toEqual([]);
      expect((await rpc.listUserPhotos({ userId: biden, eventId: '' })).photos).toEqual([]);
    });
  });

  for (const backend of BACKENDS) {
    it(`${backend.module} stopped: fails fast naming it, /readyz 503; back: /readyz 200 and the same instance processes the photo`, async (ctx) => {
      if (!ours) ctx.skip('the servers are not the ones scripts/test-env runs: not stopping them');
      const photoId = `${RUN}-during-${backend.module}`;
      await testEnv('down', backend.module);
      try {
        const failed = await timed(processPhoto(photoId, 'groups/facerec_two_people.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT));
        const error = failed.error as ServiceError | undefined;
        expect(error, 'ProcessPhoto succeeded with the backend stopped').toBeDefined();
        expect(error!.code).toBe(status.UNAVAILABLE);
        expect(error!.metadata).toBeInstanceOf(Metadata);
        expect(error!.metadata.get('facematch-error-code')).toEqual(['BACKEND_UNAVAILABLE']);
        expect(error!.details).toMatch(backend.name);
        expect(failed.ms, `ProcessPhoto took ${Math.round(failed.ms)} ms to fail`).toBeLessThan(FAIL_FAST_MS);

        const ready = await timed(readyz());
        expect(ready.value?.status).toBe(503);
        expect(ready.value?.checks[backend.check]).toMatch(backend.name);
        for (const other of ['vectors', 'objects', 'matches'].filter((k) => k !== backend.check)) expect(ready.value?.checks[other]).toBe('ok');
        figures.push(
          `${backend.module} down: ProcessPhoto failed in ${Math.round(failed.ms)} ms (${error!.details}); /readyz 503 in ${Math.round(ready.ms)} ms (${backend.check}: ${ready.value?.checks[backend.check]})`,
        );
      } finally {
        await testEnv('up', backend.module);
      }

      const back = performance.now();
      let last: Awaited<ReturnType<typeof readyz>> | undefined;
      const meanwhile = new Set<string>();
      while (performance.now() - back < RECOVERY_MS) {
        last = await readyz().catch(() => undefined);
        if (last?.status === 200) break;
        meanwhile.add(String(last?.checks[backend.check]).replace(/\d+ ms/g, 'N ms'));
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const recovered = performance.now() - back;
      expect(last, `/readyz not 200 ${RECOVERY_MS} ms after test-env up ${backend.module}: ${JSON.stringify(last?.checks)}`).toMatchObject({ status: 200 });

      // The failed request left nothing behind: no record, not listed.
      expect(await serving.app.stores.matches.getPhoto(photoId)).toBeUndefined();
      expect((await rpc.listUserPhotos({ userId: OBAMA, eventId: EVENT })).photos.map((p) => p.photoId)).not.toContain(photoId);

      // The same instance, no restart: the retry goes through.
      const retried = await timed(processPhoto(photoId, 'groups/facerec_two_people.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT));
      expect(retried.error).toBeUndefined();
      expect(usersIn(retried.value!)).toEqual([OBAMA]);
      figures.push(
        `${backend.module} up: /readyz 200 ${Math.round(recovered)} ms after test-env up returned (meanwhile: ${[...meanwhile].join(' | ') || 'always 200'}); the retry took ${Math.round(retried.ms)} ms`,
      );
    }, 600_000);
  }

  it('no photo is left half there: each has its faces and only matches of those faces, and is listed once', async () => {
    const ours = [...attempted].filter(([, event]) => event === EVENT).map(([photoId]) => photoId);
    for (const photoId of ours) {
      const stored = await serving.app.stores.matches.getPhoto(photoId);
      expect(stored, `${photoId} was processed but has no record`).toBeDefined();
      expect(succeeded.has(photoId), `${photoId} has a record, but its last ProcessPhoto failed`).toBe(true);
      expect(stored!.faces.length, `${photoId} has no faces`).toBeGreaterThan(0);
      const faceIds = new Set(stored!.faces.map((f) => f.faceId));
      for (const m of stored!.matches) expect(faceIds.has(m.faceId), `${photoId}: match of an unknown face ${m.faceId}`).toBe(true);
      if (stored!.photo.kind === 'ACTION_SHOT') expect(stored!.matches.map((m) => m.userId), `${photoId} lost its match`).toEqual([OBAMA]);
    }
    const shots = ours.filter((id) => !id.startsWith(`${RUN}-selfie`)).sort();
    expect(shots.length).toBeGreaterThan(1);
    const listed = (await rpc.listUserPhotos({ userId: OBAMA, eventId: EVENT })).photos.map((p) => p.photoId).sort();
    expect(listed).toEqual(shots);
  });
});
