/**
 * ListEventPhotos on the embedded service (real models and photos, loopback sockets), over gRPC and
 * REST, and the PhotoBatch `event` source (EventPhotoSource) over the same server: an event's
 * photos, all of them once, in photo id order, a facecam with its user, nothing of another event;
 * bad requests refused; and what the source lists, processed again, is the same event.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFacematchClient } from '../../src/adapters/grpc-client/client.js';
import { EventPhotoSource } from '../../src/adapters/grpc-client/event.photo-source.js';
import { serve, type Serving } from '../../src/bin/serve.js';
import {
  PhotoKind,
  type EventPhoto,
  type ListEventPhotosRequest,
  type ListEventPhotosResponse,
} from '../../src/gen/facematch/v1/facematch.js';
import type { PhotoKind as Kind } from '../../src/ports/photo-processor.js';
import type { SourcePhoto } from '../../src/ports/photo-source.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from '../../e2e/support.js';
import { testConfig } from '../support/shared.js';

let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
let serving: Serving;
let c: Client;
let closedPort: number;

interface Recorded {
  photoId: string;
  eventId: string;
  file: string;
  kind: Kind;
  userId?: string;
}

/** Mixed case and '-', '.', '_' in the ids, processed out of order: the listing sorts them bytewise. */
const RECORDED: Recorded[] = [
  { photoId: 'lep-shot_2', eventId: 'lep-A', file: 'groups/facerec_kit_with_rose.jpg', kind: 'ACTION_SHOT' },
  { photoId: 'lep-cam-obama', eventId: 'lep-A', file: 'faces/facerec_obama/obama.jpg', kind: 'FACECAM', userId: 'obama' },
  { photoId: 'lep-Shot.1', eventId: 'lep-A', file: 'groups/facerec_obama_and_biden.jpg', kind: 'ACTION_SHOT' },
  { photoId: 'lep-B-cam', eventId: 'lep-B', file: 'faces/facerec_biden/biden.jpg', kind: 'FACECAM', userId: 'biden' },
  { photoId: 'lep-shot-3', eventId: 'lep-A', file: 'groups/faceapi_bbt1.jpg', kind: 'ACTION_SHOT' },
  { photoId: 'lep-b-shot', eventId: 'lep-B', file: 'groups/facerec_obama_and_biden.jpg', kind: 'ACTION_SHOT' },
  { photoId: 'lep-Z', eventId: 'lep-A', file: 'faces/facerec_biden/biden2.jpg', kind: 'ACTION_SHOT' },
];
const url = (file: string): string => `${photos.base}/${file}`;
const WIRE_KIND = { ACTION_SHOT: PhotoKind.PHOTO_KIND_ACTION_SHOT, FACECAM: PhotoKind.PHOTO_KIND_FACECAM } as const;

/** Event A's photos as ListEventPhotos should answer them: by photo id, byte order. */
const expectedA = (): EventPhoto[] =>
  RECORDED.filter((r) => r.eventId === 'lep-A')
    .sort((a, b) => (a.photoId < b.photoId ? -1 : 1))
    .map((r) => ({ photoId: r.photoId, sourceUrl: url(r.file), kind: WIRE_KIND[r.kind], userId: r.userId ?? '' }));

const listEventPhotos = (req: Partial<ListEventPhotosRequest>): Promise<ListEventPhotosResponse> =>
  new Promise((resolve, reject) =>
    c.listEventPhotos({ eventId: '', pageSize: 0, pageToken: '', ...req }, (err, res) => (err ? reject(err) : resolve(res))),
  );

const failure = async (p: Promise<unknown>): Promise<ServiceError> => {
  try {
    await p;
  } catch (error) {
    return error as ServiceError;
  }
  throw new Error('expected the call to fail');
};
const refusal = async (p: Promise<unknown>): Promise<[status, unknown]> => {
  const e = await failure(p);
  return [e.code, e.metadata.get('facematch-error-code')[0]];
};

/** Every page of a listing, following next_page_token. */
async function allPages(list: (token: string) => Promise<ListEventPhotosResponse>): Promise<ListEventPhotosResponse[]> {
  const pages: ListEventPhotosResponse[] = [];
  let token = '';
  do {
    const page = await list(token);
    pages.push(page);
    token = page.nextPageToken;
  } while (token && pages.length < 100);
  return pages;
}

