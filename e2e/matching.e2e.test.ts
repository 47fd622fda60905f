/**
 * The matching service end to end over a real gRPC socket: real models, real photos served over
 * loopback HTTP, embedded stores in a temp data directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { serve, type Serving } from '../src/bin/serve.js';
import type { Config } from '../src/config/config.js';
import { PhotoKind, SearchCollection, type ProcessPhotoResponse } from '../src/gen/facematch/v1/facematch.js';
import { STAGES, stageSpan, SPAN } from '../src/telemetry/attributes.js';
import { createLogger } from '../src/telemetry/logger.js';
import { inspectStorage, type StorageInspector } from '../test/support/inspect.js';
import { pngHeader } from '../test/support/png-bomb.js';
import { GROUP_PEOPLE, identities, KNOWN_MISSES, testConfig } from '../test/support/shared.js';
import { api, client, LOOPBACK_SERVICE, photoServer, type Client } from './support.js';

const EXPECTED = GROUP_PEOPLE;
const NOBODY = ['insightface-rest_lumia.jpg', 'hpc203_selfie.jpg', 'hpc203_s_l.jpg'];

let dataDir: string;
let config: Config;
/** What still names a user, read from the stores' backing directly (test/support/inspect.ts). */
let storage: StorageInspector | undefined;
let photos: Awaited<ReturnType<typeof photoServer>>;
let serving: Serving;
let c: Client;
let rpc: ReturnType<typeof api>;
const spans = new InMemorySpanExporter();

const start = async (): Promise<void> => {
  config = testConfig({ FACEMATCH_DATA_DIR: dataDir, ...LOOPBACK_SERVICE });
  serving = await serve(config, createLogger('warn'), { exporter: spans });
  c = client(serving.grpcPort);
  rpc = api(c);
};
const stop = async (): Promise<void> => {
  c.close();
  await serving.stop();
};

const process = (photoId: string, file: string, kind: PhotoKind, userId = ''): Promise<ProcessPhotoResponse> =>
  rpc.processPhoto({ photoId, imageUrl: `${photos.base}/${file}`, eventId: 'e2e', kind, userId });
