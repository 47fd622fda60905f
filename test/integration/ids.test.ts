/**
 * Ids at the edges of their grammar (src/domain/ids.ts) through the whole service on the real
 * servers (`scripts/test-env`: Milvus, the S3 gateway, PostgreSQL; a server that is down is
 * replaced by its embedded store): the longest ids, made of every character allowed, are enrolled,
 * matched, listed, searched, deleted and forgotten without a failure, so an id that passes the
 * check never fails later. Ids the earlier grammar let through and a store refused after the
 * fetch, the analysis and the vector write are refused before the photo is read.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Serving } from '../../src/bin/serve.js';
import { MAX_ID_LENGTH } from '../../src/domain/ids.js';
import { PhotoKind, SearchCollection } from '../../src/gen/facematch/v1/facematch.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from '../../e2e/support.js';
import { testConfig } from '../support/shared.js';

/** `prefix` padded with `fill` and closed by `end` to exactly MAX_ID_LENGTH characters. */
const longest = (prefix: string, fill: string, end: string): string => prefix + fill.repeat(MAX_ID_LENGTH - prefix.length - end.length) + end;

const run = `${Date.now().toString(36)}`;
const USER = longest(`U${run}.user_`, 'u', '-._');
const EVENT = longest(`E${run}-event.`, 'e', '_.-');
const SELFIE = longest(`S${run}_selfie-`, 's', '.');
const SHOT = longest(`A${run}.shot_`, 'a', '..');

let dataDir: string;
let photos: Awaited<ReturnType<typeof photoServer>>;
let serving: Serving;
let c: Client;
let rpc: ReturnType<typeof api>;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-ids-'));
  photos = await photoServer();
  serving = await serve(testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE }), createLogger('warn'));
  c = client(serving.grpcPort);
  rpc = api(c);
});
afterAll(async () => {
  c?.close();
  await serving?.stop();
  await photos?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('ids at the edge of the grammar, on the configured stores', () => {
  it('are enrolled, matched, listed, searched, deleted and forgotten', async () => {
    for (const id of [USER, EVENT, SELFIE, SHOT]) expect(id).toHaveLength(MAX_ID_LENGTH);
    const { vectorStore, objectStore, matchStore } = serving.app.config.stores;
    console.info(`stores: vectors ${vectorStore}, objects ${objectStore}, matches ${matchStore}`);
    const selfie = await rpc.processPhoto({
      photoId: SELFIE,
      imageUrl: `${photos.base}/faces/facerec_obama/obama.jpg`,
      eventId: EVENT,
      kind: PhotoKind.PHOTO_KIND_FACECAM,
      userId: USER,
    });
    expect(selfie.annotated?.key).toBe(`annotated/${EVENT}/${SELFIE}.jpg`);
    const shot = await rpc.processPhoto({
      photoId: SHOT,
      imageUrl: `${photos.base}/groups/facerec_obama_and_biden.jpg`,
      eventId: EVENT,
      kind: PhotoKind.PHOTO_KIND_ACTION_SHOT,
      userId: '',
    });
    expect(shot.faces.flatMap((f) => f.matches.map((m) => m.userId))).toEqual([USER]);
    expect(shot.faces[0]!.faceId).toBe(`${SHOT}/0`);
    expect((await rpc.listUserPhotos({ userId: USER, eventId: EVENT })).photos.map((p) => p.photoId)).toEqual([SHOT]);
    const users = await rpc.searchFaces({
      imageUrl: `${photos.base}/faces/facerec_obama/obama2.jpg`,
      eventId: EVENT,
      limit: 1,
      collection: SearchCollection.SEARCH_COLLECTION_USERS,
    });
    expect(users.matches.map((m) => [m.userId, m.photoId])).toEqual([[USER, SELFIE]]);
    const faces = await rpc.searchFaces({
      imageUrl: `${photos.base}/faces/facerec_obama/obama2.jpg`,
      eventId: EVENT,
      limit: 1,
      collection: SearchCollection.SEARCH_COLLECTION_ACTION_SHOTS,
    });
    expect(faces.matches.map((m) => m.photoId)).toEqual([SHOT]);
    expect(await rpc.deletePhoto({ photoId: SHOT })).toEqual({ deleted: true });
    expect(await rpc.forgetUser({ userId: USER })).toMatchObject({ deletedSamples: 1, deletedObjects: 1 });
    // The facecam went with its user.
    expect(await rpc.deletePhoto({ photoId: SELFIE })).toEqual({ deleted: false });
    expect(await rpc.listUserPhotos({ userId: USER, eventId: '' })).toEqual({ photos: [] });
  });

  it('refuses, before reading the photo, the ids that used to fail at the upload', async () => {
    const before = photos.hits();
    // ':' and '@' are in no object key; a 197-200 character photo id made a key segment over 200.
    for (const [photoId, eventId] of [
      ['a:b', ''],
      ['a@b', ''],
      ['p'.repeat(200), ''],
      ['ok', 'event:2026'],
      ['ok', `e${'v'.repeat(MAX_ID_LENGTH)}`],
    ] as const) {
      const err = await rpc
        .processPhoto({ photoId, imageUrl: `${photos.base}/groups/facerec_obama_and_biden.jpg`, eventId, kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' })
        .then(
          () => undefined,
          (e: ServiceError) => e,
        );
      expect(err?.code, `${photoId} ${eventId}`).toBe(status.INVALID_ARGUMENT);
    }
    expect(photos.hits()).toBe(before);
  });
});
