/**
 * The gRPC edge of the service (real models, embedded stores, loopback sockets): what a caller
 * sends that is malformed or oversized, callers that give up, and what is logged for each.
 */
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Serving } from '../../src/bin/serve.js';
import { PhotoKind, type ProcessPhotoRequest } from '../../src/gen/facematch/v1/facematch.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from '../../e2e/support.js';
import { testConfig } from '../support/shared.js';

const MAX_IN_FLIGHT = 2;

let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
/** Accepts connections and never answers. */
let silent: Server;
let silentBase: string;
let serving: Serving;
let c: Client;
let rpc: ReturnType<typeof api>;
const logs: Record<string, unknown>[] = [];

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-grpc-'));
  photos = await photoServer();
  silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  silentBase = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  serving = await serve(
    testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE, FACEMATCH_MAX_IN_FLIGHT: String(MAX_IN_FLIGHT) }),
    pino({ level: 'info' }, sink),
  );
  c = client(serving.grpcPort);
  rpc = api(c);
});
afterAll(async () => {
  c?.close();
  await serving?.stop();
  silent?.closeAllConnections();
  await new Promise<void>((r) => (silent ? silent.close(() => r()) : r()));
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

const failure = async (p: Promise<unknown>): Promise<ServiceError> => {
  try {
    await p;
  } catch (error) {
    return error as ServiceError;
  }
  throw new Error('expected the call to fail');
};
const errorCode = (e: ServiceError): unknown => e.metadata?.get('facematch-error-code')[0];

const shot = (photoId: string, imageUrl = `${photos.base}/groups/facerec_obama_and_biden.jpg`): ProcessPhotoRequest => ({
  photoId,
  imageUrl,
  eventId: 'grpc-edge',
  kind: PhotoKind.PHOTO_KIND_ACTION_SHOT,
  userId: '',
});

/** A ProcessPhoto with a deadline `ms` from now. */
const withDeadline = (req: ProcessPhotoRequest, ms: number): Promise<unknown> =>
  new Promise((resolve, reject) =>
    c.processPhoto(req, new Metadata(), { deadline: new Date(Date.now() + ms) }, (err, res) => (err ? reject(err) : resolve(res))),
  );

const inFlight = async (): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${serving.httpPort}/metrics`)).text();
  return Number(/^facematch_in_flight (\d+)/m.exec(text)?.[1]);
};

describe('what a caller sends', () => {
  it('answers a request that does not decode with INVALID_ARGUMENT, not INTERNAL', async () => {
    // Field 1 (photo_id) announces 5 bytes and brings 1.
    const garbage = Buffer.from([0x0a, 0x05, 0x61]);
    const err = await failure(
      new Promise((resolve, reject) =>
        c.makeUnaryRequest(
          '/facematch.v1.FacematchService/ProcessPhoto',
          (b: Buffer) => b,
          (b: Buffer) => b,
          garbage,
          (e, r) => (e ? reject(e) : resolve(r)),
        ),
      ),
    );
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(errorCode(err)).toBe('INVALID_ARGUMENT');
    expect(err.details).toMatch(/^the request is not a valid ProcessPhotoRequest/);
  });

  it('refuses a 1 MB photo_id with a short message, and the connection keeps serving', async () => {
    const huge = 'p'.repeat(1 << 20);
    const refused = failure(rpc.processPhoto(shot(huge)));
    const beside = rpc.listUserPhotos({ userId: 'nobody', eventId: '' });
    const err = await refused;
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(errorCode(err)).toBe('INVALID_ARGUMENT');
    expect(err.details.length).toBeLessThan(300);
    expect(err.details).toContain('(1048576 characters)');
    expect(await beside).toEqual({ photos: [] });
    // And after it, on the same channel.
    expect(await rpc.deletePhoto({ photoId: 'never-processed' })).toEqual({ deleted: false });
  });

  it('bounds every field before the fetch: long urls, event ids and ignored user ids are refused unread', async () => {
    const before = photos.hits();
    const cases: ProcessPhotoRequest[] = [
      shot('ok-id', `${photos.base}/${'x'.repeat(5000)}.jpg`),
      { ...shot('ok-id'), eventId: 'e'.repeat(129) },
      { ...shot('ok-id'), userId: 'u'.repeat(10_000) },
      { ...shot('ok-id'), kind: 7 as PhotoKind },
      { ...shot('ok-id'), photoId: 'a:b' },
      { ...shot('ok-id'), photoId: 'a@b' },
    ];
    for (const req of cases) {
      const err = await failure(rpc.processPhoto(req));
      expect([err.code, errorCode(err)]).toEqual([status.INVALID_ARGUMENT, 'INVALID_ARGUMENT']);
      expect(err.details.length).toBeLessThan(300);
    }
    const search = await failure(rpc.searchFaces({ imageUrl: `${photos.base}/faces/facerec_obama/obama.jpg`, eventId: '', limit: 10, collection: 0 }));
    expect(search.code).toBe(status.INVALID_ARGUMENT);
    expect(photos.hits()).toBe(before);
  });

  it("logs a caller's mistake at warn without a stack", () => {
    const refusals = logs.filter((l) => l.code === 'INVALID_ARGUMENT');
    expect(refusals.length).toBeGreaterThan(0);
    for (const l of refusals) {
      expect(l.level).toBe(40);
      expect(JSON.stringify(l)).not.toMatch(/stack|\n\s+at /);
      expect(JSON.stringify(l).length).toBeLessThan(1000);
    }
    expect(logs.filter((l) => (l.level as number) >= 50)).toEqual([]);
  });
});

describe('callers that give up', () => {
  it(`frees the slots of 10 calls whose 200 ms deadline passed on a source that never answers (limit ${MAX_IN_FLIGHT})`, async () => {
    const outcomes: number[] = [];
    for (let batch = 0; batch < 10 / MAX_IN_FLIGHT; batch++) {
      const calls = Array.from({ length: MAX_IN_FLIGHT }, (_, i) => failure(withDeadline(shot(`hang-${batch}-${i}`, `${silentBase}/never.jpg`), 200)));
      for (const err of await Promise.all(calls)) outcomes.push(err.code);
    }
    const lastDeadline = performance.now();
    // Each call had a slot (none was refused as overloaded): the ones before gave theirs back.
    expect(outcomes).toEqual(Array.from({ length: 10 }, () => status.DEADLINE_EXCEEDED));
    // At the first look, nothing is in flight, and a normal request is served.
    const idle = await inFlight();
    const looked = performance.now();
    const res = await rpc.processPhoto(shot('after-the-hang'));
    const answered = performance.now();
    expect(idle).toBe(0);
    expect(res.faces.length).toBeGreaterThanOrEqual(2);
    console.info(
      `after 10 abandoned calls: in flight ${idle} when read ${(looked - lastDeadline).toFixed(1)} ms after the last deadline; ` +
        `the next ProcessPhoto answered in ${(answered - looked).toFixed(0)} ms (its own fetch, detection and writes)`,
    );
  });

  it('frees the slot of a caller that cancels', async () => {
    const call = c.processPhoto(shot('cancelled', `${silentBase}/never.jpg`), (err) => {
      expect(err?.code).toBe(status.CANCELLED);
    });
    // Wait until the call holds its slot, then cancel it.
    while ((await inFlight()) === 0) await new Promise((r) => setTimeout(r, 10));
    call.cancel();
    while ((await inFlight()) !== 0) await new Promise((r) => setTimeout(r, 10));
    const res = await Promise.all([rpc.processPhoto(shot('after-cancel-1')), rpc.processPhoto(shot('after-cancel-2'))]);
    expect(res.map((r) => r.faces.length >= 2)).toEqual([true, true]);
  });
});
