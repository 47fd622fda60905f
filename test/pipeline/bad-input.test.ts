/** Bad input gets a typed error with a stable code and a readable message; nothing crashes. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AddressPolicy } from '../../src/adapters/image-source/address-policy.js';
import { CompositeImageSource } from '../../src/adapters/image-source/composite.image-source.js';
import { HttpImageSource } from '../../src/adapters/image-source/http.image-source.js';
import { S3ObjectStore } from '../../src/adapters/s3/s3.object-store.js';
import type { SourceConfig } from '../../src/config/config.js';
import { FacematchError } from '../../src/domain/errors.js';
import type { ObjectStore } from '../../src/ports/object-store.js';
import { decodeImage } from '../../src/inference/image-decoder.js';
import { pngHeader } from '../support/png-bomb.js';
import { group, read, testConfig } from '../support/shared.js';

const config = testConfig();

/** Loopback is allow-listed explicitly, as a deployment would allow-list an internal range. */
function readImageSource(
  ref: string,
  source: SourceConfig,
  allow = ['127.0.0.0/8'],
  o: { signal?: AbortSignal; objects?: ObjectStore } = {},
): Promise<Uint8Array> {
  const http = new HttpImageSource(source, new AddressPolicy(allow));
  const objects = o.objects && { store: o.objects, bucket: 'facematch' };
  return new CompositeImageSource({ http, localFiles: true, config: source, ...(objects ? { objects } : {}) }).read(ref, o.signal);
}

async function errorOf(p: Promise<unknown>): Promise<FacematchError> {
  try {
    await p;
  } catch (error) {
    expect(error).toBeInstanceOf(FacematchError);
    expect((error as Error).message.length).toBeGreaterThan(10);
    return error as FacematchError;
  }
  throw new Error('expected a failure');
}

const codeOf = async (p: Promise<unknown>): Promise<string> => (await errorOf(p)).code;

/** A PNG whose IHDR claims `extraRows` more rows than its IDAT holds (its CRC fixed: the header itself is valid). */
function withTallerHeader(png: Buffer, extraRows: number): Buffer {
  const patched = Buffer.from(png);
  expect(patched.toString('latin1', 12, 16)).toBe('IHDR');
  patched.writeUInt32BE(patched.readUInt32BE(20) + extraRows, 20);
  patched.writeUInt32BE(crc32(patched.subarray(12, 29)), 29);
  return patched;
}

