/**
 * SCRFD post-processing as pure functions: detection views (letterbox, padding, quarter turns),
 * anchor decoding of the stride levels, and non-maximum suppression. No onnxruntime here, so the
 * maths is unit-tested on hand-made tensors.
 */
import type { Box, Landmarks, Point } from '../domain/face.js';
import { applyAffine, composeAffine, type Affine } from './geometry.js';

export interface Region {
  x: number;
  y: number;
  width: number;
  height: number;
}

export type QuarterTurns = 0 | 1 | 2 | 3;

/** How one detector input is cut from the image. */
export interface DetectionView {
  inputWidth: number;
  inputHeight: number;
  /** Continuous detector-input coordinates → image coordinates. */
  toImage: Affine;
  /** Detector pixel (u, v) → image sample position, with pixel centres at integers (for the sampler). */
  toSample: Affine;
}

const roundUp = (n: number, to: number): number => Math.max(to, Math.ceil(n / to) * to);

/**
 * A letterbox view of `region` of the image (it may reach outside the image: the outside reads as
 * black padding), turned clockwise by `turns` quarter turns, scaled to fit `maxInput` with the image
 * at the top-left. With `dynamicInput` the input shrinks to the content, rounded up to `align`.
 */
export function makeView(
  region: Region,
  turns: QuarterTurns,
  maxInput: readonly [number, number],
  dynamicInput: boolean,
  align = 32,
): DetectionView {
  const { x, y, width: rw, height: rh } = region;
  const odd = turns % 2 === 1;
  const tw = odd ? rh : rw;
  const th = odd ? rw : rh;
  const scale = Math.min(maxInput[0] / tw, maxInput[1] / th);
  const inputWidth = dynamicInput ? Math.min(maxInput[0], roundUp(tw * scale, align)) : maxInput[0];
  const inputHeight = dynamicInput ? Math.min(maxInput[1], roundUp(th * scale, align)) : maxInput[1];
  const s = 1 / scale;
  // Turned-region coordinates (p, q) → region coordinates, then + region origin.
  let turn: Affine;
  switch (turns) {
    case 0:
      turn = { a: s, b: 0, c: x, d: 0, e: s, f: y };
      break;
    case 1:
      turn = { a: 0, b: s, c: x, d: -s, e: 0, f: y + rh };
      break;
    case 2:
      turn = { a: -s, b: 0, c: x + rw, d: 0, e: -s, f: y + rh };
      break;
    case 3:
      turn = { a: 0, b: -s, c: x + rw, d: s, e: 0, f: y };
      break;
  }
  const toSample = composeAffine(
    { a: 1, b: 0, c: -0.5, d: 0, e: 1, f: -0.5 },
    composeAffine(turn, { a: 1, b: 0, c: 0.5, d: 0, e: 1, f: 0.5 }),
  );
  return { inputWidth, inputHeight, toImage: turn, toSample };
}

/** One stride level of SCRFD output, flattened: scores [n], boxes [n·4], landmarks [n·10]. */
export interface ScrfdLevel {
  stride: number;
  scores: Float32Array;
  boxes: Float32Array;
  kps: Float32Array;
}

export interface Candidate {
  box: Box;
  score: number;
  landmarks: Landmarks;
}

/**
 * Decodes distances around anchor centres (cell · stride, `anchorsPerCell` anchors a cell, the
 * anchors of a cell adjacent) into boxes and landmarks in detector-input coordinates.
 */
export function decodeScrfd(
  levels: readonly ScrfdLevel[],
  inputWidth: number,
  inputHeight: number,
  anchorsPerCell: number,
  scoreThreshold: number,
): Candidate[] {
  const out: Candidate[] = [];
  for (const { stride, scores, boxes, kps } of levels) {
    const fw = Math.ceil(inputWidth / stride);
    const fh = Math.ceil(inputHeight / stride);
    const n = fw * fh * anchorsPerCell;
    if (scores.length !== n || boxes.length !== n * 4 || kps.length !== n * 10) {
      throw new RangeError(
        `stride ${stride}: expected ${n} anchors for a ${inputWidth}x${inputHeight} input, got ${scores.length} scores, ${boxes.length / 4} boxes, ${kps.length / 10} landmark sets`,
      );
    }
    for (let i = 0; i < n; i++) {
      const score = scores[i]!;
      if (score < scoreThreshold) continue;
      const cell = Math.floor(i / anchorsPerCell);
      const cx = (cell % fw) * stride;
      const cy = Math.floor(cell / fw) * stride;
      const x1 = cx - boxes[i * 4]! * stride;
      const y1 = cy - boxes[i * 4 + 1]! * stride;
      const x2 = cx + boxes[i * 4 + 2]! * stride;
      const y2 = cy + boxes[i * 4 + 3]! * stride;
      const k = i * 10;
      const pt = (j: number): Point => [cx + kps[k + 2 * j]! * stride, cy + kps[k + 2 * j + 1]! * stride];
      out.push({
        box: { x: x1, y: y1, width: x2 - x1, height: y2 - y1 },
        score,
        landmarks: [pt(0), pt(1), pt(2), pt(3), pt(4)],
      });
    }
  }
  return out;
}

export function iou(a: Box, b: Box): number {
  const ix = Math.max(0, Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x));
  const iy = Math.max(0, Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y));
  const inter = ix * iy;
  const union = a.width * a.height + b.width * b.height - inter;
  return union <= 0 ? 0 : inter / union;
}

/** Greedy non-maximum suppression: highest score first, drop overlaps above `threshold` IoU. */
export function nms<T extends { box: Box; score: number }>(items: readonly T[], threshold: number): T[] {
  const sorted = [...items].sort((p, q) => q.score - p.score);
  const kept: T[] = [];
  for (const item of sorted) {
    if (kept.every((k) => iou(k.box, item.box) <= threshold)) kept.push(item);
  }
  return kept;
}

/** Maps a detector-input candidate into image coordinates (exact for quarter turns). */
export function candidateToImage(c: Candidate, view: DetectionView): Candidate {
  const m = view.toImage;
  const corners = [
    applyAffine(m, c.box.x, c.box.y),
    applyAffine(m, c.box.x + c.box.width, c.box.y + c.box.height),
  ];
  const xs = corners.map((p) => p[0]);
  const ys = corners.map((p) => p[1]);
  const x = Math.min(...xs);
  const y = Math.min(...ys);
  const map = (p: Point): Point => applyAffine(m, p[0], p[1]);
  const l = c.landmarks;
  return {
    box: { x, y, width: Math.max(...xs) - x, height: Math.max(...ys) - y },
    score: c.score,
    landmarks: [map(l[0]), map(l[1]), map(l[2]), map(l[3]), map(l[4])],
  };
}

/**
 * The quarter turns that bring a face upright, from its landmarks: the direction from the eyes'
 * midpoint to the mouth's midpoint points down (+y) in an upright face.
 */
export function uprightTurns(l: Landmarks): QuarterTurns {
  const dx = (l[3][0] + l[4][0] - l[0][0] - l[1][0]) / 2;
  const dy = (l[3][1] + l[4][1] - l[0][1] - l[1][1]) / 2;
  const down = (Math.atan2(dy, dx) * 180) / Math.PI; // 90 when upright
  // A clockwise quarter turn of the view adds 90° to every direction.
  const k = Math.round((90 - down) / 90);
  return (((k % 4) + 4) % 4) as QuarterTurns;
}

