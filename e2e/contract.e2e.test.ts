/**
 * One contract, two edges: the same scenario over gRPC and over REST (the proto3 JSON mapping of
 * the same RPCs) gets the same answers and the same error codes. Real models and photos, embedded
 * stores, one service; the scenario leaves no trace, so the second edge starts where the first did.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Serving } from '../src/bin/serve.js';
import type { ErrorCode } from '../src/domain/errors.js';
import { createLogger } from '../src/telemetry/logger.js';
import { grpcStatus } from '../src/transport/grpc/grpc-status.js';
import { httpStatus } from '../src/transport/http/http-status.js';
import {
  DeletePhotoRequest,
  DeletePhotoResponse,
  ForgetUserRequest,
  ForgetUserResponse,
  ListUserPhotosRequest,
  ListUserPhotosResponse,
  type MessageFns,
  ProcessPhotoRequest,
  ProcessPhotoResponse,
  SearchFacesRequest,
  SearchFacesResponse,
} from '../src/gen/facematch/v1/facematch.js';
import { testConfig } from '../test/support/shared.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from './support.js';

/** The generated messages of each RPC. */
const CODECS = {
  processPhoto: [ProcessPhotoRequest, ProcessPhotoResponse],
  listUserPhotos: [ListUserPhotosRequest, ListUserPhotosResponse],
  searchFaces: [SearchFacesRequest, SearchFacesResponse],
  deletePhoto: [DeletePhotoRequest, DeletePhotoResponse],
  forgetUser: [ForgetUserRequest, ForgetUserResponse],
} as const;
type Name = keyof typeof CODECS;
const codecs = (name: Name) => CODECS[name] as unknown as [MessageFns<unknown>, MessageFns<unknown>];
/** What a caller sees: the answer (proto3 JSON, timings left out) or the error code and message. */
type Outcome = { ok: unknown } | { code: ErrorCode; message: string };
type Edge = (name: Name, json: Record<string, unknown>) => Promise<Outcome>;