describe('decoding bad images', () => {
  it('an empty file is IMAGE_EMPTY', async () => {
    expect(await codeOf(decodeImage(new Uint8Array(0), config.decode))).toBe('IMAGE_EMPTY');
  });

  it('text is IMAGE_UNSUPPORTED', async () => {
    expect(await codeOf(decodeImage(Buffer.from('this is not an image at all\n'), config.decode))).toBe('IMAGE_UNSUPPORTED');
  });

  it('an SVG (a format we do not accept) is IMAGE_UNSUPPORTED', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>');
    expect(await codeOf(decodeImage(svg, config.decode))).toBe('IMAGE_UNSUPPORTED');
  });

  it('a truncated JPEG is IMAGE_CORRUPT', async () => {
    const jpeg = await read(group('insightface_t1.jpg'));
    expect(await codeOf(decodeImage(jpeg.subarray(0, Math.floor(jpeg.length / 2)), config.decode))).toBe('IMAGE_CORRUPT');
  });

  it.each(['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif'] as const)('a real photo as %s cut short is IMAGE_CORRUPT', async (format) => {
    // 640 pixels wide and the least encoder effort: AVIF and GIF encoders take seconds otherwise.
    const effort = format === 'avif' ? { effort: 0 } : format === 'gif' ? { effort: 1 } : {};
    const whole = await sharp(await read(group('insightface_t1.jpg'))).resize(640).toFormat(format, effort).toBuffer();
    expect((await decodeImage(whole, config.decode)).width).toBe(640);
    for (const keep of [Math.floor(whole.length * 0.1), Math.floor(whole.length / 2), whole.length - 100]) {
      const error = await errorOf(decodeImage(whole.subarray(0, keep), config.decode));
      expect([keep, error.code]).toEqual([keep, 'IMAGE_CORRUPT']);
    }
  });

  it('a progressive JPEG and an interlaced PNG cut short are IMAGE_CORRUPT', async () => {
    const photo = sharp(await read(group('facerec_kit_with_rose.jpg')));
    for (const whole of [await photo.clone().jpeg({ progressive: true }).toBuffer(), await photo.clone().png({ progressive: true }).toBuffer()]) {
      expect(await codeOf(decodeImage(whole.subarray(0, Math.floor(whole.length * 0.8)), config.decode))).toBe('IMAGE_CORRUPT');
    }
  });

  it('a PNG whose IHDR promises more rows than its IDAT holds is IMAGE_CORRUPT', async () => {
    const png = await sharp(await read(group('facerec_two_people.jpg'))).png().toBuffer();
    const { height } = await sharp(png).metadata();
    const taller = withTallerHeader(png, 10);
    expect((await sharp(taller).metadata()).height).toBe(height + 10);
    const error = await errorOf(decodeImage(taller, config.decode));
    expect(error.code).toBe('IMAGE_CORRUPT');
    expect(error.message).toMatch(/truncated or damaged PNG/);
  });

  it('a TIFF signature followed by garbage is IMAGE_CORRUPT, not IMAGE_UNSUPPORTED', async () => {
    expect(await codeOf(decodeImage(Buffer.from('II*\0 and then nothing of a TIFF', 'latin1'), config.decode))).toBe('IMAGE_CORRUPT');
  });

  it('a 50000x50000 PNG header is IMAGE_TOO_LARGE before any pixel is decoded', async () => {
    const bomb = pngHeader(50_000, 50_000);
    expect(bomb.length).toBeLessThan(200);
    expect(await codeOf(decodeImage(bomb, config.decode))).toBe('IMAGE_TOO_LARGE');
  });

  it.each(['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif'] as const)('decodes %s to upright RGB', async (format) => {
    const source = sharp(await read(group('facerec_two_people.jpg'))).resize(300);
    const bytes = await source.toFormat(format).toBuffer();
    const decoded = await decodeImage(bytes, config.decode);
    expect(decoded.image.data.length).toBe(decoded.image.width * decoded.image.height * 3);
    expect(decoded.width).toBe(300);
  });

  it('shrinks large images on load and reports the original size', async () => {
    const big = await sharp(await read(group('insightface_t1.jpg'))).resize(6000, 4000).jpeg().toBuffer();
    const decoded = await decodeImage(big, { ...config.decode, maxSide: 2000 });
    expect([decoded.width, decoded.height]).toEqual([6000, 4000]);
    expect(Math.max(decoded.image.width, decoded.image.height)).toBe(2000);
  });

  it('applies the EXIF orientation', async () => {
    const tagged = await sharp(await read(group('facerec_two_people.jpg')))
      .resize(300, 200)
      .withMetadata({ orientation: 6 })
      .jpeg()
      .toBuffer();
    const decoded = await decodeImage(tagged, config.decode);
    expect([decoded.width, decoded.height]).toEqual([200, 300]);
  });
});

