import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { S3Error } from 'minio';
import { describe, expect, it } from 'vitest';
import { photoIdFor } from '../../controller/photo-id.js';
import { FacematchError } from '../../domain/errors.js';
import { parseListing, S3PhotoSource, type S3ListClient } from './s3.photo-source.js';

type Request = Parameters<S3ListClient['makeRequestAsync']>[0];

const xmlText = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&#34;');

/** A ListObjectsV2 answer as versitygw writes it (no key encoding) or as AWS does (`url`). */
function answer(keys: string[], truncated: boolean, encoding: '' | 'url' = ''): string {
  const enc = (k: string) => (encoding === 'url' ? encodeURIComponent(k).replace(/%20/g, '+') : k);
  const contents = keys.map((k) => `<Contents><Key>${xmlText(enc(k))}</Key><Size>1</Size><ETag>&#34;x&#34;</ETag></Contents>`).join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><MaxKeys>1000</MaxKeys><IsTruncated>${truncated}</IsTruncated>${contents}<EncodingType>${encoding}</EncodingType></ListBucketResult>`;
}

// The source reads the answer as a stream and may destroy it: a Readable is all of IncomingMessage it touches.
const respond = (body: string) => Readable.from([Buffer.from(body)]) as unknown as IncomingMessage;

/** A bucket in memory, listed the way S3 lists (UTF-8 order, StartAfter, MaxKeys); records each query. */
function fakeBucket(keys: string[]): { client: S3ListClient; queries: URLSearchParams[] } {
  const sorted = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const queries: URLSearchParams[] = [];
  const client: S3ListClient = {
    makeRequestAsync: (request: Request) => {
      const q = new URLSearchParams(request.query);
      queries.push(q);
      const prefix = q.get('prefix') ?? '';
      const after = q.get('start-after');
      const max = Number(q.get('max-keys'));
      const rest = sorted.filter((k) => k.startsWith(prefix) && (after === null || Buffer.compare(Buffer.from(k), Buffer.from(after)) > 0));
      return Promise.resolve(respond(answer(rest.slice(0, max), rest.length > max)));
    },
  };
  return { client, queries };
}

const failing = (error: Error): S3ListClient => ({ makeRequestAsync: () => Promise.reject(error) });
const hanging: S3ListClient = { makeRequestAsync: () => new Promise(() => {}) };
const never = new AbortController().signal;

function source(client: S3ListClient, over: { prefix?: string; pageSize?: number; timeoutMs?: number } = {}): S3PhotoSource {
  return new S3PhotoSource({ client, bucket: 'shoots', prefix: over.prefix ?? 'ev/', where: 'S3 at http://s3.test:9000', ...over });
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(FacematchError);
  return (error as FacematchError).code;
}

function s3Error(code: string): S3Error {
  const error = new S3Error(`${code} from the server`);
  error.code = code;
  return error;
}

describe('S3PhotoSource', () => {
  it('lists the prefix page by page in key order, skipping folder placeholders, and resumes from any position', async () => {
    const keys = ['ev/', 'ev/a 1.jpg', 'ev/b+c.jpg', 'ev/d/', 'ev/d/e%20.jpg', 'ev/0001', 'ev/é.png', 'other/x.jpg', 'ev'];
    const { client, queries } = fakeBucket(keys);
    const s = source(client, { pageSize: 3 });
    const seen: string[] = [];
    const tokens: (string | undefined)[] = [];
    let token: string | undefined;
    do {
      const page = await s.list(token, never);
      seen.push(...page.photos.map((p) => p.position));
      for (const p of page.photos) {
        expect(p.photoId).toBe(photoIdFor(`shoots/${p.position}`));
        expect(p.imageUrl).toBe(`s3://shoots/${p.position}`);
      }
      token = page.next;
      tokens.push(token);
    } while (token !== undefined);
    expect(seen).toEqual(['ev/0001', 'ev/a 1.jpg', 'ev/b+c.jpg', 'ev/d/e%20.jpg', 'ev/é.png']);
    // 7 keys under the prefix ('ev/' and 'ev/d/' among them), 3 a page: the token is a page's last key.
    expect(tokens).toEqual(['ev/a 1.jpg', 'ev/d/e%20.jpg', undefined]);
    expect(queries.map((q) => [q.get('prefix'), q.get('max-keys'), q.get('start-after')])).toEqual([
      ['ev/', '3', null],
      ['ev/', '3', 'ev/a 1.jpg'],
      ['ev/', '3', 'ev/d/e%20.jpg'],
    ]);

    const rest = await s.list('ev/b+c.jpg', never);
    expect(rest.photos.map((p) => p.position)).toEqual(['ev/d/e%20.jpg', 'ev/é.png']);
  });

  it('sends the request query RFC 3986-escaped, as SigV4 signs it', async () => {
    let sent: Request | undefined;
    const client: S3ListClient = {
      makeRequestAsync: (request: Request) => {
        sent = request;
        return Promise.resolve(respond(answer([], false)));
      },
    };
    await source(client, { prefix: "it's (1)/" }).list("it's (1)/a*b!.jpg", never);
    expect(sent).toMatchObject({ method: 'GET', bucketName: 'shoots' });
    expect(sent!.query).toContain('prefix=it%27s%20%281%29%2F');
    expect(sent!.query).toContain('start-after=it%27s%20%281%29%2Fa%2Ab%21.jpg');
    expect(sent!.query).toContain('max-keys=1000');
  });

  it('gives an empty prefix one empty page without next', async () => {
    const page = await source(fakeBucket(['ev/a.jpg']).client, { prefix: 'none/' }).list(undefined, never);
    expect(page).toEqual({ photos: [] });
  });

  it('a page of placeholders only still gives the next token', async () => {
    const page = await source(fakeBucket(['ev/a/', 'ev/b/', 'ev/c.jpg']).client, { pageSize: 2 }).list(undefined, never);
    expect(page).toEqual({ photos: [], next: 'ev/b/' });
  });

  it('classifies failures: missing bucket, refused credentials, server trouble, network, a bad bucket name', async () => {
    expect(await codeOf(source(failing(s3Error('NoSuchBucket'))).list(undefined, never))).toBe('SOURCE_NOT_FOUND');
    for (const code of ['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InternalError', 'SlowDown']) {
      expect(await codeOf(source(failing(s3Error(code))).list(undefined, never))).toBe('BACKEND_UNAVAILABLE');
    }
    // A 5xx from a proxy: an S3Error without a code.
    expect(await codeOf(source(failing(new S3Error('bad gateway'))).list(undefined, never))).toBe('BACKEND_UNAVAILABLE');
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    const error = await source(failing(refused)).list(undefined, never).catch((e: unknown) => e as FacematchError);
    expect(error).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('S3 at http://s3.test:9000, bucket shoots') });
    const badName = Object.assign(new Error('Invalid bucket name: A'), { name: 'InvalidBucketNameError' });
    expect(await codeOf(source(failing(badName)).list(undefined, never))).toBe('INVALID_ARGUMENT');
  });

  it('retries once on a stale keep-alive connection', async () => {
    let calls = 0;
    const client: S3ListClient = {
      makeRequestAsync: () => {
        calls += 1;
        if (calls === 1) return Promise.reject(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
        return Promise.resolve(respond(answer(['ev/a.jpg'], false)));
      },
    };
    const page = await source(client).list(undefined, never);
    expect(page.photos.map((p) => p.position)).toEqual(['ev/a.jpg']);
    expect(calls).toBe(2);
  });

  it('a server that does not answer is BACKEND_UNAVAILABLE after the timeout', async () => {
    const t0 = performance.now();
    const error = await source(hanging, { timeoutMs: 100 }).list(undefined, never).catch((e: unknown) => e as FacematchError);
    expect(error).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('no answer to list within 100 ms') });
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('an aborted signal stops the listing at once with CANCELLED', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('batch deleted')), 50);
    const t0 = performance.now();
    expect(await codeOf(source(hanging).list(undefined, controller.signal))).toBe('CANCELLED');
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(await codeOf(source(fakeBucket([]).client).list(undefined, controller.signal))).toBe('CANCELLED');
  });

  it('a truncated answer that does not move past the token is an error, not a loop', async () => {
    const client: S3ListClient = { makeRequestAsync: () => Promise.resolve(respond(answer(['ev/a.jpg'], true))) };
    expect(await codeOf(source(client).list('ev/a.jpg', never))).toBe('INTERNAL');
  });

  it('refuses a page size S3 does not take', () => {
    expect(() => source(hanging, { pageSize: 0 })).toThrow(/page size 0/);
    expect(() => source(hanging, { pageSize: 1001 })).toThrow(/page size 1001/);
  });
});

describe('parseListing', () => {
  it('reads keys as text: entities decoded, numbers and spaces kept', () => {
    const keys = ['0001', '1.50', '0x1F', ' lead.jpg', 'trail.jpg ', 'a&b<c>"d\'.jpg', 'p 100%.jpg', 'a+b.jpg', 'tab\t.jpg'];
    expect(parseListing(answer(keys, false))).toEqual({ keys, truncated: false });
    expect(parseListing('<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>x&#x9;&#34;&apos;.jpg</Key></Contents></ListBucketResult>')).toEqual({
      keys: ['x\t"\'.jpg'],
      truncated: true,
    });
  });

  it('URL-decodes keys only when the server says it encoded them', () => {
    const keys = ['a b.jpg', 'a+b.jpg', 'p 100%.jpg', 'é.jpg'];
    expect(parseListing(answer(keys, false, 'url')).keys).toEqual(keys);
  });

  it('refuses an answer that is not a listing', () => {
    expect(() => parseListing('<Error><Code>x</Code></Error>')).toThrow(/ListBucketResult/);
    expect(() => parseListing('<ListBucketResult><Contents><Key>a</Key></Contents></ListBucketResult>')).toThrow(/IsTruncated/);
  });
});
