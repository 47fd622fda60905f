/**
 * HTTP beside gRPC: health, readiness, metrics and the REST fallback; the gRPC health service;
 * the bound on work in flight; and the event loop staying responsive under load.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { credentials, makeGenericClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Serving } from '../src/bin/serve.js';
import { SERVICE_NAME } from '../src/transport/grpc/grpc.server.js';
import { createLogger } from '../src/telemetry/logger.js';
import { GROUPS_DIR, testConfig } from '../test/support/shared.js';
import { LOOPBACK_SERVICE, photoServer } from './support.js';

let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
let serving: Serving;
let base: string;
/** Accepts connections and never answers. */
let silent: Server;
let silentBase: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-http-'));
  // Four 24-megapixel camera-sized JPEGs, made now from a group photo and served over loopback.
  const big = await Promise.all(
    [0, 1, 2, 3].map((i) =>
      sharp(path.join(GROUPS_DIR, 'insightface_t1.jpg'))
        .resize(6000, 4000)
        .modulate({ brightness: 1 + i * 0.02 })
        .jpeg({ quality: 92 })
        .toBuffer(),
    ),
  );
  photos = await photoServer(Object.fromEntries(big.map((b, i) => [`/big${i}.jpg`, b])));
  silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  silentBase = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  serving = await serve(
    testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE, FACEMATCH_MAX_IN_FLIGHT: '4' }),
    createLogger('warn'),
  );
  base = `http://127.0.0.1:${serving.httpPort}`;
});
afterAll(async () => {
  await serving.stop();
  silent.closeAllConnections();
  await new Promise<void>((r) => silent.close(() => r()));
  await photos.close();
  await rm(dataDir, { recursive: true, force: true });
});