describe('reading image sources', () => {
  let server: Server;
  let base: string;
  beforeAll(async () => {
    const jpeg = await read(group('facerec_two_people.jpg'));
    server = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://localhost').pathname;
      if (path === '/photo.jpg') res.writeHead(200, { 'content-type': 'image/jpeg' }).end(jpeg);
      else if (path === '/moved') res.writeHead(302, { location: '/photo.jpg' }).end();
      else if (path === '/to-metadata') res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data' }).end();
      else if (path === '/loop') res.writeHead(302, { location: '/loop' }).end();
      else if (path === '/slow') setTimeout(() => res.writeHead(200).end('late'), 2_000);
      // No content-length: chunked, in pieces.
      else if (path === '/chunked.jpg') {
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        for (let at = 0; at < jpeg.length; at += 10_000) res.write(jpeg.subarray(at, at + 10_000));
        res.end();
      }
      // Declares the whole photo, sends half of it and closes the connection.
      else if (path === '/short.jpg') {
        res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': String(jpeg.length) });
        res.write(jpeg.subarray(0, jpeg.length >> 1), () => res.destroy());
      }
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('downloads over http and follows redirects', async () => {
    const bytes = await readImageSource(`${base}/moved`, config.source);
    expect(bytes.length).toBe((await read(group('facerec_two_people.jpg'))).length);
  });

  it('a 404 is SOURCE_NOT_FOUND, a missing file too', async () => {
    expect(await codeOf(readImageSource(`${base}/nope.jpg`, config.source))).toBe('SOURCE_NOT_FOUND');
    expect(await codeOf(readImageSource('/no/such/file.jpg', config.source))).toBe('SOURCE_NOT_FOUND');
  });

  it('an unreachable URL, a redirect loop and a timeout are SOURCE_UNREACHABLE', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    expect(await codeOf(readImageSource(`http://127.0.0.1:${port}/x.jpg`, config.source))).toBe('SOURCE_UNREACHABLE');
    expect(await codeOf(readImageSource(`${base}/loop`, config.source))).toBe('SOURCE_UNREACHABLE');
    expect(await codeOf(readImageSource(`${base}/slow`, { ...config.source, timeoutMs: 200 }))).toBe('SOURCE_UNREACHABLE');
  });

  it('a download over the byte limit is SOURCE_TOO_LARGE, with a declared length or without', async () => {
    expect(await codeOf(readImageSource(`${base}/photo.jpg`, { ...config.source, maxBytes: 1000 }))).toBe('SOURCE_TOO_LARGE');
    expect(await codeOf(readImageSource(`${base}/chunked.jpg`, { ...config.source, maxBytes: 25_000 }))).toBe('SOURCE_TOO_LARGE');
  });

  it('reads the photo byte for byte, with a declared length or without, and a body cut short is SOURCE_UNREACHABLE', async () => {
    const jpeg = await read(group('facerec_two_people.jpg'));
    for (const route of ['/photo.jpg', '/chunked.jpg']) {
      const bytes = await readImageSource(`${base}${route}`, config.source);
      expect(Buffer.from(bytes).equals(jpeg)).toBe(true);
    }
    expect(await codeOf(readImageSource(`${base}/short.jpg`, config.source))).toBe('SOURCE_UNREACHABLE');
  });

  it('loopback, private and link-local addresses are SOURCE_FORBIDDEN unless allow-listed', async () => {
    expect(await codeOf(readImageSource(`${base}/photo.jpg`, config.source, []))).toBe('SOURCE_FORBIDDEN');
    expect(await codeOf(readImageSource('http://localhost:1/x.jpg', config.source, []))).toBe('SOURCE_FORBIDDEN');
    expect(await codeOf(readImageSource('http://169.254.169.254/latest/meta-data', config.source, []))).toBe('SOURCE_FORBIDDEN');
    expect(await codeOf(readImageSource('http://10.0.0.1/x.jpg', config.source, []))).toBe('SOURCE_FORBIDDEN');
    expect(await codeOf(readImageSource('http://[::1]:1/x.jpg', config.source, []))).toBe('SOURCE_FORBIDDEN');
    // A redirect from an allowed host to a forbidden one is refused too.
    expect(await codeOf(readImageSource(`${base}/to-metadata`, config.source))).toBe('SOURCE_FORBIDDEN');
    const open = new AddressPolicy(['127.0.0.1']);
    expect(open.refusal('127.0.0.1')).toBeUndefined();
    expect(open.refusal('127.0.0.2')).toMatch(/loopback/);
  });

  it('an allow-list entry that is not an address or a CIDR is CONFIG_INVALID naming FACEMATCH_SOURCE_ALLOW', () => {
    for (const entry of ['localhost', '10.0.0.0/33']) {
      expect(() => new AddressPolicy([entry])).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }) as Error);
      expect(() => new AddressPolicy([entry])).toThrow(/FACEMATCH_SOURCE_ALLOW/);
    }
  });

  it('an unsupported scheme is INVALID_ARGUMENT', async () => {
    expect(await codeOf(readImageSource('ftp://example.org/a.jpg', config.source))).toBe('INVALID_ARGUMENT');
  });

  it('error messages never show a URL\'s credentials or query string', async () => {
    const secret = (url: string): string => url.replace('//', '//alice:pa55word@') + '?X-Amz-Signature=deadbeef&token=t0ken';
    const failures = [
      readImageSource(secret(`${base}/nope.jpg`), config.source),
      readImageSource(secret(`${base}/slow`), { ...config.source, timeoutMs: 100 }),
      readImageSource(secret(`${base}/photo.jpg`), { ...config.source, maxBytes: 1000 }),
      readImageSource(secret(`${base}/photo.jpg`), config.source, []),
      readImageSource(secret('http://10.0.0.1/x.jpg'), config.source, []),
      readImageSource(secret('ftp://example.org/a.jpg'), config.source),
      readImageSource(secret('s3://facematch/a.jpg'), config.source),
    ];
    const errors = await Promise.all(failures.map(errorOf));
    expect(errors.map((e) => e.code)).toEqual([
      'SOURCE_NOT_FOUND',
      'SOURCE_UNREACHABLE',
      'SOURCE_TOO_LARGE',
      'SOURCE_FORBIDDEN',
      'SOURCE_FORBIDDEN',
      'INVALID_ARGUMENT',
      'INVALID_ARGUMENT',
    ]);
    for (const e of errors) expect(e.message).not.toMatch(/alice|pa55word|deadbeef|t0ken|X-Amz/);
    expect(errors[0]!.message).toContain(`${base}/nope.jpg`);
  });
});

