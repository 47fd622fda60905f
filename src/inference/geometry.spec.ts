import { describe, expect, it } from 'vitest';
import type { Point } from '../domain/face.js';
import {
  applyAffine,
  composeAffine,
  estimateSimilarity,
  invertAffine,
  sampleToTensor,
  type Affine,
  type RgbImage,
} from './geometry.js';

const similarity = (scale: number, degrees: number, tx: number, ty: number): Affine => {
  const r = (degrees * Math.PI) / 180;
  const a = scale * Math.cos(r);
  const b = scale * Math.sin(r);
  return { a, b: -b, c: tx, d: b, e: a, f: ty };
};

const expectAffine = (actual: Affine, expected: Affine, digits = 9): void => {
  for (const k of ['a', 'b', 'c', 'd', 'e', 'f'] as const) expect(actual[k]).toBeCloseTo(expected[k], digits);
};

describe('estimateSimilarity (Umeyama)', () => {
  const src: Point[] = [
    [30.1, 50.2],
    [70.4, 49.8],
    [51.0, 70.3],
    [35.5, 90.9],
    [68.2, 91.4],
  ];

  it.each([
    [1, 0, 0, 0],
    [0.5, 30, 12, -7],
    [2.3, -135, 400, 250],
    [0.12, 179, -3, 9],
  ])('recovers scale %f, rotation %f°, translation (%f, %f) exactly', (s, deg, tx, ty) => {
    const m = similarity(s, deg, tx, ty);
    const dst = src.map(([x, y]) => applyAffine(m, x, y));
    expectAffine(estimateSimilarity(src, dst), m);
  });

  it('is the least-squares fit when the points are noisy', () => {
    const m = similarity(1.7, 20, 5, 6);
    const noise = [0.3, -0.2, 0.1, -0.4, 0.25];
    const dst = src.map(([x, y], i): Point => {
      const [u, v] = applyAffine(m, x, y);
      return [u + noise[i]!, v - noise[(i + 2) % 5]!];
    });
    const fit = estimateSimilarity(src, dst);
    const err = (t: Affine): number =>
      src.reduce((acc, [x, y], i) => {
        const [u, v] = applyAffine(t, x, y);
        return acc + (u - dst[i]![0]) ** 2 + (v - dst[i]![1]) ** 2;
      }, 0);
    // No nearby similarity transform fits better.
    for (const [ds, dd] of [[0.01, 0], [-0.01, 0], [0, 0.2], [0, -0.2]] as const) {
      expect(err(fit)).toBeLessThan(err(composeAffine(similarity(1 + ds, dd, 0, 0), fit)));
    }
    expect(Math.hypot(fit.a, fit.d)).toBeCloseTo(1.7, 1);
  });

  it('refuses degenerate input', () => {
    expect(() => estimateSimilarity([[1, 1], [1, 1]], [[0, 0], [1, 1]])).toThrow(RangeError);
  });
});

describe('invertAffine / composeAffine', () => {
  it('compose(inverse, m) is the identity', () => {
    const m: Affine = { a: 1.2, b: 0.3, c: -4, d: -0.7, e: 0.9, f: 11 };
    expectAffine(composeAffine(invertAffine(m), m), { a: 1, b: 0, c: 0, d: 0, e: 1, f: 0 });
  });
});

describe('sampleToTensor', () => {
  // 4x2 image: pixel (x, y) has R = 10x + y, G = 100, B = 200.
  const image: RgbImage = {
    width: 4,
    height: 2,
    data: Uint8Array.from({ length: 24 }, (_, i) => {
      const p = Math.floor(i / 3);
      const x = p % 4;
      const y = Math.floor(p / 4);
      return [10 * x + y, 100, 200][i % 3]!;
    }),
  };

  it('copies pixels under the identity, normalised, in planar RGB order', () => {
    const out = new Float32Array(3 * 8);
    sampleToTensor(image, { a: 1, b: 0, c: 0, d: 0, e: 1, f: 0 }, { width: 4, height: 2, mean: 0, std: 1, bgr: false }, out);
    expect(Array.from(out.subarray(0, 8))).toEqual([0, 10, 20, 30, 1, 11, 21, 31]);
    expect(Array.from(out.subarray(8, 16))).toEqual(Array(8).fill(100));
    expect(Array.from(out.subarray(16))).toEqual(Array(8).fill(200));
  });

  it('interpolates bilinearly, reads outside as black, and can write BGR', () => {
    const out = new Float32Array(3 * 2);
    // Two samples: (0.5, 0.5) inside, (10, 10) outside.
    const m: Affine = { a: 9.5, b: 0, c: 0.5, d: 0, e: 1, f: 0.5 };
    sampleToTensor(image, m, { width: 2, height: 1, mean: 100, std: 2, bgr: true }, out);
    // Channel 2 is R in BGR: mean of 0, 10, 1, 11 = 5.5 → (5.5 - 100) / 2.
    expect(out[4]).toBeCloseTo((5.5 - 100) / 2, 6);
    expect(out[0]).toBeCloseTo((200 - 100) / 2, 6);
    expect(out[5]).toBeCloseTo(-50, 6);
    expect(out[1]).toBeCloseTo(-50, 6);
  });

  it('blends with black at the border like a constant border', () => {
    const out = new Float32Array(3);
    sampleToTensor(image, { a: 1, b: 0, c: 3.5, d: 0, e: 1, f: 0 }, { width: 1, height: 1, mean: 0, std: 1, bgr: false }, out);
    expect(out[0]).toBeCloseTo(15, 6); // half of pixel (3,0) = 30, half outside = 0
  });
});
