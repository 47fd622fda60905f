/**
 * 2-D affine maths for the pipeline: similarity estimation (Umeyama), inversion, point mapping,
 * and a bilinear sampler that writes a normalised planar (CHW) float tensor in one pass.
 */
import type { Point } from '../domain/face.js';

/** x' = a·x + b·y + c ; y' = d·x + e·y + f */
export interface Affine {
  a: number;
  b: number;
  c: number;
  d: number;
  e: number;
  f: number;
}

export function applyAffine(m: Affine, x: number, y: number): [number, number] {
  return [m.a * x + m.b * y + m.c, m.d * x + m.e * y + m.f];
}

export function invertAffine(m: Affine): Affine {
  const det = m.a * m.e - m.b * m.d;
  if (Math.abs(det) < 1e-12) throw new RangeError('affine transform is singular');
  const a = m.e / det;
  const b = -m.b / det;
  const d = -m.d / det;
  const e = m.a / det;
  return { a, b, c: -(a * m.c + b * m.f), d, e, f: -(d * m.c + e * m.f) };
}

/** First `first`, then `second`. */
export function composeAffine(second: Affine, first: Affine): Affine {
  return {
    a: second.a * first.a + second.b * first.d,
    b: second.a * first.b + second.b * first.e,
    c: second.a * first.c + second.b * first.f + second.c,
    d: second.d * first.a + second.e * first.d,
    e: second.d * first.b + second.e * first.e,
    f: second.d * first.c + second.e * first.f + second.f,
  };
}

/**
 * Least-squares similarity transform (rotation, uniform scale, translation; no reflection) taking
 * `src` onto `dst`: Umeyama (1991). In two dimensions the SVD of the 2x2 covariance has a closed
 * form — the optimal rotation·scale is the complex number Σ conj(s)·d / Σ|s|² over centred points —
 * which is what this computes.
 */
export function estimateSimilarity(src: readonly Point[], dst: readonly Point[]): Affine {
  const n = src.length;
  if (n < 2 || dst.length !== n) throw new RangeError('need at least two point pairs of equal count');
  let msx = 0;
  let msy = 0;
  let mdx = 0;
  let mdy = 0;
  for (let i = 0; i < n; i++) {
    msx += src[i]![0];
    msy += src[i]![1];
    mdx += dst[i]![0];
    mdy += dst[i]![1];
  }
  msx /= n;
  msy /= n;
  mdx /= n;
  mdy /= n;
  let re = 0;
  let im = 0;
  let norm = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i]![0] - msx;
    const sy = src[i]![1] - msy;
    const dx = dst[i]![0] - mdx;
    const dy = dst[i]![1] - mdy;
    re += sx * dx + sy * dy;
    im += sx * dy - sy * dx;
    norm += sx * sx + sy * sy;
  }
  if (norm < 1e-12) throw new RangeError('source points are degenerate');
  const a = re / norm;
  const b = im / norm;
  return { a, b: -b, c: mdx - (a * msx - b * msy), d: b, e: a, f: mdy - (b * msx + a * msy) };
}

export interface RgbImage {
  /** Interleaved 8-bit RGB, row-major, no padding. */
  data: Uint8Array;
  width: number;
  height: number;
}

export interface TensorLayout {
  width: number;
  height: number;
  mean: number;
  std: number;
  /** Write channels as BGR instead of RGB. */
  bgr: boolean;
}

/**
 * Fills `out` (planar CHW, starting at `offset`) with `image` sampled bilinearly at
 * `toSource(u, v)` for every output pixel (u, v), normalised as (x - mean) / std. Taps outside the
 * image read as 0 (black), like OpenCV's constant border.
 */
export function sampleToTensor(
  image: RgbImage,
  toSource: Affine,
  layout: TensorLayout,
  out: Float32Array,
  offset = 0,
): void {
  const { width: ow, height: oh, mean, std, bgr } = layout;
  const { data, width: iw, height: ih } = image;
  const inv = 1 / std;
  const zero = -mean * inv;
  const plane = ow * oh;
  const r0 = offset + (bgr ? 2 : 0) * plane;
  const g0 = offset + plane;
  const b0 = offset + (bgr ? 0 : 2) * plane;
  const stride = iw * 3;
  const { a, b, c, d, e, f } = toSource;
  for (let v = 0; v < oh; v++) {
    let sx = b * v + c;
    let sy = e * v + f;
    const row = v * ow;
    for (let u = 0; u < ow; u++, sx += a, sy += d) {
      const o = row + u;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      if (x0 < -1 || y0 < -1 || x0 >= iw || y0 >= ih) {
        out[r0 + o] = zero;
        out[g0 + o] = zero;
        out[b0 + o] = zero;
        continue;
      }
      const fx = sx - x0;
      const fy = sy - y0;
      const w00 = (1 - fx) * (1 - fy);
      const w01 = fx * (1 - fy);
      const w10 = (1 - fx) * fy;
      const w11 = fx * fy;
      let r: number;
      let g: number;
      let bl: number;
      if (x0 >= 0 && y0 >= 0 && x0 + 1 < iw && y0 + 1 < ih) {
        const p = y0 * stride + x0 * 3;
        const q = p + stride;
        r = w00 * data[p]! + w01 * data[p + 3]! + w10 * data[q]! + w11 * data[q + 3]!;
        g = w00 * data[p + 1]! + w01 * data[p + 4]! + w10 * data[q + 1]! + w11 * data[q + 4]!;
        bl = w00 * data[p + 2]! + w01 * data[p + 5]! + w10 * data[q + 2]! + w11 * data[q + 5]!;
      } else {
        r = g = bl = 0;
        const taps: [number, number, number][] = [
          [x0, y0, w00],
          [x0 + 1, y0, w01],
          [x0, y0 + 1, w10],
          [x0 + 1, y0 + 1, w11],
        ];
        for (const [tx, ty, w] of taps) {
          if (tx < 0 || ty < 0 || tx >= iw || ty >= ih) continue;
          const p = ty * stride + tx * 3;
          r += w * data[p]!;
          g += w * data[p + 1]!;
          bl += w * data[p + 2]!;
        }
      }
      out[r0 + o] = (r - mean) * inv;
      out[g0 + o] = (g - mean) * inv;
      out[b0 + o] = (bl - mean) * inv;
    }
  }
}
