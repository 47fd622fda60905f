/** Bad input gets a typed error with a stable code and a readable message; nothing crashes. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AddressPolicy } from '../../src/adapters/image-source/address-policy.js';
import { CompositeImageSource } from '../../src/adapters/image-source/composite.image-source.js';
import { HttpImageSource } from '../../src/adapters/image-source/http.image-source.js';
import type { SourceConfig } from '../../src/config/config.js';
import { FacematchError } from '../../src/domain/errors.js';
import { decodeImage } from '../../src/inference/image-decoder.js';
import { pngHeader } from '../support/png-bomb.js';
import { group, read, testConfig } from '../support/shared.js';

const config = testConfig();

/** Loopback is allow-listed explicitly, as a deployment would allow-list an internal range. */
function readImageSource(ref: string, source: SourceConfig, allow = ['127.0.0.0/8']): Promise<Uint8Array> {
  const http = new HttpImageSource(source, new AddressPolicy(allow));
  return new CompositeImageSource({ http, localFiles: true, config: source }).read(ref);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (error) {
    expect(error).toBeInstanceOf(FacematchError);
    expect((error as Error).message.length).toBeGreaterThan(10);
    return (error as FacematchError).code;
  }
  throw new Error('expected a failure');
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
      if (req.url === '/photo.jpg') res.writeHead(200, { 'content-type': 'image/jpeg' }).end(jpeg);
      else if (req.url === '/moved') res.writeHead(302, { location: '/photo.jpg' }).end();
      else if (req.url === '/to-metadata') res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data' }).end();
      else if (req.url === '/loop') res.writeHead(302, { location: '/loop' }).end();
      else if (req.url === '/slow') setTimeout(() => res.writeHead(200).end('late'), 2_000);
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

  it('a download over the byte limit is SOURCE_TOO_LARGE', async () => {
    expect(await codeOf(readImageSource(`${base}/photo.jpg`, { ...config.source, maxBytes: 1000 }))).toBe('SOURCE_TOO_LARGE');
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

  it('an unsupported scheme is INVALID_ARGUMENT', async () => {
    expect(await codeOf(readImageSource('ftp://example.org/a.jpg', config.source))).toBe('INVALID_ARGUMENT');
  });
});
