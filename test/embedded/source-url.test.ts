/**
 * What the service keeps of a photo's source URL: never credentials or a query string (a presigned
 * URL's signature), neither in the record nor in an error message.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { trace } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStores, type OpenStores } from '../../src/adapters/stores.js';
import { annotate } from '../../src/inference/annotate.js';
import type { ImageSource } from '../../src/ports/image-source.js';
import { MatchingService } from '../../src/services/matching.service.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { group, read, sharedAnalyzer, testConfig } from '../support/shared.js';

describe('source URLs', () => {
  let dir: string;
  let stores: OpenStores;
  let service: MatchingService;
  let deps: ConstructorParameters<typeof MatchingService>[0];
  /** Serves a photo for any URL: which one is in the URL's path. */
  const images: ImageSource = { read: (ref) => read(group(path.basename(new URL(ref).pathname))) };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'facematch-source-url-'));
    const config = testConfig({ FACEMATCH_DATA_DIR: dir });
    const model = await sharedAnalyzer();
    stores = await openStores(config, createLogger('warn'));
    await stores.vectors.init(model.embedder.dimension);
    deps = {
      model,
      images,
      vectors: stores.vectors,
      objects: stores.objects,
      matches: stores.matches,
      locks: stores.locks,
      annotate: (source, faces, size) => annotate(source, faces, { ...size, maxPixels: config.decode.maxPixels, maxSide: 1024 }),
      tracer: trace.getTracer('test'),
    };
    service = new MatchingService(deps);
  });

  afterAll(async () => {
    await stores?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('records the URL without credentials, query string or fragment', async () => {
    const secret = 'https://alice:s3cret@photos.example.org/event/facerec_two_people.jpg?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA#frag';
    await service.processPhoto({ photoId: 'shot-url', imageUrl: secret, kind: 'ACTION_SHOT' });
    const rec = await stores.matches.getPhoto('shot-url');
    expect(rec?.photo.sourceUrl).toBe('https://photos.example.org/event/facerec_two_people.jpg');
  });

  it('names the URL without its secrets when the photo has no face', async () => {
    const blank = 'https://bob:hunter2@photos.example.org/x/blank.png?token=abc';
    const noFace: ImageSource = { read: async () => (await import('sharp')).default({ create: { width: 64, height: 64, channels: 3, background: '#888' } }).png().toBuffer() };
    const s = new MatchingService({ ...deps, images: noFace });
    const error = await s.searchFaces(blank, undefined, 5, 'users').catch((e: unknown) => e as Error);
    expect(error).toMatchObject({ code: 'NO_FACE' });
    expect((error as Error).message).not.toMatch(/hunter2|token|abc/);
  });
});
