/**
 * Concurrent duplicates on the embedded stores with the real models: two ProcessPhoto calls for the
 * same photo id at once (an Envoy retry or hedge: the same image, or another one), and a ForgetUser
 * racing an enrolment of the same user. After every round the stores must be consistent (the
 * checks of test/support/consistency.ts); the call that finished last is the one recorded.
 * test/integration/concurrent-replicas.test.ts runs the same races across two service processes on
 * PostgreSQL + Milvus + S3.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { trace } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStores, type OpenStores } from '../../src/adapters/stores.js';
import { annotate } from '../../src/inference/annotate.js';
import type { ImageSource } from '../../src/ports/image-source.js';
import type { ObjectStore } from '../../src/ports/object-store.js';
import { annotatedKey, MatchingService, type ProcessPhotoResult } from '../../src/services/matching.service.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { photoProblems, userProblems } from '../support/consistency.js';
import { inspectStorage, type StorageInspector } from '../support/inspect.js';
import { seededRandom } from '../support/seeded-random.js';
import { group, identities, read, sharedAnalyzer, testConfig } from '../support/shared.js';

const ROUNDS = 6;

describe('concurrent duplicates (embedded stores)', () => {
  let dir: string;
  let stores: OpenStores;
  /** What still names a user, read from the data directory's database (test/support/inspect.ts). */
  let storage: StorageInspector;
  let service: MatchingService;
  let dimension: number;
  /** Held uploads: the call whose annotated copy goes to this key waits in its write phase. */
  const gates = new Map<string, Promise<void>>();
  const files: ImageSource = { read: (ref) => read(ref) };
  const first = (id: string): string => identities().find((p) => p.id === id)!.files[0]!;
  const random = seededRandom(9);
  const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'facematch-duplicates-'));
    const config = testConfig({ FACEMATCH_DATA_DIR: dir });
    const model = await sharedAnalyzer();
    dimension = model.embedder.dimension;
    stores = await openStores(config, createLogger('warn'));
    await stores.vectors.init(dimension);
    storage = inspectStorage(config);
    const objects: ObjectStore = Object.assign(Object.create(stores.objects) as ObjectStore, {
      put: async (key: string, bytes: Uint8Array, type: string) => {
        await gates.get(key);
        return stores.objects.put(key, bytes, type);
      },
    });
    service = new MatchingService({
      model,
      images: files,
      vectors: stores.vectors,
      objects,
      matches: stores.matches,
      locks: stores.locks,
      annotate: (source, faces, size) => annotate(source, faces, { ...size, maxPixels: config.decode.maxPixels, maxSide: 1024 }),
      tracer: trace.getTracer('test'),
    });
    // Enrolled users, so that action shots have matches to get right.
    for (const user of ['facerec_obama', 'facerec_biden', 'facerec_kit_harington', 'facerec_rose_leslie']) {
      for (const event of ['same', 'other']) {
        await service.processPhoto({ photoId: `selfie-${user}-${event}`, imageUrl: first(user), kind: 'FACECAM', userId: user, eventId: event });
      }
    }
  });

  afterAll(async () => {
    await storage?.close();
    await stores?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs both calls, the second `delay` ms after the first; returns them in the order they finished. */
  async function race(a: () => Promise<ProcessPhotoResult>, b: () => Promise<ProcessPhotoResult>, delay: number): Promise<ProcessPhotoResult[]> {
    const finished: ProcessPhotoResult[] = [];
    await Promise.all([a().then((r) => finished.push(r)), pause(delay).then(b).then((r) => finished.push(r))]);
    return finished;
  }

  it('one photo id processed twice at once, with another image: the last call wins whole, vectors and records agree', async () => {
    const images = ['facerec_obama_and_biden.jpg', 'facerec_kit_with_rose.jpg', 'insightface_t1.jpg'];
    let checked = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const photoId = `dup-${round}`;
      const x = group(images[round % images.length]!);
      const y = group(images[(round + 1) % images.length]!);
      // Odd rounds hold the first call in its write phase (between its vectors and its record)
      // while the second runs: the interleaving that mixed one call's faces with the other's vectors.
      let open: (() => void) | undefined;
      if (round % 2 === 1) gates.set(annotatedKey('same', photoId), new Promise((resolve) => (open = resolve)));
      const releaser = open ? pause(400).then(() => {
        gates.delete(annotatedKey('same', photoId));
        open!();
      }) : Promise.resolve();
      const finished = await race(
        () => service.processPhoto({ photoId, imageUrl: x, kind: 'ACTION_SHOT', eventId: 'same' }),
        () => service.processPhoto({ photoId, imageUrl: y, kind: 'ACTION_SHOT', eventId: 'same' }),
        Math.floor(random() * 50),
      );
      await releaser;
      expect(await photoProblems(stores, 'same', photoId, dimension)).toEqual([]);
      const last = finished.at(-1)!;
      const rec = (await stores.matches.getPhoto(photoId))!;
      expect({ width: rec.photo.width, faces: rec.faces.length }).toEqual({ width: last.width, faces: last.faces.length });
      expect(rec.matches.map((m) => m.userId).sort()).toEqual(last.faces.flatMap((f) => f.matches.map((m) => m.userId!)).sort());
      checked++;
    }
    expect(checked).toBe(ROUNDS);
  });

  it('the same image twice at once (a retry racing its original): one set of vectors, no duplicate', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const photoId = `retry-${round}`;
      const x = group('facerec_obama_and_biden.jpg');
      const finished = await race(
        () => service.processPhoto({ photoId, imageUrl: x, kind: 'ACTION_SHOT', eventId: 'same' }),
        () => service.processPhoto({ photoId, imageUrl: x, kind: 'ACTION_SHOT', eventId: 'same' }),
        Math.floor(random() * 30),
      );
      expect(await photoProblems(stores, 'same', photoId, dimension)).toEqual([]);
      expect(finished.map((r) => r.faces.flatMap((f) => f.matches.map((m) => m.userId)).sort())).toEqual([
        ['facerec_biden', 'facerec_obama'],
        ['facerec_biden', 'facerec_obama'],
      ]);
    }
  });

  it('an action shot in flight while its user is forgotten does not match them again', async () => {
    await service.processPhoto({ photoId: 'selfie-erased', imageUrl: first('facerec_obama'), kind: 'FACECAM', userId: 'erased', eventId: 'erase' });
    const key = annotatedKey('erase', 'erase-shot');
    let open!: () => void;
    gates.set(key, new Promise((resolve) => (open = resolve)));
    // The action shot has searched the samples (found the user) and waits to upload and record.
    const shot = service.processPhoto({ photoId: 'erase-shot', imageUrl: group('facerec_obama_and_biden.jpg'), kind: 'ACTION_SHOT', eventId: 'erase' });
    await pause(1500);
    await service.forgetUser('erased');
    gates.delete(key);
    open();
    await shot;
    expect(await service.listUserPhotos('erased')).toEqual([]);
    expect(await storage.rowsNamingUser('erased')).toBe(0);
    expect(await photoProblems(stores, 'erase', 'erase-shot', dimension)).toEqual([]);
  });

  it('ForgetUser racing an enrolment or a re-enrolment: the user is fully enrolled or nothing of them is left', async () => {
    const outcomes = { enrolled: 0, forgotten: 0 };
    for (let round = 0; round < ROUNDS * 2; round++) {
      const userId = `racer-${round}`;
      const photoId = `selfie-racer-${round}`;
      const key = annotatedKey('race', photoId);
      const enrol = () => service.processPhoto({ photoId, imageUrl: first('facerec_lin_manuel_miranda'), kind: 'FACECAM', userId, eventId: 'race' });
      // Odd rounds race a re-enrolment: the user is enrolled before.
      if (round % 2 === 1) await enrol();
      // Hold some enrolments in their write phase so that the forget arrives in the middle of it.
      let open: (() => void) | undefined;
      if (round % 3 === 0) gates.set(key, new Promise((resolve) => (open = resolve)));
      // The first enrolment and re-enrolment are forgotten at once (the forget takes the user's lock
      // first: the enrolment comes after it); the others after up to 300 ms, mostly after the
      // enrolment has its lock. Where the orders cross depends on the machine (~60-100 ms).
      const delay = round < 2 ? 0 : Math.floor(random() * 300);
      const [enrolled, forgot] = await Promise.allSettled([
        enrol(),
        pause(delay).then(() => service.forgetUser(userId)),
        open ? pause(200).then(() => { gates.delete(key); open!(); }) : Promise.resolve(),
      ]);
      expect(enrolled.status).toBe('fulfilled');
      expect(forgot.status).toBe('fulfilled');
      const state = await userProblems(stores, storage, userId, photoId, key);
      expect(state.problems).toEqual([]);
      outcomes[state.enrolled ? 'enrolled' : 'forgotten']++;
    }
    // Both orders happened: the test raced for real.
    expect(outcomes.enrolled).toBeGreaterThan(0);
    expect(outcomes.forgotten).toBeGreaterThan(0);
  });
});
