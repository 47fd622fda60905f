/**
 * HTTP beside gRPC: health, readiness, metrics and the REST fallback; the gRPC health service;
 * the bound on work in flight; and the event loop staying responsive under load.
 */
import { mkdtemp, rm } from 'node:fs/promises';
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
  serving = await serve(
    testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE, FACEMATCH_MAX_IN_FLIGHT: '4' }),
    createLogger('warn'),
  );
  base = `http://127.0.0.1:${serving.httpPort}`;
});
afterAll(async () => {
  await serving.stop();
  await photos.close();
  await rm(dataDir, { recursive: true, force: true });
});

const post = (route: string, body: unknown): Promise<Response> =>
  fetch(`${base}${route}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });

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

describe('REST fallback', () => {
  it('processes, lists, and reports bad input with a stable code', async () => {
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
      kind: 'ACTION_SHOT',
    });
    expect(shot.status).toBe(200);
    const result = (await shot.json()) as { faces: { matches: { userId: string }[] }[]; annotated: { key: string } };
    expect(result.faces.flatMap((f) => f.matches.map((m) => m.userId))).toEqual(['obama']);
    expect(result.annotated.key).toBe('annotated/default/rest-shot.jpg');
    const listedRes = await fetch(`${base}/v1/users/obama/photos`);
    const listed = (await listedRes.json()) as { photos: { photoId: string }[] };
    expect(listed.photos.map((p) => p.photoId)).toEqual(['rest-shot']);

    const bad = await post('/v1/photos', { photoId: 'rest-bad', imageUrl: `${photos.base}/text.jpg`, kind: 'ACTION_SHOT' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ code: 'IMAGE_UNSUPPORTED' });
    const unknownKind = await post('/v1/photos', { photoId: 'x', imageUrl: `${photos.base}/text.jpg`, kind: 'SELFIE' });
    expect(unknownKind.status).toBe(400);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/facematch_requests_total\{method="ProcessPhoto",transport="http",code="OK"\} 2/);
    expect(metrics).toMatch(/facematch_stage_duration_seconds_count\{stage="detect"\} 2/);
  });
});

describe('under load', () => {
  it('answers /healthz within 50 ms while 4 large photos are processed, and refuses a 5th at once', async () => {
    const work = [0, 1, 2, 3].map((i) =>
      post('/v1/photos', { photoId: `big-${i}`, imageUrl: `${photos.base}/big${i}.jpg`, kind: 'ACTION_SHOT' }),
    );
    // Let the four requests get going, then refuse the fifth and probe the health check meanwhile.
    await new Promise((r) => setTimeout(r, 100));
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
