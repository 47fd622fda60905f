import { describe, expect, it } from 'vitest';
import type { Landmarks, Point } from '../domain/face.js';
import { applyAffine } from './geometry.js';
import { candidateToImage, decodeScrfd, iou, makeView, nms, uprightTurns, type ScrfdLevel } from './scrfd.js';

const level = (stride: number, w: number, h: number, anchors: number): ScrfdLevel => {
  const n = Math.ceil(w / stride) * Math.ceil(h / stride) * anchors;
  return { stride, scores: new Float32Array(n), boxes: new Float32Array(n * 4), kps: new Float32Array(n * 10) };
};

describe('decodeScrfd', () => {
  it('decodes distances around the anchor centre of the right cell and anchor', () => {
    const l8 = level(8, 64, 32, 2);
    const l16 = level(16, 64, 32, 2);
    // Stride 8, cell (x=3, y=2) → index (2*8 + 3) * 2 + 1 (second anchor of that cell).
    const i = (2 * 8 + 3) * 2 + 1;
    l8.scores[i] = 0.9;
    l8.boxes.set([1, 2, 3, 4], i * 4);
    l8.kps.set([0, 0, 1, 1, -1, -1, 0.5, 0, 0, 0.5], i * 10);
    // Stride 16, cell (x=1, y=1), first anchor, below threshold.
    const j = (1 * 4 + 1) * 2;
    l16.scores[j] = 0.3;
    const found = decodeScrfd([l8, l16], 64, 32, 2, 0.5);
    expect(found).toHaveLength(1);
    const [c] = found;
    // centre (24, 16); box (24-8, 16-16, 24+24, 16+32)
    expect(c!.box).toEqual({ x: 16, y: 0, width: 32, height: 48 });
    expect(c!.score).toBeCloseTo(0.9);
    expect(c!.landmarks).toEqual([
      [24, 16],
      [32, 24],
      [16, 8],
      [28, 16],
      [24, 20],
    ]);
  });

  it('refuses outputs whose size does not fit the input', () => {
    const bad = level(8, 64, 64, 2);
    expect(() => decodeScrfd([bad], 64, 32, 2, 0.5)).toThrow(/expected 64 anchors/);
  });
});

describe('nms', () => {
  const box = (x: number, y: number, s: number) => ({ x, y, width: s, height: s });
  it('keeps the best of overlapping boxes and every separate box', () => {
    const kept = nms(
      [
        { box: box(0, 0, 10), score: 0.8 },
        { box: box(1, 1, 10), score: 0.9 },
        { box: box(50, 50, 10), score: 0.6 },
        { box: box(4, 1, 10), score: 0.7 }, // IoU with the (1,1) box = 70/130 → suppressed
        { box: box(6, 0, 10), score: 0.65 }, // IoU with the (1,1) box = 45/155 → kept
      ],
      0.4,
    );
    expect(kept.map((k) => k.score)).toEqual([0.9, 0.65, 0.6]);
  });
  it('iou of identical boxes is 1 and of disjoint boxes 0', () => {
    expect(iou(box(0, 0, 4), box(0, 0, 4))).toBe(1);
    expect(iou(box(0, 0, 4), box(4, 0, 4))).toBe(0);
  });
});

describe('makeView', () => {
  it('letterboxes at the top-left and maps detector coordinates back exactly', () => {
    const v = makeView({ x: 0, y: 0, width: 1280, height: 886 }, 0, [640, 640], false);
    expect([v.inputWidth, v.inputHeight]).toEqual([640, 640]);
    expect(applyAffine(v.toImage, 0, 0)).toEqual([0, 0]);
    expect(applyAffine(v.toImage, 640, 443)).toEqual([1280, 886]);
    // Pixel centres: detector pixel 0 samples the centre of the first 2x2 block.
    expect(applyAffine(v.toSample, 0, 0)).toEqual([0.5, 0.5]);
  });

  it('shrinks a dynamic input to the content, in multiples of 32', () => {
    const v = makeView({ x: 0, y: 0, width: 1280, height: 886 }, 0, [640, 640], true);
    expect([v.inputWidth, v.inputHeight]).toEqual([640, 448]);
  });

  it('maps a padded region back with the padding offset', () => {
    const v = makeView({ x: -75, y: -75, width: 300, height: 300 }, 0, [640, 640], false);
    const [x, y] = applyAffine(v.toImage, 160, 160); // a quarter in = 75 px of the region
    expect(x).toBeCloseTo(0, 9);
    expect(y).toBeCloseTo(0, 9);
  });

  it.each([1, 2, 3] as const)('quarter turn %i maps a box back to the same image rectangle', (turns) => {
    const region = { x: 10, y: 20, width: 200, height: 100 };
    const v = makeView(region, turns, [640, 640], false);
    // The whole turned region, as a detector box, maps back onto the region itself.
    const odd = turns % 2 === 1;
    const s = Math.min(640 / (odd ? 100 : 200), 640 / (odd ? 200 : 100));
    const w = (odd ? 100 : 200) * s;
    const h = (odd ? 200 : 100) * s;
    const lm: Point = [0, 0];
    const c = candidateToImage(
      { box: { x: 0, y: 0, width: w, height: h }, score: 1, landmarks: [lm, lm, lm, lm, lm] },
      v,
    );
    expect(c.box.x).toBeCloseTo(10, 9);
    expect(c.box.y).toBeCloseTo(20, 9);
    expect(c.box.width).toBeCloseTo(200, 9);
    expect(c.box.height).toBeCloseTo(100, 9);
  });
});

describe('uprightTurns', () => {
  const upright: Landmarks = [
    [40, 50],
    [70, 50],
    [55, 65],
    [43, 80],
    [67, 80],
  ];
  const rotate = (l: Landmarks, deg: number): Landmarks => {
    const r = (deg * Math.PI) / 180;
    return l.map(([x, y]): Point => [x * Math.cos(r) - y * Math.sin(r), x * Math.sin(r) + y * Math.cos(r)]) as unknown as Landmarks;
  };
  it.each([
    [0, 0],
    [30, 0],
    [-40, 0],
    [90, 3],
    [-90, 1],
    [180, 2],
    [110, 3],
  ])('a face rolled by %i° needs %i clockwise quarter turns', (deg, turns) => {
    expect(uprightTurns(rotate(upright, deg))).toBe(turns);
  });
});