async function processAll(): Promise<void> {
  const rpc = api(c);
  for (const r of RECORDED) {
    await rpc.processPhoto({ photoId: r.photoId, imageUrl: url(r.file), eventId: r.eventId, kind: WIRE_KIND[r.kind], userId: r.userId ?? '' });
  }
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-lep-'));
  photos = await photoServer();
  serving = await serve(testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE }), createLogger('error'));
  c = client(serving.grpcPort);
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  await processAll();
}, 300_000);
afterAll(async () => {
  c?.close();
  await serving?.stop();
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('ListEventPhotos over gRPC', () => {
  it('pages through every photo of the event once, in photo id order, the facecam with its user, none of another event', async () => {
    const pages = await allPages((pageToken) => listEventPhotos({ eventId: 'lep-A', pageSize: 2, pageToken }));
    expect(pages.map((p) => p.photos.length)).toEqual([2, 2, 1]);
    expect(pages.at(-1)!.nextPageToken).toBe('');
    expect(pages.flatMap((p) => p.photos)).toEqual(expectedA());
    expect(pages.flatMap((p) => p.photos).find((p) => p.kind === PhotoKind.PHOTO_KIND_FACECAM)).toMatchObject({ photoId: 'lep-cam-obama', userId: 'obama' });

    // One page by default; any listed photo id continues the listing after it.
    expect(await listEventPhotos({ eventId: 'lep-A' })).toEqual({ photos: expectedA(), nextPageToken: '' });
    expect((await listEventPhotos({ eventId: 'lep-A', pageToken: expectedA()[2]!.photoId })).photos).toEqual(expectedA().slice(3));
    expect((await listEventPhotos({ eventId: 'lep-B' })).photos.map((p) => p.photoId)).toEqual(['lep-B-cam', 'lep-b-shot']);
    expect(await listEventPhotos({ eventId: 'lep-nothing-here' })).toEqual({ photos: [], nextPageToken: '' });
  });

  it('refuses a bad event id, page size or page token with INVALID_ARGUMENT', async () => {
    const invalid = [status.INVALID_ARGUMENT, 'INVALID_ARGUMENT'];
    expect(await refusal(listEventPhotos({ eventId: '' }))).toEqual(invalid);
    expect(await refusal(listEventPhotos({ eventId: 'lep/A' }))).toEqual(invalid);
    expect(await refusal(listEventPhotos({ eventId: 'lep-A', pageSize: 1001 }))).toEqual(invalid);
    expect(await refusal(listEventPhotos({ eventId: 'lep-A', pageToken: '../lep-Z' }))).toEqual(invalid);
    expect(await refusal(listEventPhotos({ eventId: 'lep-A', pageToken: 'x'.repeat(129) }))).toEqual(invalid);
    // The largest page is allowed.
    expect((await listEventPhotos({ eventId: 'lep-A', pageSize: 1000 })).photos).toHaveLength(5);
  });
});

describe('GET /v1/events/{eventId}/photos', () => {
  const get = async (query: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`http://127.0.0.1:${serving.httpPort}/v1/events/${query}`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it('answers the same pages in proto3 JSON', async () => {
    const seen: unknown[] = [];
    let token = '';
    let pages = 0;
    do {
      const { status: code, body } = await get(`lep-A/photos?pageSize=2${token ? `&pageToken=${encodeURIComponent(token)}` : ''}`);
      expect(code).toBe(200);
      seen.push(...(body.photos as unknown[]));
      token = body.nextPageToken as string;
      pages++;
    } while (token);
    expect(pages).toBe(3);
    expect(seen).toEqual(
      expectedA().map((p) => ({ ...p, kind: p.kind === PhotoKind.PHOTO_KIND_FACECAM ? 'PHOTO_KIND_FACECAM' : 'PHOTO_KIND_ACTION_SHOT' })),
    );
    // snake_case query names too.
    const { body } = await get(`lep-A/photos?page_size=1&page_token=${expectedA()[3]!.photoId}`);
    expect(body).toEqual({ photos: [expect.objectContaining({ photoId: expectedA()[4]!.photoId })], nextPageToken: '' });
  });

  it('refuses a bad page size or token with 400 INVALID_ARGUMENT', async () => {
    for (const query of ['lep-A/photos?pageSize=1001', 'lep-A/photos?pageSize=-1', 'lep-A/photos?pageSize=two', 'lep-A/photos?pageToken=..%2Fx', 'lep%2FA/photos']) {
      const { status: code, body } = await get(query);
      expect({ query, code, error: body.code }).toEqual({ query, code: 400, error: 'INVALID_ARGUMENT' });
    }
  });
});

describe('EventPhotoSource', () => {
  const expectedSource = (): SourcePhoto[] =>
    RECORDED.filter((r) => r.eventId === 'lep-A')
      .sort((a, b) => (a.photoId < b.photoId ? -1 : 1))
      .map((r) => ({ position: r.photoId, photoId: r.photoId, imageUrl: url(r.file), kind: r.kind, ...(r.userId ? { userId: r.userId } : {}) }));

  async function listAll(source: EventPhotoSource, from?: string): Promise<SourcePhoto[][]> {
    const pages: SourcePhoto[][] = [];
    let token = from;
    do {
      const page = await source.list(token, new AbortController().signal);
      pages.push(page.photos);
      token = page.next;
    } while (token !== undefined && pages.length < 100);
    return pages;
  }

  it('lists the event’s photos as recorded, resumes after any position, and re-processing them changes nothing but the analysis', async () => {
    const grpc = createFacematchClient(`127.0.0.1:${serving.grpcPort}`);
    try {
      const source = new EventPhotoSource(grpc, 'lep-A', { pageSize: 2 });
      const pages = await listAll(source);
      expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
      expect(pages.flat()).toEqual(expectedSource());
      // A batch resumes from the position in its cursor.
      expect((await listAll(source, expectedSource()[1]!.position)).flat()).toEqual(expectedSource().slice(2));

      // What a PhotoBatch does with them: each photo processed again under its own id, the facecam for its user.
      const rpc = api(c);
      for (const p of pages.flat()) {
        await rpc.processPhoto({ photoId: p.photoId, imageUrl: p.imageUrl, eventId: 'lep-A', kind: WIRE_KIND[p.kind!], userId: p.userId ?? '' });
      }
      expect((await listAll(source)).flat()).toEqual(expectedSource());
      // Obama is enrolled again, from the same facecam, and found in the same action shot.
      expect((await rpc.listUserPhotos({ userId: 'obama', eventId: 'lep-A' })).photos.map((p) => p.photoId)).toEqual(['lep-Shot.1']);
    } finally {
      grpc.close();
    }
  }, 300_000);

  it('fails with the service’s code, BACKEND_UNAVAILABLE when there is no service, and CANCELLED when aborted', async () => {
    const grpc = createFacematchClient(`127.0.0.1:${serving.grpcPort}`);
    const nowhere = createFacematchClient(`127.0.0.1:${closedPort}`);
    try {
      await expect(new EventPhotoSource(grpc, 'lep-A').list('../x', new AbortController().signal)).rejects.toMatchObject({
        name: 'InvalidArgumentError',
        code: 'INVALID_ARGUMENT',
      });
      await expect(new EventPhotoSource(nowhere, 'lep-A').list(undefined, new AbortController().signal)).rejects.toMatchObject({
        name: 'BackendUnavailableError',
        code: 'BACKEND_UNAVAILABLE',
      });

      const source = new EventPhotoSource(grpc, 'lep-A');
      await expect(source.list(undefined, AbortSignal.abort())).rejects.toMatchObject({ code: 'CANCELLED' });
      const inFlight = new AbortController();
      const listing = source.list(undefined, inFlight.signal);
      inFlight.abort();
      await expect(listing).rejects.toMatchObject({ code: 'CANCELLED' });
      // The client is still good for the next call.
      expect((await source.list(undefined, new AbortController().signal)).photos).toHaveLength(5);
    } finally {
      nowhere.close();
      grpc.close();
    }
  });
});