describe('cancelling a read', () => {
  /** A server that accepts requests and never answers; `closed` resolves when its client's socket closes. */
  let silent: Server;
  let silentBase: string;
  let requests = 0;
  let socketClosed: Promise<void>[] = [];
  beforeAll(async () => {
    silent = createServer(() => {
      requests++;
    });
    silent.on('connection', (socket) => socketClosed.push(new Promise((resolve) => socket.once('close', () => resolve()))));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentBase = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    silent.closeAllConnections();
    return new Promise<void>((r) => silent.close(() => r()));
  });

  // Far beyond the test's own timeout: only the signal can end these reads in time.
  const patient = { ...config.source, timeoutMs: 600_000 };

  it('a download whose signal aborts after 100 ms is CANCELLED, and the server sees its socket closed', async () => {
    socketClosed = [];
    const error = await errorOf(readImageSource(`${silentBase}/never.jpg?sig=s3cret`, patient, undefined, { signal: AbortSignal.timeout(100) }));
    expect(error.code).toBe('CANCELLED');
    expect(error.message).not.toContain('s3cret');
    expect(requests).toBe(1);
    expect(socketClosed).toHaveLength(1);
    await socketClosed[0];
  });

  it('an S3 object read whose signal aborts is CANCELLED without waiting for the store', async () => {
    const store = S3ObjectStore.open(
      { endpoint: silentBase, accessKey: 'test', secretKey: 'test-secret', region: 'us-east-1', presignSeconds: 60 },
      'facematch',
      { timeoutMs: 600_000 },
    );
    const reading = readImageSource('s3://facematch/photos/a.jpg', patient, undefined, { signal: AbortSignal.timeout(100), objects: store });
    expect(await codeOf(reading)).toBe('CANCELLED');
  });

  it('a signal aborted before the read starts is CANCELLED for every kind of source', async () => {
    const before = requests;
    const signal = AbortSignal.abort();
    const store = S3ObjectStore.open(
      { endpoint: silentBase, accessKey: 'test', secretKey: 'test-secret', region: 'us-east-1', presignSeconds: 60 },
      'facematch',
    );
    for (const ref of [`${silentBase}/never.jpg`, 's3://facematch/photos/a.jpg', group('facerec_two_people.jpg')]) {
      expect(await codeOf(readImageSource(ref, patient, undefined, { signal, objects: store }))).toBe('CANCELLED');
    }
    expect(requests).toBe(before);
  });
});
