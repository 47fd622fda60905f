/**
 * The CLI against the real servers, run as an operator runs it: one child process per command, with
 * the environment `scripts/test-env env` prints (Milvus, S3, PostgreSQL) and nothing else of ours.
 * enroll, process, photos, forget, delete: the right photos are listed, and after forget nothing of
 * the user is left in Milvus, in the bucket or in PostgreSQL.
 *
 * Needs all three servers (npm run test:integration sets their lines when they answer); skipped
 * otherwise. Works under ids of its own (a run id), in the default collections, bucket and database,
 * and deletes what it made.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStores, type OpenStores } from '../../src/adapters/stores.js';
import { parseConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { inspectStorage, type StorageInspector } from '../support/inspect.js';
import { group, identities, MODELS_DIR, REPO } from '../support/shared.js';
import { testEnvLines } from './test-env.js';

const REAL = Boolean(process.env.FACEMATCH_MILVUS_ADDRESS && process.env.FACEMATCH_POSTGRES_URL && process.env.FACEMATCH_S3_ENDPOINT);
if (!REAL) console.warn('cli.test.ts skipped: needs Milvus, S3 and PostgreSQL (scripts/test-env up; npm run test:integration)');

const RUN = `cli${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const EVENT = `${RUN}-event`;
const OBAMA = `${RUN}-obama`;
const PHOTOS = { both: `${RUN}-obama-biden`, two: `${RUN}-two-people`, other: `${RUN}-kit-rose` };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

interface Processed {
  photoId: string;
  eventId: string;
  faces: { faceId: string; matches: { userId?: string }[] }[];
  annotated: { bucket: string; key: string; url: string };
}

let dir: string;
/** The child's environment: the process's, without any FACEMATCH_* of ours, plus test-env's lines. */
let env: NodeJS.ProcessEnv;
let stores: OpenStores;
/** What still names a user, read from Milvus and PostgreSQL directly (test/support/inspect.ts). */
let storage: StorageInspector | undefined;

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), ...args],
      { cwd: REPO, env, maxBuffer: 16 * 1024 * 1024, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function json<T>(run: Run): T {
  expect(run.code, run.stderr).toBe(0);
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as T;
}

function photoIds(run: Run): string[] {
  expect(run.code, run.stderr).toBe(0);
  return run.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { photoId: string }).photoId)
    .sort();
}

const usersIn = (r: Processed): (string | undefined)[] => r.faces.flatMap((f) => f.matches.map((m) => m.userId));
const firstPhoto = (id: string): string => identities().find((p) => p.id === id)!.files[0]!;

beforeAll(async () => {
  if (!REAL) return;
  dir = await mkdtemp(path.join(tmpdir(), 'facematch-cli-it-'));
  const ours = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FACEMATCH_')));
  env = {
    ...ours,
    ...(await testEnvLines('milvus', 's3', 'postgres')),
    FACEMATCH_MODEL_PACK: 'test',
    FACEMATCH_MODELS_DIR: MODELS_DIR,
    // Unused with three real stores; a temp folder so that nothing lands in the checkout.
    FACEMATCH_DATA_DIR: path.join(dir, 'data'),
    FACEMATCH_LOG_LEVEL: 'warn',
  };
  // The test's own view of the three stores, to check what the CLI left in them.
  const config = parseConfig(env);
  stores = await openStores(config, createLogger('silent'));
  await stores.vectors.init(512);
  storage = inspectStorage(config);
}, 180_000);

afterAll(async () => {
  if (!REAL) return;
  await stores?.close();
  await storage?.close();
  await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!REAL)('the CLI on Milvus + S3 + PostgreSQL (the lines of scripts/test-env env)', () => {
  let selfie: Processed;

  it('enroll stores the selfie: its vector in Milvus, its annotated copy in S3, its row in PostgreSQL', async () => {
    selfie = json<Processed>(await cli('enroll', '--user', OBAMA, '--event', EVENT, firstPhoto('facerec_obama')));
    expect(selfie.faces).toHaveLength(1);
    expect(selfie.annotated.key).toBe(`annotated/${EVENT}/${selfie.photoId}.jpg`);
    // The presigned URL serves the JPEG.
    const res = await fetch(selfie.annotated.url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
    expect(await storage!.vectorsOfUser(OBAMA)).toBe(1);
    expect(await stores.objects.exists(selfie.annotated.key)).toBe(true);
    expect(await storage!.rowsNamingUser(OBAMA)).toBeGreaterThan(0);
  });

  it('process matches the enrolled user in the photos that show him, and only there', async () => {
    expect(usersIn(json<Processed>(await cli('process', '--photo', PHOTOS.both, '--event', EVENT, group('facerec_obama_and_biden.jpg'))))).toEqual([OBAMA]);
    expect(usersIn(json<Processed>(await cli('process', '--photo', PHOTOS.two, '--event', EVENT, group('facerec_two_people.jpg'))))).toEqual([OBAMA]);
    const other = json<Processed>(await cli('process', '--photo', PHOTOS.other, '--event', EVENT, group('facerec_kit_with_rose.jpg')));
    expect(other.faces.length).toBeGreaterThanOrEqual(2);
    expect(usersIn(other)).toEqual([]);
  });

  it('photos lists exactly his two photos, in the event and across events', async () => {
    expect(photoIds(await cli('photos', '--user', OBAMA, '--event', EVENT))).toEqual([PHOTOS.both, PHOTOS.two].sort());
    expect(photoIds(await cli('photos', '--user', OBAMA))).toEqual([PHOTOS.both, PHOTOS.two].sort());
  });

  it('forget leaves nothing of him in Milvus, S3 or PostgreSQL, and photos prints nothing', async () => {
    const forgot = json<{ userId: string; deletedSamples: number; deletedMatches: number }>(await cli('forget', '--user', OBAMA));
    expect(forgot).toMatchObject({ userId: OBAMA, deletedSamples: 1, deletedMatches: 2 });
    expect(await storage!.vectorsOfUser(OBAMA)).toBe(0);
    expect(await stores.objects.exists(selfie.annotated.key)).toBe(false);
    expect((await fetch(selfie.annotated.url)).status).toBe(404);
    expect(await storage!.rowsNamingUser(OBAMA)).toBe(0);
    const run = await cli('photos', '--user', OBAMA);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('');
    // The action shots themselves stay: forgetting a user removes only what is theirs.
    expect((await stores.matches.getPhoto(PHOTOS.both))?.faces.length).toBeGreaterThanOrEqual(2);
  });

  it('delete removes the action shots: rows and annotated copies', async () => {
    for (const photoId of Object.values(PHOTOS)) {
      const key = (await stores.matches.getPhoto(photoId))?.photo.annotatedKey;
      expect(key).toBeDefined();
      expect(json(await cli('delete', '--photo', photoId))).toEqual({ photoId, deleted: true });
      expect(await stores.matches.getPhoto(photoId)).toBeUndefined();
      expect(await stores.objects.exists(key!)).toBe(false);
    }
  });
});
