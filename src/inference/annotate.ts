/**
 * Draws face boxes, landmarks and optional labels over a photo and encodes it as JPEG. The overlay
 * is an SVG composited by sharp, so rasterising and encoding run on libvips threads.
 */
import sharp from 'sharp';
import type { DetectedFace } from '../domain/face.js';

export interface AnnotatedFace extends DetectedFace {
  label?: string;
  /** Drawn in a second colour (e.g. a matched face). */
  highlight?: boolean;
}

const escapeXml = (s: string): string =>
  s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);

export function overlaySvg(width: number, height: number, faces: readonly AnnotatedFace[]): string {
  const stroke = Math.max(2, Math.round(Math.max(width, height) / 400));
  const font = Math.max(12, stroke * 7);
  const parts = faces.map((f) => {
    const colour = f.highlight ? '#22c55e' : '#f59e0b';
    const { x, y, width: w, height: h } = f.box;
    const dots = f.landmarks
      .map(([px, py]) => `<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="${stroke}" fill="${colour}"/>`)
      .join('');
    const label = f.label
      ? `<text x="${x.toFixed(1)}" y="${Math.max(font, y - stroke).toFixed(1)}" font-family="sans-serif" font-size="${font}" fill="${colour}" stroke="#000" stroke-width="${Math.max(1, stroke / 3)}" paint-order="stroke">${escapeXml(f.label)}</text>`
      : '';
    return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}" fill="none" stroke="${colour}" stroke-width="${stroke}"/>${dots}${label}`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${parts.join('')}</svg>`;
}

/** The upright photo with its faces drawn, as JPEG. `faces` are in upright original coordinates. */
export async function annotate(
  bytes: Uint8Array,
  faces: readonly AnnotatedFace[],
  options: { maxPixels: number; quality?: number },
): Promise<Buffer> {
  // Orientation is applied first so that the overlay's coordinates are those of the upright image.
  const { data, info } = await sharp(bytes, { limitInputPixels: options.maxPixels })
    .rotate()
    .flatten({ background: '#000000' })
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  const svg = overlaySvg(info.width, info.height, faces);
  return sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } })
    .composite([{ input: Buffer.from(svg), top: 0, left: 0 }])
    .jpeg({ quality: options.quality ?? 85, mozjpeg: false })
    .toBuffer();
}
