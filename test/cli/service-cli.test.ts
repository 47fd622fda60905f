/**
 * The CLI contract of the service commands (enroll, process, photos, delete, forget), run as a user
 * runs them: one child process per command on a temp FACEMATCH_DATA_DIR, JSON on stdout, JSON
 * errors on stderr. Each run starts inference workers and opens the embedded database, so the
 * steps build on each other instead of each starting from nothing.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODELS_DIR, REPO, group, identities } from '../support/shared.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

let dir: string;
let dataDir: string;

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), ...args],
      {
        cwd: REPO,
        env: { ...process.env, FACEMATCH_MODEL_PACK: 'test', FACEMATCH_MODELS_DIR: MODELS_DIR, FACEMATCH_DATA_DIR: dataDir },
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

interface Match {
  userId?: string;
  photoId: string;
  faceId: string;
  similarity: number;
}

interface Processed {
  photoId: string;
  eventId: string;
  kind: string;
  faces: { faceId: string; score: number; box: Record<string, number>; landmarks: number[][]; matches: Match[] }[];
  matches: Match[];
  annotated: { bucket: string; key: string; url: string };
}

/** The one JSON document a successful command prints. */
function json<T>(run: Run): T {
  expect(run.code, run.stderr).toBe(0);
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as T;
}

/** `photos` output: one JSON object per line, nothing at all when the user has no photo. */
function photoLines(run: Run): { photoId: string; eventId: string; similarity: number }[] {
  expect(run.code, run.stderr).toBe(0);
  return run.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { photoId: string; eventId: string; similarity: number });
}

/** The JSON error a failed command ends stderr with. */
const errorOf = (run: Run): { code: string; message: string } =>
  JSON.parse(run.stderr.trim().split('\n').at(-1)!) as { code: string; message: string };

const firstPhoto = (id: string): string => identities().find((p) => p.id === id)!.files[0]!;
const usersIn = (r: Processed): (string | undefined)[] => r.faces.flatMap((f) => f.matches.map((m) => m.userId));

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'facematch-service-cli-'));
  dataDir = path.join(dir, 'data');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('facematch enroll / process / photos / delete / forget', () => {
  const U = 'facerec_obama';
  const E = 'cli-event';
  let selfie: Processed;
  let listed: string;

  it('enroll prints the selfie with its one face', async () => {
    selfie = json<Processed>(await cli('enroll', '--user', U, '--event', E, firstPhoto(U)));
    expect(selfie).toMatchObject({ eventId: E, kind: 'FACECAM', matches: [] });
    expect(selfie.faces).toHaveLength(1);
    expect(selfie.faces[0]!.score).toBeGreaterThan(0.5);
    expect(selfie.faces[0]!.landmarks).toHaveLength(5);
    expect(existsSync(fileURLToPath(selfie.annotated.url))).toBe(true);
  });

  it('process prints the action shot with the enrolled user among its faces matches', async () => {
    const a = json<Processed>(await cli('process', '--photo', 'p-obama-biden', '--event', E, group('facerec_obama_and_biden.jpg')));
    expect(a).toMatchObject({ photoId: 'p-obama-biden', eventId: E, kind: 'ACTION_SHOT' });
    expect(a.faces.length).toBeGreaterThanOrEqual(2);
    expect(usersIn(a)).toEqual([U]);
    const b = json<Processed>(await cli('process', '--photo', 'p-two-people', '--event', E, group('facerec_two_people.jpg')));
    expect(usersIn(b)).toEqual([U]);
  });

  it('photos prints one JSON line per photo of the user, each photo once', async () => {
    const run = await cli('photos', '--user', U, '--event', E);
    const lines = photoLines(run);
    expect(lines.map((l) => l.photoId).sort()).toEqual(['p-obama-biden', 'p-two-people']);
    for (const l of lines) {
      expect(l.eventId).toBe(E);
      expect(l.similarity).toBeGreaterThan(0.43);
      expect(l.similarity).toBeLessThanOrEqual(1);
    }
    listed = run.stdout;
  });

  it('processing a photo again does not duplicate it in photos', async () => {
    const again = json<Processed>(await cli('process', '--photo', 'p-obama-biden', '--event', E, group('facerec_obama_and_biden.jpg')));
    expect(usersIn(again)).toEqual([U]);
    expect((await cli('photos', '--user', U, '--event', E)).stdout).toBe(listed);
  });

  it('delete removes a photo and its annotated image, and says so', async () => {
    const annotated = path.join(dataDir, 'objects', 'annotated', E, 'p-two-people.jpg');
    expect(existsSync(annotated)).toBe(true);
    expect(json(await cli('delete', '--photo', 'p-two-people'))).toEqual({ photoId: 'p-two-people', deleted: true });
    expect(existsSync(annotated)).toBe(false);
  });

  it('forget erases the user: photos then prints nothing', async () => {
    const forgot = json<{ userId: string; deletedSamples: number; deletedMatches: number }>(await cli('forget', '--user', U));
    expect(forgot).toMatchObject({ userId: U, deletedSamples: 1, deletedMatches: 1 });
    expect(existsSync(fileURLToPath(selfie.annotated.url))).toBe(false);
    const run = await cli('photos', '--user', U, '--event', E);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('');
  });

  it('the event is "default" when --event is left out, for enrolment and matching alike', async () => {
    const V = 'facerec_biden';
    const enrolled = json<Processed>(await cli('enroll', '--user', V, firstPhoto(V)));
    expect(enrolled.eventId).toBe('default');
    const shot = json<Processed>(await cli('process', '--photo', 'p-default', group('facerec_two_people.jpg')));
    expect(shot.eventId).toBe('default');
    // Matched within the default event only: obama was enrolled in another one (and forgotten).
    expect(usersIn(shot)).toEqual([V]);
  });
});

describe('service command errors', () => {
  it('enroll without --user is a usage error: exit 2, INVALID_ARGUMENT on stderr, nothing on stdout', async () => {
    const run = await cli('enroll', firstPhoto('facerec_obama'));
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(errorOf(run)).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(errorOf(run).message).toContain('--user');
  });

  it('a selfie without a face: exit 1, NO_FACE, nothing enrolled', async () => {
    const blank = path.join(dir, 'blank.png');
    await sharp({ create: { width: 320, height: 240, channels: 3, background: '#6080a0' } }).png().toFile(blank);
    const run = await cli('enroll', '--user', 'nobody', '--photo', 'selfie-nobody', blank);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(errorOf(run)).toMatchObject({ code: 'NO_FACE' });
    expect(existsSync(path.join(dataDir, 'objects', 'annotated', 'default', 'selfie-nobody.jpg'))).toBe(false);
  });
});
