/**
 * Draws face boxes, landmarks and optional labels over a photo and encodes it as JPEG. One sharp
 * pipeline (EXIF orientation, shrink-on-load resize, SVG overlay composite, JPEG encode) runs on
 * libvips threads; no decoded pixels pass through JavaScript.
 */
import sharp from 'sharp';
import type { DetectedFace } from '../domain/face.js';

export interface AnnotatedFace extends DetectedFace {
  label?: string;
  /** Drawn in a second colour (e.g. a matched face). */
  highlight?: boolean;
}

export interface AnnotateOptions {
  /** Size of the upright photo, the frame the face coordinates are in. */
  width: number;
  height: number;
  maxPixels: number;
  /** The copy is shrunk so that its longer side is at most this (0: original size). */
  maxSide?: number;
  quality?: number;
}

const escapeXml = (s: string): string =>
  s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);

/** An SVG of the faces for a `width` x `height` image; face coordinates are multiplied by `scale`. */
export function overlaySvg(width: number, height: number, faces: readonly AnnotatedFace[], scale = 1): string {
  const stroke = Math.max(2, Math.round(Math.max(width, height) / 400));
  const font = Math.max(12, stroke * 7);
  const n = (v: number): string => (v * scale).toFixed(1);
  const parts = faces.map((f) => {
    const colour = f.highlight ? '#22c55e' : '#f59e0b';
    const { x, y, width: w, height: h } = f.box;
    const dots = f.landmarks.map(([px, py]) => `<circle cx="${n(px)}" cy="${n(py)}" r="${stroke}" fill="${colour}"/>`).join('');
    const label = f.label
      ? `<text x="${n(x)}" y="${Math.max(font, y * scale - stroke).toFixed(1)}" font-family="sans-serif" font-size="${font}" fill="${colour}" stroke="#000" stroke-width="${Math.max(1, stroke / 3)}" paint-order="stroke">${escapeXml(f.label)}</text>`
      : '';
    return `<rect x="${n(x)}" y="${n(y)}" width="${n(w)}" height="${n(h)}" fill="none" stroke="${colour}" stroke-width="${stroke}"/>${dots}${label}`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${parts.join('')}</svg>`;
}

/** The upright photo with its faces drawn, as JPEG. `faces` are in upright original coordinates. */
export async function annotate(bytes: Uint8Array, faces: readonly AnnotatedFace[], o: AnnotateOptions): Promise<Buffer> {
  const scale = o.maxSide ? Math.min(1, o.maxSide / Math.max(o.width, o.height)) : 1;
  const w = Math.max(1, Math.round(o.width * scale));
  const h = Math.max(1, Math.round(o.height * scale));
  let pipeline = sharp(bytes, { limitInputPixels: o.maxPixels }).rotate();
  if (scale < 1) pipeline = pipeline.resize(w, h, { fit: 'fill' });
  return pipeline
    .flatten({ background: '#000000' })
    .composite([{ input: Buffer.from(overlaySvg(w, h, faces, w / o.width)), top: 0, left: 0 }])
    .jpeg({ quality: o.quality ?? 85 })
    .toBuffer();
}
