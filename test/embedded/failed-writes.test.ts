/**
 * What a ProcessPhoto that fails half-way leaves, on the embedded stores with the real models: the
 * object store is made to refuse the annotated copy (as a stopped S3 server does) after the vectors
 * were written. test/integration/service-faults.test.ts does the same with a stopped S3 server.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { trace } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStores, type OpenStores } from '../../src/adapters/stores.js';
import { BackendUnavailableError } from '../../src/domain/errors.js';
import { annotate } from '../../src/inference/annotate.js';
import type { ImageSource } from '../../src/ports/image-source.js';
import type { MatchStore } from '../../src/ports/match-store.js';
import type { ObjectStore } from '../../src/ports/object-store.js';
import { MatchingService } from '../../src/services/matching.service.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { inspectStorage, type StorageInspector } from '../support/inspect.js';
import { group, identities, read, sharedAnalyzer, testConfig } from '../support/shared.js';

describe('a ProcessPhoto that fails after its vectors were written', () => {
  let dir: string;
  let stores: OpenStores;
  /** The vectors of a user, read from the data directory's database (test/support/inspect.ts). */
  let storage: StorageInspector;
  let service: MatchingService;
  /** While set, the object store refuses writes as an unreachable S3 would. */
  let refuse = false;
  /** While set, the match store fails the offer of matches (after the enrolment was recorded). */
  let refuseOffer = false;

  const files: ImageSource = { read: (ref) => read(ref) };
  const first = (id: string): string => identities().find((p) => p.id === id)!.files[0]!;
  const usersIn = (r: Awaited<ReturnType<MatchingService['processPhoto']>>): string[] =>
    r.faces.flatMap((f) => f.matches.map((m) => m.userId!)).sort();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'facematch-failed-writes-'));
    const config = testConfig({ FACEMATCH_DATA_DIR: dir });
    const model = await sharedAnalyzer();
    stores = await openStores(config, createLogger('warn'));
    await stores.vectors.init(model.embedder.dimension);
    storage = inspectStorage(config);
    const objects: ObjectStore = Object.assign(Object.create(stores.objects) as ObjectStore, {
      put: (key: string, bytes: Uint8Array, type: string) =>
        refuse ? Promise.reject(new BackendUnavailableError('S3 at test: put: connect ECONNREFUSED')) : stores.objects.put(key, bytes, type),
    });
    const matches: MatchStore = Object.assign(Object.create(stores.matches) as MatchStore, {
      offerMatches: (offered: Parameters<MatchStore['offerMatches']>[0]) =>
        refuseOffer ? Promise.reject(new BackendUnavailableError('PostgreSQL at test: connection terminated')) : stores.matches.offerMatches(offered),
    });
    service = new MatchingService({
      model,
      images: files,
      vectors: stores.vectors,
      objects,
      matches,
      locks: stores.locks,
      annotate: (source, faces, size) => annotate(source, faces, { ...size, maxPixels: config.decode.maxPixels, maxSide: 1024 }),
      tracer: trace.getTracer('test'),
    });
  });

  afterAll(async () => {
    await storage?.close();
    await stores?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a first enrolment takes its sample back: later action shots do not match the user', async () => {
    refuse = true;
    await expect(
      service.processPhoto({ photoId: 'selfie-biden', imageUrl: first('facerec_biden'), kind: 'FACECAM', userId: 'biden' }),
    ).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    refuse = false;
    expect(await stores.matches.samplesOfUser('biden')).toEqual([]);
    expect(await storage.vectorsOfUser('biden')).toBe(0);
    const shot = await service.processPhoto({ photoId: 'shot-1', imageUrl: group('facerec_two_people.jpg'), kind: 'ACTION_SHOT' });
    expect(usersIn(shot)).toEqual([]);
    expect(await service.listUserPhotos('biden')).toEqual([]);
  });

  it('a retried enrolment then works, and finds the action shot processed meanwhile', async () => {
    const selfie = await service.processPhoto({ photoId: 'selfie-biden', imageUrl: first('facerec_biden'), kind: 'FACECAM', userId: 'biden' });
    expect(selfie.matches.map((m) => m.photoId)).toEqual(['shot-1']);
    expect((await service.listUserPhotos('biden')).map((p) => p.photoId)).toEqual(['shot-1']);
  });

  it('a failed reprocess of an enrolled selfie keeps the enrolment working', async () => {
    refuse = true;
    await expect(
      service.processPhoto({ photoId: 'selfie-biden', imageUrl: first('facerec_biden'), kind: 'FACECAM', userId: 'biden' }),
    ).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    refuse = false;
    expect((await stores.matches.samplesOfUser('biden')).map((p) => p.photoId)).toEqual(['selfie-biden']);
    expect(await storage.vectorsOfUser('biden')).toBe(1);
    const shot = await service.processPhoto({ photoId: 'shot-2', imageUrl: group('facerec_obama_and_biden.jpg'), kind: 'ACTION_SHOT' });
    expect(usersIn(shot)).toEqual(['biden']);
  });

  it('a failed action shot leaves no record and is not listed; its retry completes', async () => {
    refuse = true;
    await expect(service.processPhoto({ photoId: 'shot-3', imageUrl: group('facerec_two_people.jpg'), kind: 'ACTION_SHOT' })).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
    });
    refuse = false;
    expect(await stores.matches.getPhoto('shot-3')).toBeUndefined();
    expect((await service.listUserPhotos('biden')).map((p) => p.photoId).sort()).toEqual(['shot-1', 'shot-2']);
    const retried = await service.processPhoto({ photoId: 'shot-3', imageUrl: group('facerec_two_people.jpg'), kind: 'ACTION_SHOT' });
    expect(usersIn(retried)).toEqual(['biden']);
    expect((await service.listUserPhotos('biden')).map((p) => p.photoId).sort()).toEqual(['shot-1', 'shot-2', 'shot-3']);
  });

  it('an enrolment that fails after it was recorded (at the offer of matches) keeps its sample', async () => {
    refuseOffer = true;
    await expect(
      service.processPhoto({ photoId: 'selfie-obama', imageUrl: first('facerec_obama'), kind: 'FACECAM', userId: 'obama' }),
    ).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    refuseOffer = false;
    expect((await stores.matches.samplesOfUser('obama')).map((p) => p.photoId)).toEqual(['selfie-obama']);
    expect(await storage.vectorsOfUser('obama')).toBe(1);
    const shot = await service.processPhoto({ photoId: 'shot-4', imageUrl: group('facerec_two_people.jpg'), kind: 'ACTION_SHOT' });
    expect(usersIn(shot)).toEqual(['biden', 'obama']);
  });
});
