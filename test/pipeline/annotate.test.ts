/**
 * The annotated copy: drawn on the pixels the pipeline decoded (what the service does) or from the
 * encoded photo, it is the upright photo at the configured size with the boxes where the faces are.
 */
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import type { DrawnFace, FaceAnalysis } from '../../src/domain/face.js';
import { annotate } from '../../src/inference/annotate.js';
import type { FaceAnalyzer } from '../../src/inference/face-analyzer.js';
import { group, sharedAnalyzer } from '../support/shared.js';

const MAX_PIXELS = 100e6;
const GREEN = [0x22, 0xc5, 0x5e] as const;

interface Raster {
  data: Buffer;
  width: number;
  height: number;
}

async function raster(jpeg: Uint8Array): Promise<Raster> {
  const { data, info } = await sharp(jpeg).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

const pixel = (r: Raster, x: number, y: number): number[] => {
  const i = (Math.round(y) * r.width + Math.round(x)) * 3;
  return [r.data[i]!, r.data[i + 1]!, r.data[i + 2]!];
};
const near = (a: readonly number[], b: readonly number[], tolerance: number): boolean => a.every((v, i) => Math.abs(v - b[i]!) <= tolerance);

function meanAbsDiff(a: Raster, b: Raster): number {
  let sum = 0;
  for (let i = 0; i < a.data.length; i++) sum += Math.abs(a.data[i]! - b.data[i]!);
  return sum / a.data.length;
}

describe('the annotated copy', () => {
  let analyzer: FaceAnalyzer;
  let bytes: Buffer;
  let analysis: FaceAnalysis;
  let faces: DrawnFace[];

  beforeAll(async () => {
    analyzer = await sharedAnalyzer();
    bytes = await readFile(group('facerec_obama_and_biden.jpg'));
    analysis = await analyzer.analyze(bytes, 'obama_and_biden', { keepPicture: true });
    faces = analysis.faces.map((f, i) => ({ ...f, highlight: i === 0, label: `#${i}` }));
  });

  it('is drawn on the decoded pixels: the photo at its size, the matched face boxed in green', async () => {
    expect(analysis.picture).toMatchObject({ width: 2000, height: 1428 });
    // Drawn in place: on a copy, so that the next test starts from the photo.
    const picture = { ...analysis.picture!, data: Uint8Array.from(analysis.picture!.data) };
    const out = await raster(await annotate(picture, faces, { width: analysis.width, height: analysis.height, maxPixels: MAX_PIXELS, maxSide: 2048 }));
    expect([out.width, out.height]).toEqual([2000, 1428]);
    const box = analysis.faces[0]!.box;
    // The middle of the box's left edge is green; the middle of the face is the photo.
    expect(pixel(out, box.x, box.y + box.height / 2)).toSatisfy((p: number[]) => near(p, GREEN, 40));
    const original = await raster(await sharp(bytes).jpeg().toBuffer());
    const centre = [box.x + box.width / 2, box.y + box.height / 2] as const;
    expect(near(pixel(out, ...centre), pixel(original, ...centre), 24)).toBe(true);
  });

  it('looks the same whether drawn on the decoded pixels or decoded again from the bytes', async () => {
    const size = { width: analysis.width, height: analysis.height, maxPixels: MAX_PIXELS, maxSide: 1024 };
    const fromPixels = await raster(await annotate(analysis.picture!, faces, size));
    const fromBytes = await raster(await annotate(bytes, faces, size));
    expect([fromPixels.width, fromPixels.height]).toEqual([1024, 731]);
    expect([fromBytes.width, fromBytes.height]).toEqual([1024, 731]);
    expect(meanAbsDiff(fromPixels, fromBytes)).toBeLessThan(3);
  });

  it('is upright for a photo stored sideways with an EXIF orientation', async () => {
    // The bytes hold the photo turned a quarter (1428 x 2000) with orientation 6 (display rotated 90°).
    const sideways = await sharp(bytes).rotate(270).withMetadata({ orientation: 6 }).jpeg().toBuffer();
    const turned = await analyzer.analyze(sideways, 'sideways', { keepPicture: true });
    expect([turned.width, turned.height]).toEqual([2000, 1428]);
    const drawn = turned.faces.map((f) => ({ ...f, highlight: true }));
    const out = await raster(await annotate(turned.picture!, drawn, { width: turned.width, height: turned.height, maxPixels: MAX_PIXELS }));
    expect([out.width, out.height]).toEqual([2000, 1428]);
    const box = turned.faces[0]!.box;
    expect(pixel(out, box.x, box.y + box.height / 2)).toSatisfy((p: number[]) => near(p, GREEN, 40));
  });
});
