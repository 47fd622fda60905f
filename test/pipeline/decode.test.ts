/**
 * Decoding as the pipeline needs it. Colour: an embedded ICC profile is honoured (a wide-gamut photo
 * comes out in sRGB), and an sRGB profile, the common case, changes no pixel (its transform is
 * skipped: it was the identity). Size: a camera original is decoded by libjpeg at a fraction of its
 * size where it can be, to the same picture, leaving no file behind.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FacematchError } from '../../src/domain/errors.js';
import { decodeImage, iccDescription, isSrgbProfile, jpegScales } from '../../src/inference/image-decoder.js';
import { group, read, testConfig } from '../support/shared.js';

const config = testConfig().decode;

/** The JPEG without its ICC profile (its APP2 "ICC_PROFILE" segments), every other byte kept. */
function withoutIcc(jpeg: Buffer): Buffer {
  const parts: Buffer[] = [jpeg.subarray(0, 2)];
  let at = 2;
  while (at + 4 <= jpeg.length && jpeg[at] === 0xff && jpeg[at + 1] !== 0xda) {
    const end = at + 2 + jpeg.readUInt16BE(at + 2);
    const icc = jpeg[at + 1] === 0xe2 && jpeg.toString('latin1', at + 4, at + 15) === 'ICC_PROFILE';
    if (!icc) parts.push(jpeg.subarray(at, end));
    at = end;
  }
  parts.push(jpeg.subarray(at));
  return Buffer.concat(parts);
}

const meanDifference = (a: Uint8Array, b: Uint8Array): number => {
  expect(a.length).toBe(b.length);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
};

describe('colour profiles on decode', () => {
  it('a JPEG with an sRGB profile decodes to exactly the pixels of the same JPEG without it', async () => {
    for (const file of ['faceapi_bbt1.jpg', 'hpc203_selfie.jpg']) {
      const tagged = await read(group(file));
      const bare = withoutIcc(tagged);
      expect((await sharp(tagged).metadata()).icc).toBeDefined();
      expect((await sharp(bare).metadata()).icc).toBeUndefined();
      const [a, b] = [await decodeImage(tagged, config), await decodeImage(bare, config)];
      expect(Buffer.compare(a.image.data, b.image.data), file).toBe(0);
    }
  });

  it('a Display P3 photo is converted to sRGB, not read as if it were sRGB', async () => {
    const source = sharp(await read(group('facerec_two_people.jpg'))).resize(400);
    const srgb = await decodeImage(await source.clone().png().toBuffer(), config);
    const p3 = await source.clone().withIccProfile('p3').png().toBuffer();
    const asStored = await sharp(p3, { ignoreIcc: true }).raw().toBuffer();
    // Read as sRGB, the P3 values are visibly off; converted, they are the original up to rounding.
    expect(meanDifference(asStored, srgb.image.data)).toBeGreaterThan(1.5);
    expect(meanDifference((await decodeImage(p3, config)).image.data, srgb.image.data)).toBeLessThan(0.5);
  });

  it('tells sRGB profiles (ICC v2 and v4) from others by their description', async () => {
    const profile = async (bytes: Buffer): Promise<Buffer> => (await sharp(bytes).metadata()).icc!;
    const v2 = await profile(await read(group('faceapi_bbt1.jpg')));
    const small = sharp(await read(group('facerec_two_people.jpg'))).resize(64);
    const v4 = await profile(await small.clone().withIccProfile('srgb').jpeg().toBuffer());
    const p3 = await profile(await small.clone().withIccProfile('p3').jpeg().toBuffer());
    expect([iccDescription(v2), iccDescription(v4), iccDescription(p3)]).toEqual(['sRGB IEC61966-2.1', 'sRGB', 'sP3C']);
    expect([isSrgbProfile(v2), isSrgbProfile(v4), isSrgbProfile(p3), isSrgbProfile(undefined)]).toEqual([true, true, false, false]);
    expect(iccDescription(Buffer.from('not a profile'))).toBeUndefined();
  });
});

describe('shrink-on-load of camera originals', () => {
  // A private temporary directory, to see that no decode leaves its temporary JPEG behind.
  const saved = process.env.TMPDIR;
  let tmp = '';
  beforeEach(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'facematch-decode-test-'));
    process.env.TMPDIR = tmp;
  });
  afterEach(async () => {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    await rm(tmp, { recursive: true, force: true });
  });

  const original = async (orientation?: number): Promise<Buffer> => {
    const photo = sharp(await read(group('insightface_t1.jpg'))).resize(6000, 4000, { fit: 'fill' });
    return (orientation ? photo.withMetadata({ orientation }) : photo).jpeg({ quality: 90 }).toBuffer();
  };

  it('libjpeg scales a JPEG by the largest of 1/2, 1/4, 1/8 the shrink allows; sharp alone only from 3, 5, 9', () => {
    const at = (ratio: number): [number, number] => {
      const s = jpegScales(ratio);
      return [s.possible, s.sharp];
    };
    expect([1.5, 2, 2.34, 3.5, 4.7, 6, 8.5, 12].map(at)).toEqual([
      [1, 1],
      [2, 1],
      [2, 1],
      [2, 2],
      [4, 2],
      [4, 4],
      [8, 4],
      [8, 8],
    ]);
  });

  it('a 24 MP JPEG shrunk to 2560 is the picture a whole decode and resize gives, and no file is left', async () => {
    const big = await original();
    const decoded = await decodeImage(big, { ...testConfig().decode, maxSide: 2560 });
    expect([decoded.width, decoded.height, decoded.image.width, decoded.image.height]).toEqual([6000, 4000, 2560, 1707]);
    const whole = await sharp(big).resize(2560, 1707, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
    expect(meanDifference(decoded.image.data, whole)).toBeLessThan(1);
    expect(await readdir(tmp)).toEqual([]);
  });

  it('applies the EXIF orientation of a scaled JPEG', async () => {
    const decoded = await decodeImage(await original(6), { ...testConfig().decode, maxSide: 2560 });
    expect([decoded.width, decoded.height, decoded.image.width, decoded.image.height]).toEqual([4000, 6000, 1707, 2560]);
  });

  it('a truncated 24 MP JPEG is IMAGE_CORRUPT, its message names no temporary file, and no file is left', async () => {
    const big = await original();
    const error = await decodeImage(big.subarray(0, Math.floor(big.length / 2)), { ...testConfig().decode, maxSide: 2560 }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(FacematchError);
    expect((error as FacematchError).code).toBe('IMAGE_CORRUPT');
    expect((error as Error).message).not.toContain(tmp);
    expect(await readdir(tmp)).toEqual([]);
  });
});