const rel = (abs: string): string => abs.split(`${path.sep}testdata${path.sep}`)[1]!;
const grpcError = async (p: Promise<unknown>): Promise<ServiceError> => {
  try {
    await p;
  } catch (error) {
    return error as ServiceError;
  }
  throw new Error('expected the call to fail');
};

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'facematch-e2e-'));
  photos = await photoServer({ '/bomb.png': pngHeader(50_000, 50_000) });
  await start();
  storage = inspectStorage(config);
});
afterAll(async () => {
  await storage?.close();
  await stop();
  await photos.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('selfies and action shots over gRPC', () => {
  const found = new Map<string, string[]>();

  it('enrols the first photo of each of the 23 identities', async () => {
    for (const { id, files } of identities()) {
      const res = await process(`selfie-${id}`, rel(files[0]!), PhotoKind.PHOTO_KIND_FACECAM, id);
      expect(res.faces).toHaveLength(1);
      expect(res.annotated?.key).toBe(`annotated/e2e/selfie-${id}.jpg`);
    }
  });

  it('finds the listed people in the group photos and nobody in the crowds of strangers', async () => {
    for (const file of [...Object.keys(EXPECTED), ...NOBODY]) {
      const res = await process(`shot-${file}`, `groups/${file}`, PhotoKind.PHOTO_KIND_ACTION_SHOT);
      found.set(file, res.faces.flatMap((f) => f.matches.map((m) => m.userId)));
      if (file === 'insightface_t1.jpg') {
        const leftmost = [...res.faces].sort((x, y) => x.box!.x - y.box!.x)[0]!;
        expect(leftmost.matches.map((m) => m.userId)).toEqual(['deepface_id04']);
      }
    }
    const report = [...found].map(([f, users]) => `${f}: ${users.join(', ') || '-'}`).join('\n');
    console.info(`matches per group photo:\n${report}`);
    const missing: string[] = [];
    const wrong: string[] = [];
    for (const [file, people] of Object.entries(EXPECTED)) {
      for (const p of people) if (!found.get(file)!.includes(p)) missing.push(`${p} in ${file}`);
      for (const u of found.get(file)!) if (!people.includes(u)) wrong.push(`${u} in ${file}`);
    }
    for (const file of NOBODY) for (const u of found.get(file)!) wrong.push(`${u} in ${file}`);
    expect(wrong).toEqual([]);
    expect(missing.filter((m) => !KNOWN_MISSES.includes(m))).toEqual([]);
  });

  // Expected to fail with the test embedder; when a better pack finds them, this turns red to say so.
  it.fails('finds bearded Raj and Leonard in faceapi_bbt1 (a known miss of the test embedder)', () => {
    const bbt1 = found.get('faceapi_bbt1.jpg') ?? [];
    expect(bbt1).toEqual(expect.arrayContaining(['faceapi_raj', 'faceapi_leonard']));
  });

  it('stores the annotated copy: the photo as JPEG, matched faces boxed in green', async () => {
    const res = await process('shot-facerec_obama_and_biden.jpg', 'groups/facerec_obama_and_biden.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT);
    expect(res.annotated?.key).toBe('annotated/e2e/shot-facerec_obama_and_biden.jpg.jpg');
    const jpeg = await serving.app.stores.objects.get(res.annotated!.key);
    const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([2000, 1428]);
    expect((await sharp(jpeg).metadata()).format).toBe('jpeg');
    const matched = res.faces.filter((f) => f.matches.length > 0);
    expect(matched).toHaveLength(2);
    for (const f of matched) {
      // The middle of the box's left edge is the highlight green (#22c55e), give or take JPEG.
      const i = (Math.round(f.box!.y + f.box!.height / 2) * info.width + Math.round(f.box!.x)) * info.channels;
      const [r, g, b] = [data[i]!, data[i + 1]!, data[i + 2]!];
      expect(Math.abs(r - 0x22) + Math.abs(g - 0xc5) + Math.abs(b - 0x5e)).toBeLessThan(90);
    }
  });

  it('lists each photo of a user once, through ListUserPhotos', async () => {
    const res = await rpc.listUserPhotos({ userId: 'facerec_obama', eventId: 'e2e' });
    const ids = res.photos.map((p) => p.photoId).sort();
    expect(ids).toEqual(['shot-facerec_obama_and_biden.jpg', 'shot-facerec_two_people.jpg']);
  });

  it('a user enrolled after their photos were processed finds those photos', async () => {
    await rpc.forgetUser({ userId: 'facerec_kit_harington' });
    expect((await rpc.listUserPhotos({ userId: 'facerec_kit_harington', eventId: '' })).photos).toEqual([]);
    const kit = identities().find((p) => p.id === 'facerec_kit_harington')!;
    const res = await process('selfie-kit-again', rel(kit.files[1]!), PhotoKind.PHOTO_KIND_FACECAM, 'facerec_kit_harington');
    expect(res.matches.map((m) => m.photoId)).toContain('shot-facerec_kit_with_rose.jpg');
    const listed = await rpc.listUserPhotos({ userId: 'facerec_kit_harington', eventId: 'e2e' });
    expect(listed.photos.map((p) => p.photoId)).toEqual(['shot-facerec_kit_with_rose.jpg']);
  });

  it('reprocessing a photo replaces its faces and matches: no duplicates', async () => {
    const again = await process('shot-facerec_two_people.jpg', 'groups/facerec_two_people.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT);
    expect(again.faces).toHaveLength(2);
    const obama = await rpc.listUserPhotos({ userId: 'facerec_obama', eventId: 'e2e' });
    expect(obama.photos.filter((p) => p.photoId === 'shot-facerec_two_people.jpg')).toHaveLength(1);
    const stored = await serving.app.stores.matches.getPhoto('shot-facerec_two_people.jpg');
    expect(stored?.faces).toHaveLength(2);
    expect(stored?.matches).toHaveLength(2);
  });

  it('searches by face', async () => {
    const obama = identities().find((p) => p.id === 'facerec_obama')!;
    const res = await rpc.searchFaces({
      imageUrl: `${photos.base}/${rel(obama.files[2]!)}`,
      eventId: 'e2e',
      limit: 3,
      collection: SearchCollection.SEARCH_COLLECTION_USERS,
    });
    expect(res.matches[0]?.userId).toBe('facerec_obama');
  });

  it('traces one span per pipeline stage under the request span', () => {
    const all = spans.getFinishedSpans();
    const request = all.find((s) => s.name === SPAN.processPhoto && s.attributes['facematch.photo_kind'] === 'ACTION_SHOT');
    expect(request).toBeDefined();
    const children = all.filter((s) => s.parentSpanContext?.spanId === request!.spanContext().spanId).map((s) => s.name);
    expect([...new Set(children)].sort()).toEqual(STAGES.map(stageSpan).sort());
  });

  it('forgetting a user leaves nothing of them in any store', async () => {
    const userId = 'faceapi_sheldon';
    const samples = await serving.app.stores.matches.samplesOfUser(userId);
    expect(samples.length).toBeGreaterThan(0);
    const res = await rpc.forgetUser({ userId });
    expect(res.deletedSamples).toBe(1);
    expect(await storage!.vectorsOfUser(userId)).toBe(0);
    expect(await storage!.rowsNamingUser(userId)).toBe(0);
    for (const s of samples) expect(await serving.app.stores.objects.exists(s.annotatedKey!)).toBe(false);
    expect((await rpc.listUserPhotos({ userId, eventId: '' })).photos).toEqual([]);
    // Others are untouched.
    expect((await rpc.listUserPhotos({ userId: 'faceapi_howard', eventId: 'e2e' })).photos.length).toBeGreaterThan(0);
  });

  it('keeps everything across a restart on the same data directory', async () => {
    const before = await rpc.listUserPhotos({ userId: 'facerec_biden', eventId: 'e2e' });
    await stop();
    await start();
    const after = await rpc.listUserPhotos({ userId: 'facerec_biden', eventId: 'e2e' });
    expect(after.photos).toEqual(before.photos);
    expect(after.photos.length).toBe(2);
  });
});

describe('bad requests', () => {
  const codeOf = async (p: Promise<unknown>): Promise<[number, string]> => {
    const e = await grpcError(p);
    return [e.code, String(e.metadata.get('facematch-error-code')[0])];
  };

  it('missing ids, unknown kind, bad URLs and bad images get a clear status and write nothing', async () => {
    expect(await codeOf(process('', 'groups/insightface_t1.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT))).toEqual([status.INVALID_ARGUMENT, 'INVALID_ARGUMENT']);
    expect(await codeOf(process('x1', 'groups/insightface_t1.jpg', PhotoKind.PHOTO_KIND_UNSPECIFIED))).toEqual([status.INVALID_ARGUMENT, 'INVALID_ARGUMENT']);
    expect(await codeOf(process('x2', 'faces/facerec_obama/obama.jpg', PhotoKind.PHOTO_KIND_FACECAM, ''))).toEqual([status.INVALID_ARGUMENT, 'INVALID_ARGUMENT']);
    expect(await codeOf(rpc.processPhoto({ photoId: 'x3', imageUrl: 'ftp://example.org/a.jpg', eventId: '', kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' }))).toEqual([status.INVALID_ARGUMENT, 'INVALID_ARGUMENT']);
    expect(await codeOf(rpc.processPhoto({ photoId: 'x4', imageUrl: 'http://10.1.2.3/a.jpg', eventId: '', kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' }))).toEqual([status.INVALID_ARGUMENT, 'SOURCE_FORBIDDEN']);
    expect(await codeOf(rpc.processPhoto({ photoId: 'x5', imageUrl: '/etc/passwd', eventId: '', kind: PhotoKind.PHOTO_KIND_ACTION_SHOT, userId: '' }))).toEqual([status.INVALID_ARGUMENT, 'INVALID_ARGUMENT']);
    expect(await codeOf(process('x6', 'text.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT))).toEqual([status.INVALID_ARGUMENT, 'IMAGE_UNSUPPORTED']);
    expect(await codeOf(process('x7', 'no/such.jpg', PhotoKind.PHOTO_KIND_ACTION_SHOT))).toEqual([status.FAILED_PRECONDITION, 'SOURCE_NOT_FOUND']);
    expect(await codeOf(process('x9', 'bomb.png', PhotoKind.PHOTO_KIND_ACTION_SHOT))).toEqual([status.RESOURCE_EXHAUSTED, 'IMAGE_TOO_LARGE']);
    for (const id of ['x1', 'x2', 'x3', 'x4', 'x5', 'x6', 'x7', 'x9']) expect(await serving.app.stores.matches.getPhoto(id)).toBeUndefined();
  });

  it('a selfie without a face is FAILED_PRECONDITION and enrols nothing', async () => {
    expect(await codeOf(process('x8', 'blank.png', PhotoKind.PHOTO_KIND_FACECAM, 'nobody'))).toEqual([status.FAILED_PRECONDITION, 'NO_FACE']);
    expect(await serving.app.stores.matches.getPhoto('x8')).toBeUndefined();
    expect(await storage!.vectorsOfUser('nobody')).toBe(0);
  });
});
