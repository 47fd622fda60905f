/**
 * S3ObjectStore against a real S3 server (scripts/test-env up s3: versitygw): the ObjectStore
 * contract, then what only S3 must show — the bucket is created on start, objects keep their
 * Content-Type, locations are presigned GET URLs that a plain HTTP client can fetch until they
 * expire, refused credentials are BACKEND_UNAVAILABLE — and when the server stops, calls fail fast
 * with BACKEND_UNAVAILABLE naming it, and the same store recovers once it is back.
 *
 * Reads FACEMATCH_S3_* (set by vitest.integration.config.ts from `scripts/test-env env`); without
 * them the file is skipped. Every store here has a bucket of this run's own, removed at the end.
 */
import { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3ObjectStore } from '../../src/adapters/s3/s3.object-store.js';
import type { S3Config } from '../../src/config/config.js';
import { objectStoreContract } from '../contract/object-store.contract.js';
import { testEnv, timed } from './test-env.js';

const ENDPOINT = process.env.FACEMATCH_S3_ENDPOINT;
if (!ENDPOINT) console.warn('s3.object-store.test.ts skipped: FACEMATCH_S3_ENDPOINT is not set (scripts/test-env up s3)');

const RUN = `it${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

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

/** A client of its own, to look at the server behind the store's back. */
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

/** A client error (403 Forbidden from S3, 400 from some servers): not served, not a server fault. */
const refused = (status: number): boolean => status >= 400 && status < 500 && status !== 404;

const buckets = new Set<string>();
function bucketName(what: string): string {
  const name = `fm-${RUN}-${what}`.toLowerCase();
  buckets.add(name);
  return name;
}

async function removeBucket(client: Client, bucket: string): Promise<void> {
  if (!(await client.bucketExists(bucket))) return;
  const names: string[] = [];
  for await (const item of client.listObjectsV2(bucket, '', true)) {
    const name = (item as { name?: string }).name;
    if (name) names.push(name);
  }
  if (names.length > 0) await client.removeObjects(bucket, names);
  await client.removeBucket(bucket);
}

describe.skipIf(!ENDPOINT)(`S3 at ${ENDPOINT ?? '(unset)'}`, () => {
  afterAll(async () => {
    const client = rawClient();
    for (const bucket of buckets) await removeBucket(client, bucket).catch((error: unknown) => console.warn(`could not remove bucket ${bucket}: ${String(error)}`));
  });

  objectStoreContract('S3', () => Promise.resolve({ store: S3ObjectStore.open(config(), bucketName('contract')), cleanup: () => Promise.resolve() }));

  describe('beyond the contract', () => {
    let store: S3ObjectStore;
    const bucket = bucketName('more');
    beforeAll(() => {
      store = S3ObjectStore.open(config(), bucket);
    });

    it('init creates the bucket when missing, once, even when replicas start together', async () => {
      const raw = rawClient();
      expect(await raw.bucketExists(bucket)).toBe(false);
      await expect(store.ping()).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining(`bucket ${bucket}`) as string });
      await Promise.all([store.init(), S3ObjectStore.open(config(), bucket).init(), S3ObjectStore.open(config(), bucket).init()]);
      expect(await raw.bucketExists(bucket)).toBe(true);
      await store.init();
      await store.ping();
    });

    it('keeps the Content-Type, and the location is a presigned URL that plain HTTP can GET', async () => {
      const bytes = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) % 256);
      const location = await store.put(`${RUN}/annotated/p1.jpg`, bytes, 'image/jpeg');
      expect(location).toMatchObject({ bucket, key: `${RUN}/annotated/p1.jpg` });
      expect(location.url).toMatch(new RegExp(`^${ENDPOINT!}/${bucket}/${RUN}/annotated/p1\\.jpg\\?.*X-Amz-Expires=3600`));

      const stat = await rawClient().statObject(bucket, `${RUN}/annotated/p1.jpg`);
      expect(stat.metaData['content-type']).toBe('image/jpeg');
      expect(stat.size).toBe(3000);

      const response = await fetch(location.url);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('image/jpeg');
      expect(Buffer.from(await response.arrayBuffer()).equals(Buffer.from(bytes))).toBe(true);
      // Without the signature: refused (403 from versitygw and S3, 400 from rclone).
      expect(refused((await fetch(location.url.split('?')[0]!)).status)).toBe(true);
    });

    it('a presigned URL stops working after its lifetime', async () => {
      const shortLived = S3ObjectStore.open(config({ presignSeconds: 1 }), bucket);
      const { url } = await shortLived.put(`${RUN}/short.png`, new Uint8Array([1, 2, 3]), 'image/png');
      expect(url).toContain('X-Amz-Expires=1&');
      expect((await fetch(url)).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(refused((await fetch(url)).status)).toBe(true);
    });

    it('refused credentials are BACKEND_UNAVAILABLE naming the server', async () => {
      const wrong = S3ObjectStore.open(config({ secretKey: 'not-the-secret' }), bucket);
      for (const call of [() => wrong.ping(), () => wrong.get(`${RUN}/annotated/p1.jpg`), () => wrong.put(`${RUN}/x.bin`, new Uint8Array(1), 'application/octet-stream')]) {
        await expect(call()).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining(`S3 at ${ENDPOINT!}`) as string });
      }
    });
  });

  describe('when the S3 server stops and comes back', () => {
    let store: S3ObjectStore;
    let stopped = false;
    const bucket = bucketName('faults');
    const key = `${RUN}/survivor.jpg`;
    beforeAll(async () => {
      store = S3ObjectStore.open(config(), bucket);
      await store.init();
      await store.put(key, new Uint8Array([9, 8, 7]), 'image/jpeg');
    });
    afterAll(async () => {
      if (stopped) await testEnv('up', 's3');
    });

    it('calls fail fast with BACKEND_UNAVAILABLE naming the S3 server', async () => {
      // Keep-alive connections to the server are open: they break with it.
      expect([...(await store.get(key))]).toEqual([9, 8, 7]);
      stopped = true;
      await testEnv('down', 's3');
      const calls: Record<string, () => Promise<unknown>> = {
        ping: () => store.ping(),
        init: () => store.init(),
        put: () => store.put(`${RUN}/new.jpg`, new Uint8Array([1]), 'image/jpeg'),
        get: () => store.get(key),
        exists: () => store.exists(key),
        delete: () => store.delete(key),
      };
      for (const [name, call] of Object.entries(calls)) {
        const result = await timed(call());
        expect(result.error, name).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining(`S3 at ${ENDPOINT!}, bucket ${bucket}`) as string });
        expect(result.ms, name).toBeLessThan(5000);
      }
    });

    it('the same store serves again once the server is back, with nothing lost', async () => {
      await testEnv('up', 's3');
      stopped = false;
      await store.ping();
      expect([...(await store.get(key))]).toEqual([9, 8, 7]);
      expect(await store.exists(`${RUN}/new.jpg`)).toBe(false);
      await store.put(`${RUN}/after.jpg`, new Uint8Array([4, 5]), 'image/jpeg');
      expect([...(await store.get(`${RUN}/after.jpg`))]).toEqual([4, 5]);
    });
  });
});
