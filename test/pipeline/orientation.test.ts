/**
 * The orientation search on real photos: a photo turned in its pixels (no EXIF tag) is still read
 * the right way up, and an upright photo whose faces score just below the confident bar does not pay
 * for the three quarter-turn views.
 */
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import type { DetectedFace } from '../../src/domain/face.js';
import { uprightTurns } from '../../src/inference/scrfd.js';
import { group, read, sharedAnalyzer } from '../support/shared.js';

/** Faces and the detector runs they took. */
async function detect(bytes: Uint8Array): Promise<{ faces: DetectedFace[]; runs: number }> {
  const a = await sharedAnalyzer();
  const decoded = await a.decode(bytes);
  const before = a.detector.runs;
  const faces = await a.detectFaces(decoded);
  return { faces, runs: a.detector.runs - before };
}

// Two upright people whose best face scores 0.79 with SCRFD-500MF: under the confident bar (0.8).
const PHOTO = 'hpc203_s_l.jpg';

describe('photos turned in their pixels', () => {
  it('an upright photo with no confident face is checked upside down only: 2 detector runs, not 4', async () => {
    const { faces, runs } = await detect(await read(group(PHOTO)));
    expect(faces).toHaveLength(2);
    expect(Math.max(...faces.map((f) => f.score))).toBeLessThan(0.8);
    expect(faces.map((f) => uprightTurns(f.landmarks))).toEqual([0, 0]);
    expect(runs).toBe(2);
  });

  it.each([90, 180, 270])('the same photo turned %i° finds both people, read the right way up', async (angle) => {
    const upright = await detect(await read(group(PHOTO)));
    const turned = await detect(await sharp(await read(group(PHOTO))).rotate(angle).jpeg({ quality: 95 }).toBuffer());
    expect(turned.faces).toHaveLength(2);
    // Landmarks in the turned photo's pixels: turning them back by the photo's own turn is upright.
    const back = ((4 - angle / 90) % 4) as 0 | 1 | 2 | 3;
    expect(turned.faces.map((f) => uprightTurns(f.landmarks))).toEqual([back, back]);
    // The scores of the upright photo's own faces: the search kept the view the faces are upright in.
    const scores = (faces: DetectedFace[]): number[] => faces.map((f) => f.score).sort((p, q) => q - p);
    const [got, want] = [scores(turned.faces), scores(upright.faces)];
    for (const [i, s] of got.entries()) expect(Math.abs(s - want[i]!)).toBeLessThan(0.05);
  });
});
