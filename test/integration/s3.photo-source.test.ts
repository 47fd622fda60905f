/**
 * S3PhotoSource against a real S3 server (scripts/test-env up s3: versitygw): a PhotoBatch's `s3`
 * source lists every object under its prefix once, in key order, page by page, with the ids and
 * URLs the rest of the controller uses; it resumes from any position; and a missing bucket, refused
 * credentials or a server that is not there are the errors the batch runner acts on.
 *
 * The keys are the awkward ones a photographer's upload tool makes: spaces, non-ASCII, '+', '%',
 * quotes and brackets (escaped in the signed query), a purely numeric name, a "folder" placeholder.
 *
 * Reads FACEMATCH_S3_* (set by vitest.integration.config.ts from `scripts/test-env env`); without
 * them the file is skipped. The bucket is this run's own, removed at the end.
 */
import { createServer } from 'node:net';
import { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3PhotoSource } from '../../src/adapters/s3/s3.photo-source.js';
import type { S3Config } from '../../src/config/config.js';
import { photoIdFor } from '../../src/controller/photo-id.js';
import type { FacematchError } from '../../src/domain/errors.js';
import type { SourcePage } from '../../src/ports/photo-source.js';

const ENDPOINT = process.env.FACEMATCH_S3_ENDPOINT;
if (!ENDPOINT) console.warn('s3.photo-source.test.ts skipped: FACEMATCH_S3_ENDPOINT is not set (scripts/test-env up s3)');

