/**
 * Smoke test of the generated wire contract (src/gen, from proto/facematch/v1): a real grpc-js
 * server and client on loopback, so encoding, the service path and the TypeScript shapes agree.
 */
import { Server, ServerCredentials, credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FacematchServiceClient,
  FacematchServiceService,
  PhotoKind,
  ProcessPhotoRequest,
  type FacematchServiceServer,
  type ProcessPhotoResponse,
} from '../../src/gen/facematch/v1/facematch.js';

/** Echoes the request into a response with one face; a facecam gets no annotated copy. */
const echo: Pick<FacematchServiceServer, 'processPhoto'> = {
  processPhoto: (call, callback) => {
    const req = call.request;
    const facecam = req.kind === PhotoKind.PHOTO_KIND_FACECAM;
    const response: ProcessPhotoResponse = {
      photoId: req.photoId,
      eventId: req.eventId || 'default',
      kind: req.kind,
      width: 1280,
      height: 886,
      faces: [
        {
          faceId: `${req.photoId}/0`,
          box: { x: 10.5, y: 20.25, width: 100, height: 120 },
          score: 0.875,
          landmarks: [
            { x: 40, y: 60 },
            { x: 80, y: 60 },
            { x: 60, y: 80 },
            { x: 45, y: 100 },
            { x: 75, y: 100 },
          ],
          matches: facecam
            ? []
            : [{ userId: 'u-7', photoId: req.photoId, faceId: `${req.photoId}/0`, similarity: 0.7 }],
        },
      ],
      ...(facecam ? {} : { annotated: { bucket: 'annotated', key: `${req.photoId}.jpg`, url: 'file:///tmp/a.jpg' } }),
      timings: {
        fetchMs: 1.5,
        decodeMs: 2,
        detectMs: 3,
        alignMs: 0.25,
        embedMs: 4,
        storeMs: 0,
        searchMs: 0.125,
        drawMs: 0,
        uploadMs: 0,
        recordMs: 0.5,
        totalMs: 11.875,
      },
      matches: facecam ? [{ userId: req.userId, photoId: 'shot-1', faceId: 'shot-1/2', similarity: 0.625 }] : [],
    };
    callback(null, response);
  },
};

let server: Server;
let client: FacematchServiceClient;

beforeAll(async () => {
  server = new Server();
  server.addService(FacematchServiceService, echo);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  client = new FacematchServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
});

const processPhoto = (request: ProcessPhotoRequest): Promise<ProcessPhotoResponse> =>
  new Promise((resolve, reject) => {
    client.processPhoto(request, (error, response) => (error ? reject(error) : resolve(response)));
  });

describe('facematch.v1 wire contract', () => {
  it('round-trips an action shot: enum, nested messages, repeated landmarks and matches', async () => {
    const res = await processPhoto(
      ProcessPhotoRequest.create({
        photoId: 'shot-9',
        imageUrl: 's3://photos/shot-9.jpg',
        eventId: 'race-2026',
        kind: PhotoKind.PHOTO_KIND_ACTION_SHOT,
      }),
    );

    expect(res.photoId).toBe('shot-9');
    expect(res.eventId).toBe('race-2026');
    expect(res.kind).toBe(PhotoKind.PHOTO_KIND_ACTION_SHOT);
    expect([res.width, res.height]).toEqual([1280, 886]);
    expect(res.faces).toHaveLength(1);
    const face = res.faces[0]!;
    expect(face.faceId).toBe('shot-9/0');
    expect(face.box).toEqual({ x: 10.5, y: 20.25, width: 100, height: 120 });
    expect(face.score).toBe(0.875);
    expect(face.landmarks).toEqual([
      { x: 40, y: 60 },
      { x: 80, y: 60 },
      { x: 60, y: 80 },
      { x: 45, y: 100 },
      { x: 75, y: 100 },
    ]);
    expect(face.matches).toHaveLength(1);
    expect(face.matches[0]).toMatchObject({ userId: 'u-7', photoId: 'shot-9', faceId: 'shot-9/0' });
    // float on the wire: single precision.
    expect(face.matches[0]!.similarity).toBeCloseTo(0.7, 6);
    expect(res.annotated).toEqual({ bucket: 'annotated', key: 'shot-9.jpg', url: 'file:///tmp/a.jpg' });
    expect(res.timings?.totalMs).toBe(11.875);
    expect(res.timings?.storeMs).toBe(0);
    expect(res.matches).toEqual([]);
  });

  it('round-trips a facecam: absent optional message, defaults, top-level matches', async () => {
    const res = await processPhoto(
      ProcessPhotoRequest.create({
        photoId: 'selfie-1',
        imageUrl: 'https://cdn.example.org/s.jpg',
        kind: PhotoKind.PHOTO_KIND_FACECAM,
        userId: 'u-7',
      }),
    );

    expect(res.kind).toBe(PhotoKind.PHOTO_KIND_FACECAM);
    // Unset string on the wire reads back as "", which the server documents as the default event.
    expect(res.eventId).toBe('default');
    expect(res.annotated).toBeUndefined();
    expect(res.faces[0]!.matches).toEqual([]);
    expect(res.matches).toEqual([{ userId: 'u-7', photoId: 'shot-1', faceId: 'shot-1/2', similarity: 0.625 }]);
  });

  it('serves the paths photo-svc calls, whatever its language', () => {
    expect(Object.values(FacematchServiceService).map((m) => m.path)).toEqual([
      '/facematch.v1.FacematchService/ProcessPhoto',
      '/facematch.v1.FacematchService/ListUserPhotos',
      '/facematch.v1.FacematchService/SearchFaces',
      '/facematch.v1.FacematchService/DeletePhoto',
      '/facematch.v1.FacematchService/ForgetUser',
      '/facematch.v1.FacematchService/ListEventPhotos',
    ]);
  });
});
