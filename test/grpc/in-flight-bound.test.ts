/**
 * The in-flight bound as Envoy sees it (real models, embedded stores, loopback): a call over
 * FACEMATCH_MAX_IN_FLIGHT is refused at once with RESOURCE_EXHAUSTED in the first HEADERS frame,
 * with END_STREAM (a trailers-only response: Envoy's `resource-exhausted` retry acts only on
 * that form), and over REST with 429 and Retry-After.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, client, LOOPBACK_SERVICE, type Client } from '../../e2e/support.js';
import { serve, type Serving } from '../../src/bin/serve.js';
import { PhotoKind } from '../../src/gen/facematch/v1/facematch.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { testConfig } from '../support/shared.js';
import { rawProcessPhoto } from './raw-grpc.js';
import { slowPhotos } from './slow-photos.js';

const TWO_FACES = 'facerec_obama_and_biden.jpg';

let dataDir: string;
let photos: Awaited<ReturnType<typeof slowPhotos>>;
let serving: Serving;
let c: Client;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-bound-'));
  photos = await slowPhotos();
  serving = await serve(
    testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE, FACEMATCH_MAX_IN_FLIGHT: '1', FACEMATCH_INFERENCE_WORKERS: '1' }),
    createLogger('error'),
  );
  c = client(serving.grpcPort);
});
afterAll(async () => {
  c?.close();
  await serving?.stop();
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('a replica at its in-flight bound (FACEMATCH_MAX_IN_FLIGHT=1)', () => {
  it('refuses the next call at once: RESOURCE_EXHAUSTED trailers-only on gRPC, 429 with Retry-After on REST; a served call has headers, data and trailers', async () => {
    const before = photos.arrived();
    const held = api(c).processPhoto({
      photoId: 'holds-the-slot',
      imageUrl: photos.url(TWO_FACES, 3000),
      eventId: 'bound',
      kind: PhotoKind.PHOTO_KIND_ACTION_SHOT,
      userId: '',
    });
    await expect.poll(() => photos.arrived(), { timeout: 10_000 }).toBe(before + 1);

    const t0 = performance.now();
    const refused = await rawProcessPhoto(serving.grpcPort, 'over-the-bound', photos.url(TWO_FACES, 0));
    const refusedMs = performance.now() - t0;
    expect(refused.headers['grpc-status']).toBe(String(status.RESOURCE_EXHAUSTED));
    expect(refused.headers['facematch-error-code']).toBe('OVERLOADED');
    expect(refused.endStream).toBe(true);
    expect(refused.data).toHaveLength(0);
    expect(refused.trailers).toBeUndefined();
    // The refused call never fetched its photo.
    expect(photos.arrived()).toBe(before + 1);

    const rest = await fetch(`http://127.0.0.1:${serving.httpPort}/v1/photos`, {
      method: 'POST',
      body: JSON.stringify({ photoId: 'over-the-bound-rest', imageUrl: photos.url(TWO_FACES, 0), kind: 'PHOTO_KIND_ACTION_SHOT' }),
    });
    expect(rest.status).toBe(429);
    expect(rest.headers.get('retry-after')).toBe('1');
    expect(await rest.json()).toMatchObject({ code: 'OVERLOADED' });
    console.info(`over the bound: RESOURCE_EXHAUSTED after ${refusedMs.toFixed(1)} ms, trailers-only`);
    expect(refusedMs).toBeLessThan(500);

    expect((await held).faces.length).toBeGreaterThan(0);

    // What a served call looks like on the same client: the status comes in trailers, after data.
    const served = await rawProcessPhoto(serving.grpcPort, 'under-the-bound', photos.url(TWO_FACES, 0));
    expect(served.headers['grpc-status']).toBeUndefined();
    expect(served.endStream).toBe(false);
    expect(served.data.length).toBeGreaterThan(5);
    expect(served.trailers?.['grpc-status']).toBe('0');
  });
});