const RUN = `it${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const BUCKET = `fm-${RUN}-source`.toLowerCase();
const PREFIX = 'shoot 1/';

/** Under the prefix: 24 photos (and one thing that is not) plus a folder placeholder. */
const INSIDE = [
  'shoot 1/0001',
  'shoot 1/1.50',
  'shoot 1/IMG_0001.JPG',
  'shoot 1/IMG_0002.JPG',
  'shoot 1/a 1.jpg',
  'shoot 1/a+b.jpg',
  'shoot 1/p 100%.jpg',
  "shoot 1/it's (1)!*.jpg",
  'shoot 1/a&b <c>.jpg',
  'shoot 1/café.jpg',
  'shoot 1/Zoë.png',
  'shoot 1/日本.jpg',
  'shoot 1/emoji 😀.webp',
  'shoot 1/notes.txt',
  'shoot 1/trail.jpg ',
  'shoot 1/ lead.jpg',
  'shoot 1/day 2/a.jpg',
  'shoot 1/day 2/b.jpg',
  'shoot 1/day 2/c.jpg',
  'shoot 1/day 3/x.jpg',
  'shoot 1/z1.jpg',
  'shoot 1/z2.jpg',
  'shoot 1/z3.jpg',
  'shoot 1/~tilde.jpg',
  'shoot 1/{brace}.jpg',
];
const PLACEHOLDER = 'shoot 1/day 2/';
const OUTSIDE = ['shoot 0/a.jpg', 'shoot 1.jpg', 'shoot 10/a.jpg', 'shoot 2/a.jpg', 'other.jpg'];
const ALL = [...INSIDE, PLACEHOLDER, ...OUTSIDE];

const utf8Order = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
const EXPECTED = [...INSIDE].sort(utf8Order);

function config(over: Partial<S3Config> = {}): S3Config {
  return {
    endpoint: ENDPOINT!,
    accessKey: process.env.FACEMATCH_S3_ACCESS_KEY ?? '',
    secretKey: process.env.FACEMATCH_S3_SECRET_KEY ?? '',
    region: process.env.FACEMATCH_S3_REGION ?? 'us-east-1',
    presignSeconds: 3600,
    ...over,
  };
}

function rawClient(): Client {
  const url = new URL(ENDPOINT!);
  return new Client({
    endPoint: url.hostname,
    port: Number(url.port),
    useSSL: false,
    accessKey: config().accessKey,
    secretKey: config().secretKey,
    region: config().region,
    pathStyle: true,
  });
}

const never = new AbortController().signal;

/** Every page from `token` on, as the batch runner reads them. */
async function pages(source: S3PhotoSource, token?: string): Promise<SourcePage[]> {
  const all: SourcePage[] = [];
  for (;;) {
    const page = await source.list(token, never);
    all.push(page);
    if (page.next === undefined) return all;
    expect(all.length).toBeLessThan(100);
    token = page.next;
  }
}

async function failure(promise: Promise<unknown>): Promise<FacematchError> {
  return promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (error: unknown) => error as FacematchError,
  );
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe.skipIf(!ENDPOINT)(`S3PhotoSource on S3 at ${ENDPOINT ?? '(unset)'}`, () => {
  beforeAll(async () => {
    const client = rawClient();
    await client.makeBucket(BUCKET, config().region);
    for (const key of ALL) {
      // versitygw keeps a bucket as files: a folder placeholder must be empty.
      await client.putObject(BUCKET, key, Buffer.from(key.endsWith('/') ? '' : `bytes of ${key}`));
    }
  });

  afterAll(async () => {
    // The keys are known: minio's own listing cannot read a '%' key from versitygw (see the source's comment).
    const client = rawClient();
    try {
      await client.removeObjects(BUCKET, ALL);
      await client.removeBucket(BUCKET);
    } catch (error) {
      console.warn(`could not remove bucket ${BUCKET}: ${String(error)}`);
    }
  });

  it('lists every photo of the prefix once, in key order, 10 a page, with its id and URL', async () => {
    const source = S3PhotoSource.open(config(), BUCKET, PREFIX, { pageSize: 10 });
    const all = await pages(source);
    const photos = all.flatMap((p) => p.photos);
    expect(photos.map((p) => p.position)).toEqual(EXPECTED);
    for (const photo of photos) {
      expect(photo.photoId).toBe(photoIdFor(`${BUCKET}/${photo.position}`));
      expect(photo.imageUrl).toBe(`s3://${BUCKET}/${photo.position}`);
    }
    // 26 keys (the placeholder among them) make pages of 10, 10 and 6; each token is its page's last key.
    const keys = [...INSIDE, PLACEHOLDER].sort(utf8Order);
    expect(all.map((p) => p.next)).toEqual([keys[9], keys[19], undefined]);
    expect(all.map((p) => p.photos.map((photo) => photo.position))).toEqual(
      [keys.slice(0, 10), keys.slice(10, 20), keys.slice(20)].map((page) => page.filter((k) => k !== PLACEHOLDER)),
    );
    expect(photos.find((p) => p.position === PLACEHOLDER)).toBeUndefined();
    // Not an image, still listed: the service records it as failed.
    expect(photos.map((p) => p.position)).toContain('shoot 1/notes.txt');
  });

  it('resumes from any position with exactly the photos after it', async () => {
    const source = S3PhotoSource.open(config(), BUCKET, PREFIX, { pageSize: 10 });
    for (const at of [3, 12, EXPECTED.length - 1]) {
      const rest = (await pages(source, EXPECTED[at])).flatMap((p) => p.photos.map((photo) => photo.position));
      expect(rest).toEqual(EXPECTED.slice(at + 1));
    }
    // From the placeholder (a page may end on it): the keys under it and after.
    const afterPlaceholder = (await pages(source, PLACEHOLDER)).flatMap((p) => p.photos.map((photo) => photo.position));
    expect(afterPlaceholder).toEqual(EXPECTED.filter((k) => utf8Order(k, PLACEHOLDER) > 0));
  });

  it('gives an empty prefix one empty page without next', async () => {
    const source = S3PhotoSource.open(config(), BUCKET, 'no such shoot/', { pageSize: 10 });
    expect(await source.list(undefined, never)).toEqual({ photos: [] });
  });

  it('a missing bucket is SOURCE_NOT_FOUND', async () => {
    const source = S3PhotoSource.open(config(), `${BUCKET}-missing`, PREFIX);
    const error = await failure(source.list(undefined, never));
    expect(error.code).toBe('SOURCE_NOT_FOUND');
    expect(error.message).toContain(`${BUCKET}-missing`);
  });

  it('refused credentials are BACKEND_UNAVAILABLE', async () => {
    const source = S3PhotoSource.open(config({ secretKey: 'not-the-secret' }), BUCKET, PREFIX);
    expect((await failure(source.list(undefined, never))).code).toBe('BACKEND_UNAVAILABLE');
  });

  it('a server that is not there is BACKEND_UNAVAILABLE naming it, at once', async () => {
    const port = await freePort();
    const source = S3PhotoSource.open(config({ endpoint: `http://127.0.0.1:${port}` }), BUCKET, PREFIX);
    const t0 = performance.now();
    const error = await failure(source.list(undefined, never));
    expect(error.code).toBe('BACKEND_UNAVAILABLE');
    expect(error.message).toContain(`S3 at http://127.0.0.1:${port}, bucket ${BUCKET}`);
    expect(performance.now() - t0).toBeLessThan(5000);
  });
});