let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
let serving: Serving;
let c: Client;
let closedPort: number;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-contract-'));
  photos = await photoServer();
  serving = await serve(testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE }), createLogger('error'));
  c = client(serving.grpcPort);
  // A port that nothing listens on: an unreachable source.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
});
afterAll(async () => {
  c?.close();
  await serving?.stop();
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

const withoutTimings = (json: unknown): unknown => {
  if (typeof json !== 'object' || json === null) return json;
  const { timings: _, ...rest } = json as Record<string, unknown>;
  return rest;
};

/** gRPC: the JSON request as the generated message, the answer as its proto3 JSON. */
const grpcEdge: Edge = async (name, json) => {
  const [request, response] = codecs(name);
  const call = api(c)[name] as (req: unknown) => Promise<unknown>;
  try {
    const res = await call(request.fromJSON(json));
    return { ok: withoutTimings(response.toJSON(res)) };
  } catch (error) {
    const e = error as ServiceError;
    const code = e.metadata.get('facematch-error-code')[0] as ErrorCode;
    expect(e.code, `${name} ${code}`).toBe(grpcStatus(code));
    return { code, message: e.details };
  }
};

const seg = (v: unknown): string => encodeURIComponent(typeof v === 'string' ? v : '');
const ROUTES: Record<Name, (json: Record<string, unknown>) => [string, string, unknown?]> = {
  processPhoto: (j) => ['POST', '/v1/photos', j],
  listUserPhotos: (j) => ['GET', `/v1/users/${seg(j.userId)}/photos${j.eventId ? `?eventId=${seg(j.eventId)}` : ''}`],
  searchFaces: (j) => ['POST', '/v1/faces:search', j],
  deletePhoto: (j) => ['DELETE', `/v1/photos/${seg(j.photoId)}`],
  forgetUser: (j) => ['DELETE', `/v1/users/${seg(j.userId)}`],
};

/** REST: the same JSON as the body (or the path), the answer read back as the message's proto3 JSON. */
const restEdge: Edge = async (name, json) => {
  const [method, route, body] = ROUTES[name](json);
  const res = await fetch(`http://127.0.0.1:${serving.httpPort}${route}`, {
    method,
    ...(body ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
  });
  const answer = (await res.json()) as Record<string, unknown>;
  if (res.ok) {
    const [, response] = codecs(name);
    // Read as a client would, and written as toJSON writes (defaults left out) to compare.
    return { ok: withoutTimings(response.toJSON(response.fromJSON(answer))) };
  }
  const code = answer.code as ErrorCode;
  expect(res.status, `${name} ${code}`).toBe(httpStatus(code));
  return { code, message: answer.message as string };
};

/** The scenario: every RPC, then the bad inputs. Returns what the caller saw at each step. */
async function scenario(call: Edge): Promise<Record<string, Outcome>> {
  const photo = (file: string) => `${photos.base}/${file}`;
  const out: Record<string, Outcome> = {};
  const step = async (label: string, name: Name, json: Record<string, unknown>) => {
    out[label] = await call(name, json);
  };
  await step('enrol a selfie', 'processPhoto', {
    photoId: 'contract-selfie',
    imageUrl: photo('faces/facerec_obama/obama.jpg'),
    eventId: 'contract',
    kind: 'PHOTO_KIND_FACECAM',
    userId: 'contract-obama',
  });
  await step('process a group photo', 'processPhoto', {
    photoId: 'contract-shot',
    imageUrl: photo('groups/facerec_obama_and_biden.jpg'),
    eventId: 'contract',
    kind: 'PHOTO_KIND_ACTION_SHOT',
  });
  await step("list the user's photos", 'listUserPhotos', { userId: 'contract-obama' });
  await step("list the user's photos in the event", 'listUserPhotos', { userId: 'contract-obama', eventId: 'contract' });
  await step('search users', 'searchFaces', {
    imageUrl: photo('faces/facerec_obama/obama2.jpg'),
    eventId: 'contract',
    collection: 'SEARCH_COLLECTION_USERS',
  });
  await step('search action shots', 'searchFaces', {
    imageUrl: photo('faces/facerec_biden/biden.jpg'),
    eventId: 'contract',
    limit: 1,
    collection: 'SEARCH_COLLECTION_ACTION_SHOTS',
  });
  await step('delete the group photo', 'deletePhoto', { photoId: 'contract-shot' });
  await step('delete it again', 'deletePhoto', { photoId: 'contract-shot' });
  await step('forget the user', 'forgetUser', { userId: 'contract-obama' });
  await step('forget the user again', 'forgetUser', { userId: 'contract-obama' });
  await step('delete the selfie', 'deletePhoto', { photoId: 'contract-selfie' });
  await step('list after forgetting', 'listUserPhotos', { userId: 'contract-obama' });

  const shot = { photoId: 'contract-bad', imageUrl: photo('groups/facerec_obama_and_biden.jpg'), kind: 'PHOTO_KIND_ACTION_SHOT' };
  await step('missing photo id', 'processPhoto', { ...shot, photoId: '' });
  await step('missing user id to list', 'listUserPhotos', { userId: '' });
  await step('missing kind', 'processPhoto', { ...shot, kind: 'PHOTO_KIND_UNSPECIFIED' });
  await step('facecam without user', 'processPhoto', { ...shot, kind: 'PHOTO_KIND_FACECAM' });
  await step('missing collection', 'searchFaces', { imageUrl: shot.imageUrl });
  await step('oversized photo id', 'processPhoto', { ...shot, photoId: 'p'.repeat(100_000) });
  await step('oversized image url', 'processPhoto', { ...shot, imageUrl: photo(`${'x'.repeat(5000)}.jpg`) });
  await step('id out of the grammar', 'deletePhoto', { photoId: 'a:b' });
  await step('no face in a selfie', 'processPhoto', { ...shot, imageUrl: photo('blank.png'), kind: 'PHOTO_KIND_FACECAM', userId: 'contract-blank' });
  await step('no face to search', 'searchFaces', { imageUrl: photo('blank.png'), collection: 'SEARCH_COLLECTION_USERS' });
  await step('not an image', 'processPhoto', { ...shot, imageUrl: photo('text.jpg') });
  await step('missing source', 'processPhoto', { ...shot, imageUrl: photo('faces/nobody.jpg') });
  await step('unreachable source', 'processPhoto', { ...shot, imageUrl: `http://127.0.0.1:${closedPort}/a.jpg` });
  await step('forbidden source', 'processPhoto', { ...shot, imageUrl: 'http://10.1.2.3/a.jpg' });
  return out;
}

describe('one scenario over gRPC and REST', () => {
  let overGrpc: Record<string, Outcome>;
  let overRest: Record<string, Outcome>;

  it('gives the expected answers over gRPC', async () => {
    overGrpc = await scenario(grpcEdge);
    const ok = (label: string) => (overGrpc[label] as { ok: Record<string, unknown> }).ok;
    const code = (label: string) => (overGrpc[label] as { code: string }).code;
    expect(ok('enrol a selfie')).toMatchObject({ photoId: 'contract-selfie', kind: 'PHOTO_KIND_FACECAM' });
    const shot = ok('process a group photo') as { faces: { matches?: { userId: string }[] }[] };
    expect(shot.faces.flatMap((f) => (f.matches ?? []).map((m) => m.userId))).toEqual(['contract-obama']);
    expect(ok("list the user's photos")).toMatchObject({ photos: [{ photoId: 'contract-shot', eventId: 'contract' }] });
    expect(ok('search users')).toMatchObject({ matches: [{ userId: 'contract-obama', photoId: 'contract-selfie' }] });
    expect(ok('search action shots')).toMatchObject({ matches: [{ photoId: 'contract-shot' }] });
    expect(ok('delete the group photo')).toEqual({ deleted: true });
    expect(ok('delete it again')).toEqual({});
    expect(ok('forget the user')).toMatchObject({ deletedSamples: 1 });
    expect(ok('forget the user again')).toEqual({});
    expect(ok('list after forgetting')).toEqual({});
    for (const label of [
      'missing photo id',
      'missing user id to list',
      'missing kind',
      'facecam without user',
      'missing collection',
      'oversized photo id',
      'oversized image url',
      'id out of the grammar',
    ]) {
      expect(code(label), label).toBe('INVALID_ARGUMENT');
    }
    expect(code('no face in a selfie')).toBe('NO_FACE');
    expect(code('no face to search')).toBe('NO_FACE');
    expect(code('not an image')).toBe('IMAGE_UNSUPPORTED');
    expect(code('missing source')).toBe('SOURCE_NOT_FOUND');
    expect(code('unreachable source')).toBe('SOURCE_UNREACHABLE');
    expect(code('forbidden source')).toBe('SOURCE_FORBIDDEN');
    for (const [label, outcome] of Object.entries(overGrpc)) {
      if ('message' in outcome) expect(outcome.message.length, label).toBeLessThan(300);
    }
  });

  it('gives the same answers and the same errors over REST', async () => {
    overRest = await scenario(restEdge);
    expect(overRest).toEqual(overGrpc);
  });
});
