/**
 * An action shot and the enrolment of someone in it, processed at the same moment, on the embedded
 * stores with the real models: the action shot is held between its vector write (and search) and
 * its record while the enrolment runs from start to end. The action shot's search came too early
 * to see the new sample; the enrolment sees the action shot's faces, but not its record yet. The
 * match must still be made.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { trace } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStores, type OpenStores } from '../../src/adapters/stores.js';
import { annotate } from '../../src/inference/annotate.js';
import type { ObjectStore } from '../../src/ports/object-store.js';
import { MatchingService } from '../../src/services/matching.service.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { inspectStorage, type StorageInspector } from '../support/inspect.js';
import { group, identities, read, sharedAnalyzer, testConfig } from '../support/shared.js';

describe('an enrolment while an action shot of that person is being processed', () => {
  let dir: string;
  let stores: OpenStores;
  /** What still names a user, read from the data directory's database (test/support/inspect.ts). */
  let storage: StorageInspector;
  let service: MatchingService;
  /** Uploads of keys in here wait until their gate opens. */
  const gates = new Map<string, Promise<void>>();
  const uploading = new Map<string, () => void>();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'facematch-concurrent-'));
    const config = testConfig({ FACEMATCH_DATA_DIR: dir });
    const model = await sharedAnalyzer();
    stores = await openStores(config, createLogger('warn'));
    await stores.vectors.init(model.embedder.dimension);
    storage = inspectStorage(config);
    const objects: ObjectStore = Object.assign(Object.create(stores.objects) as ObjectStore, {
      put: async (key: string, bytes: Uint8Array, type: string) => {
        uploading.get(key)?.();
        await gates.get(key);
        return stores.objects.put(key, bytes, type);
      },
    });
    service = new MatchingService({
      model,
      images: { read: (ref) => read(ref) },
      vectors: stores.vectors,
      objects,
      matches: stores.matches,
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

  it('matches them once the action shot is recorded', async () => {
    const key = 'annotated/default/shot-race.jpg';
    let open!: () => void;
    gates.set(key, new Promise((resolve) => (open = resolve)));
    const reachedUpload = new Promise<void>((resolve) => uploading.set(key, resolve));

    const shot = service.processPhoto({ photoId: 'shot-race', imageUrl: group('facerec_obama_and_biden.jpg'), kind: 'ACTION_SHOT' });
    await reachedUpload; // its faces are stored and it has searched: nobody enrolled yet
    const obama = identities().find((p) => p.id === 'facerec_obama')!.files[0]!;
    const selfie = await service.processPhoto({ photoId: 'selfie-obama', imageUrl: obama, kind: 'FACECAM', userId: 'obama' });
    // The enrolment found the face, but the action shot is not recorded yet.
    expect(selfie.matches).toEqual([]);
    expect(await service.listUserPhotos('obama')).toEqual([]);

    open();
    const recorded = await shot;
    expect(recorded.faces.flatMap((f) => f.matches)).toEqual([]); // its own search saw nobody
    expect((await service.listUserPhotos('obama')).map((p) => p.photoId)).toEqual(['shot-race']);
    const stored = await stores.matches.getPhoto('shot-race');
    expect(stored?.matches.map((m) => m.userId)).toEqual(['obama']);
    expect(await storage.rowsNamingUser('obama')).toBe(2); // the selfie and the match, no offer left
  });
});
