import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { decodeImage, iccDescription, isSrgbProfile } from './image-decoder.js';

const config = { maxPixels: 100_000_000, maxSide: 0 };

describe('a photo whose ICC profile is malformed', () => {
  it('with a tag count running past the profile: not taken for sRGB, and the photo decodes to the pixels of the intact one', async () => {
    const jpeg = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#c84' } })
      .withIccProfile('srgb')
      .jpeg()
      .toBuffer();
    // The profile in the JPEG's APP2 segment: "ICC_PROFILE\0", chunk number and count, then the profile.
    const at = jpeg.indexOf('ICC_PROFILE\0') + 14;
    const withTagCount = (count: number): Buffer => {
      const bytes = Buffer.from(jpeg);
      bytes.writeUInt32BE(count, at + 128);
      return bytes;
    };
    const profile = async (bytes: Buffer): Promise<Buffer> => (await sharp(bytes).metadata()).icc!;
    expect(iccDescription(await profile(jpeg))).toBe('sRGB');

    // A few entries past the end: the tag table does not fit, so the profile is malformed.
    const tags = (await profile(jpeg)).readUInt32BE(128);
    const overrun = await profile(withTagCount(tags + 1000));
    expect([iccDescription(overrun), isSrgbProfile(overrun)]).toEqual([undefined, false]);

    // 2^32 - 1 entries: read one by one, half an hour of CPU before the decode could start.
    const crafted = withTagCount(0xffffffff);
    expect(iccDescription(await profile(crafted))).toBeUndefined();
    const [a, b] = [await decodeImage(jpeg, config), await decodeImage(crafted, config)];
    expect([b.width, b.height]).toEqual([64, 48]);
    expect(Buffer.from(b.image.data).equals(Buffer.from(a.image.data))).toBe(true);
  });
});