const post = (route: string, body: unknown): Promise<Response> =>
  fetch(`${base}${route}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });

/** The service's count of requests in flight, as /metrics reports it. */
async function inFlight(): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(/^facematch_in_flight (\d+)/m.exec(text)?.[1]);
}

/**
 * Polls /metrics until `want` requests are in flight; returns how many looks it took. The test
 * process is also the server's, and the machine may be busy: a request the client has sent (or
 * given up on) reaches the server's count a few event-loop turns later, not at once.
 */
async function untilInFlight(want: number, looks = 200): Promise<number> {
  for (let look = 1; look <= looks; look++) {
    if ((await inFlight()) === want) return look;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`in flight never reached ${want} (now ${await inFlight()})`);
}

describe('health, readiness, metrics', () => {
  it('answers /healthz and /readyz with every store checked', async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    const body = (await ready.json()) as { checks: Record<string, string> };
    expect(body.checks).toMatchObject({ vectors: 'ok', objects: 'ok', matches: 'ok' });
    expect(body.checks.models).toMatch(/^test on cpu$/);
  });

  it('serves the standard gRPC health service', async () => {
    const Health = makeGenericClientConstructor(healthService, 'Health');
    const client = new Health(`127.0.0.1:${serving.grpcPort}`, credentials.createInsecure()) as unknown as {
      check(req: { service: string }, cb: (e: ServiceError | null, r: { status: string }) => void): void;
      close(): void;
    };
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      client.check({ service: SERVICE_NAME }, (e, r) => (e ? reject(e) : resolve(r))),
    );
    client.close();
    expect(res.status).toBe('SERVING');
  });
});

describe('REST: the proto3 JSON mapping of the RPCs', () => {
  it('processes, lists, and reports bad input with a stable code', async () => {
    // The first REST version's short forms (kind FACECAM / ACTION_SHOT) are still read.
    const selfie = await post('/v1/photos', {
      photoId: 'rest-selfie',
      imageUrl: `${photos.base}/faces/facerec_obama/obama.jpg`,
      kind: 'FACECAM',
      userId: 'obama',
    });
    expect(selfie.status).toBe(200);
    const shot = await post('/v1/photos', {
      photoId: 'rest-shot',
      imageUrl: `${photos.base}/groups/facerec_obama_and_biden.jpg`,
      kind: 'PHOTO_KIND_ACTION_SHOT',
    });
    expect(shot.status).toBe(200);
    const result = (await shot.json()) as {
      kind: string;
      faces: { faceId: string; landmarks: { x: number; y: number }[]; matches: { userId: string }[] }[];
      annotated: { key: string };
      timings: Record<string, number>;
      matches: unknown[];
    };
    expect(result.kind).toBe('PHOTO_KIND_ACTION_SHOT');
    expect(result.faces.flatMap((f) => f.matches.map((m) => m.userId))).toEqual(['obama']);
    expect(result.faces[0]!.faceId).toBe('rest-shot/0');
    expect(result.faces[0]!.landmarks[0]).toEqual({ x: expect.any(Number), y: expect.any(Number) });
    // Default values are written out: an action shot's own matches, the stages that did not run.
    expect(result.matches).toEqual([]);
    expect(Object.keys(result.timings).sort()).toEqual(
      ['alignMs', 'decodeMs', 'detectMs', 'drawMs', 'embedMs', 'fetchMs', 'recordMs', 'searchMs', 'storeMs', 'totalMs', 'uploadMs'],
    );
    expect(result.annotated.key).toBe('annotated/default/rest-shot.jpg');
    const listedRes = await fetch(`${base}/v1/users/obama/photos`);
    const listed = (await listedRes.json()) as { photos: { photoId: string }[] };
    expect(listed.photos.map((p) => p.photoId)).toEqual(['rest-shot']);
    expect(await (await fetch(`${base}/v1/users/nobody/photos?eventId=default`)).json()).toEqual({ photos: [] });
    // The old `target` of SearchFaces is read as `collection`; snake_case field names are read too.
    const search = await post('/v1/faces:search', { image_url: `${photos.base}/faces/facerec_obama/obama2.jpg`, target: 'users', limit: '5' });
    expect(search.status).toBe(200);
    expect(await search.json()).toMatchObject({ matches: [{ userId: 'obama', photoId: 'rest-selfie', faceId: 'obama/rest-selfie' }] });

    const bad = await post('/v1/photos', { photoId: 'rest-bad', imageUrl: `${photos.base}/text.jpg`, kind: 'ACTION_SHOT' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ code: 'IMAGE_UNSUPPORTED' });
    for (const body of [
      { photoId: 'x', imageUrl: `${photos.base}/text.jpg`, kind: 'SELFIE' },
      { photoId: 'x', imageUrl: `${photos.base}/text.jpg`, kind: 'ACTION_SHOT', photoID: 'typo' },
      { photoId: 7, imageUrl: `${photos.base}/text.jpg`, kind: 'ACTION_SHOT' },
      ['not', 'an', 'object'],
    ]) {
      const res = await post('/v1/photos', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.json()).toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    const limit = await post('/v1/faces:search', { imageUrl: `${photos.base}/text.jpg`, collection: 'SEARCH_COLLECTION_USERS', limit: 1.5 });
    expect(await limit.json()).toMatchObject({ code: 'INVALID_ARGUMENT', message: 'limit must be a whole number from 0 to 4294967295' });

    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/facematch_requests_total\{method="ProcessPhoto",transport="http",code="OK"\} 2/);
    expect(metrics).toMatch(/facematch_requests_total\{method="ProcessPhoto",transport="http",code="INVALID_ARGUMENT"\} 4/);
    expect(metrics).toMatch(/facematch_stage_duration_seconds_count\{stage="detect"\} 2/);
  });

  it('deletes and forgets with default values written out', async () => {
    const del = async (route: string) => (await fetch(`${base}${route}`, { method: 'DELETE' })).json();
    expect(await del('/v1/photos/never-processed')).toEqual({ deleted: false });
    expect(await del('/v1/users/never-enrolled')).toEqual({ deletedSamples: 0, deletedMatches: 0, deletedObjects: 0 });
  });

  it('answers 404 for an unknown path, 405 with Allow for a wrong method, 400 for a malformed escape, 413 for a body too large', async () => {
    const unknown = await fetch(`${base}/v2/photos`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: 'NOT_FOUND' });
    const wrong = await fetch(`${base}/v1/photos`, { method: 'GET' });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST');
    const wrongUser = await fetch(`${base}/v1/users/u1`, { method: 'POST', body: '{}' });
    expect([wrongUser.status, wrongUser.headers.get('allow')]).toEqual([405, 'DELETE']);
    const health = await fetch(`${base}/healthz`, { method: 'DELETE' });
    expect([health.status, health.headers.get('allow')]).toEqual([405, 'GET, HEAD']);
    for (const route of ['/v1/photos/%E0%A4%A', '/v1/users/%zz/photos']) {
      const res = await fetch(`${base}${route}`, { method: route.endsWith('photos') ? 'GET' : 'DELETE' });
      expect(res.status, route).toBe(400);
      expect(await res.json()).toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    expect((await fetch(`${base}/healthz`, { method: 'HEAD' })).status).toBe(200);
    const huge = await post('/v1/photos', { photoId: 'p'.repeat(5 << 20) });
    expect([huge.status, ((await huge.json()) as { code: string }).code]).toEqual([413, 'INVALID_ARGUMENT']);
    const empty = await fetch(`${base}/v1/photos/`, { method: 'DELETE' });
    expect([empty.status, ((await empty.json()) as { message: string }).message]).toEqual([400, 'photo_id is required']);
  });

  it('cancels the requests of clients that disconnect: their slots are free again', async () => {
    const limit = 4;
    const freed: string[] = [];
    for (let round = 0; round < 2; round++) {
      const gone = Array.from({ length: limit }, (_, i) =>
        fetch(`${base}/v1/photos`, {
          method: 'POST',
          body: JSON.stringify({ photoId: `gone-${round}-${i}`, imageUrl: `${silentBase}/never.jpg`, kind: 'PHOTO_KIND_ACTION_SHOT' }),
          signal: AbortSignal.timeout(200),
        }).then(
          (res) => res.status,
          (error: Error) => error.name,
        ),
      );
      // All four were admitted (none got 429) and each client gave up after 200 ms.
      expect(await Promise.all(gone)).toEqual(Array.from({ length: limit }, () => 'TimeoutError'));
      // The fetch of the photo never answers: only the cancellation frees the slots, the whole bound.
      const t0 = performance.now();
      const looks = await untilInFlight(0);
      freed.push(`round ${round + 1}: look ${looks}, ${(performance.now() - t0).toFixed(1)} ms`);
    }
    console.info(`in flight back to 0 after 4 disconnected clients: ${freed.join('; ')}`);
    const res = await post('/v1/photos', { photoId: 'after-gone', imageUrl: `${photos.base}/groups/facerec_obama_and_biden.jpg`, kind: 'PHOTO_KIND_ACTION_SHOT' });
    expect(res.status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/facematch_requests_total\{method="ProcessPhoto",transport="http",code="CANCELLED"\} 8/);
  });
});

describe('under load', () => {
  it('answers /healthz within 50 ms while 4 large photos are processed, and refuses a 5th at once', async () => {
    const work = [0, 1, 2, 3].map((i) =>
      post('/v1/photos', { photoId: `big-${i}`, imageUrl: `${photos.base}/big${i}.jpg`, kind: 'ACTION_SHOT' }),
    );
    // Once the four are all in flight (they take seconds each), the fifth is refused at once.
    await untilInFlight(4);
    const fifth = await post('/v1/photos', { photoId: 'big-4', imageUrl: `${photos.base}/big0.jpg`, kind: 'ACTION_SHOT' });
    expect(fifth.status).toBe(429);
    expect(await fifth.json()).toMatchObject({ code: 'OVERLOADED' });
    const latencies: number[] = [];
    let done = false;
    const all = Promise.all(work).finally(() => {
      done = true;
    });
    while (!done) {
      const t0 = performance.now();
      const res = await fetch(`${base}/healthz`);
      latencies.push(performance.now() - t0);
      expect(res.status).toBe(200);
      await new Promise((r) => setTimeout(r, 20));
    }
    const responses = await all;
    for (const r of responses) expect(r.status).toBe(200);
    latencies.sort((a, b) => a - b);
    console.info(`health check under load: ${latencies.length} probes, median ${latencies[latencies.length >> 1]!.toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms`);
    expect(latencies.length).toBeGreaterThan(3);
    expect(latencies.at(-1)!).toBeLessThan(50);
  });
});
