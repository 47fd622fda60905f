/**
 * Draws face boxes, landmarks and optional labels over a photo and encodes it as JPEG. One sharp
 * pipeline (resize, SVG overlay composite, JPEG encode) runs on libvips threads, off the event loop.
 * The service draws on the pixels the inference worker already decoded (a `Picture`); from encoded
 * bytes the pipeline decodes first (EXIF orientation, shrink-on-load).
 *
 * JPEG without optimised Huffman tables: encoding is about 3x faster (2048 px: ~7 ms instead of
 * ~20 ms on one EPYC core) for files 1-15% larger, a good trade for a preview made on the request path.
 */
import sharp from 'sharp';
import type { DrawnFace, Picture } from '../domain/face.js';
import { classify } from './image-decoder.js';


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

interface Style {
  stroke: number;
  font: number;
}

const styleFor = (width: number, height: number): Style => {
  const stroke = Math.max(2, Math.round(Math.max(width, height) / 400));
  return { stroke, font: Math.max(12, stroke * 7) };
};

/** SVG elements of one face (box, landmarks, label), in output pixels (face coordinates x `scale`). */
function faceSvg(f: DrawnFace, scale: number, { stroke, font }: Style): string {
  const n = (v: number): string => (v * scale).toFixed(1);
  const colour = f.highlight ? '#22c55e' : '#f59e0b';
  const { x, y, width: w, height: h } = f.box;
  const dots = f.landmarks.map(([px, py]) => `<circle cx="${n(px)}" cy="${n(py)}" r="${stroke}" fill="${colour}"/>`).join('');
  const label = f.label
    ? `<text x="${n(x)}" y="${labelBaseline(f, scale, { stroke, font }).toFixed(1)}" font-family="sans-serif" font-size="${font}" fill="${colour}" stroke="#000" stroke-width="${Math.max(1, stroke / 3)}" paint-order="stroke">${escapeXml(f.label)}</text>`
    : '';
  return `<rect x="${n(x)}" y="${n(y)}" width="${n(w)}" height="${n(h)}" fill="none" stroke="${colour}" stroke-width="${stroke}"/>${dots}${label}`;
}

const labelBaseline = (f: DrawnFace, scale: number, { stroke, font }: Style): number => Math.max(font, f.box.y * scale - stroke);

export interface FaceOverlay {
  svg: Buffer;
  left: number;
  top: number;
}

/** Pixels blended between two turns of the event loop (~2-3 ms of JavaScript). */
const BLEND_PIXELS_PER_TURN = 400_000;

/** Above this many faces one overlay covers them all: rendering 100 small SVGs costs more than one large. */
const ONE_OVERLAY_ABOVE = 12;

/**
 * What is drawn, as SVGs covering only the drawn rectangles and where they go: one per face (box,
 * landmarks, label), or for a crowd one around all faces.
 */
export function faceOverlays(width: number, height: number, faces: readonly DrawnFace[], scale = 1): FaceOverlay[] {
  const style = styleFor(width, height);
  const { stroke, font } = style;
  const pad = 2 * stroke;
  const extent = (f: DrawnFace): { left: number; top: number; right: number; bottom: number } => {
    const xs = [f.box.x, f.box.x + f.box.width, ...f.landmarks.map((p) => p[0])].map((v) => v * scale);
    const ys = [f.box.y, f.box.y + f.box.height, ...f.landmarks.map((p) => p[1])].map((v) => v * scale);
    if (f.label) {
      const baseline = labelBaseline(f, scale, style);
      // Generous for sans-serif glyphs: 0.7 em per character, and the descent below the baseline.
      xs.push(f.box.x * scale + f.label.length * font * 0.7);
      ys.push(baseline - font, baseline + font * 0.3);
    }
    return { left: Math.min(...xs), top: Math.min(...ys), right: Math.max(...xs), bottom: Math.max(...ys) };
  };
  const overlay = (group: readonly DrawnFace[]): FaceOverlay[] => {
    const e = group.map(extent);
    const left = Math.max(0, Math.floor(Math.min(...e.map((r) => r.left)) - pad));
    const top = Math.max(0, Math.floor(Math.min(...e.map((r) => r.top)) - pad));
    const right = Math.min(width, Math.ceil(Math.max(...e.map((r) => r.right)) + pad));
    const bottom = Math.min(height, Math.ceil(Math.max(...e.map((r) => r.bottom)) + pad));
    if (right - left < 1 || bottom - top < 1) return [];
    const svg =
      `<svg xmlns="http://www.w3.org/2000/svg" width="${right - left}" height="${bottom - top}">` +
      `<g transform="translate(${-left} ${-top})">${group.map((f) => faceSvg(f, scale, style)).join('')}</g></svg>`;
    return [{ svg: Buffer.from(svg), top, left }];
  };
  if (faces.length === 0) return [];
  return faces.length > ONE_OVERLAY_ABOVE ? overlay(faces) : faces.flatMap((f) => overlay([f]));
}

const isPicture = (source: Uint8Array | Picture): source is Picture => !(source instanceof Uint8Array);

/** The upright RGB pixels to draw on, `w` x `h` (resized, or decoded from the bytes, as needed). */
async function canvas(source: Uint8Array | Picture, w: number, h: number, o: AnnotateOptions): Promise<Picture> {
  if (isPicture(source)) {
    if (source.width === w && source.height === h) return source;
    const { data, info } = await sharp(source.data, { raw: { width: source.width, height: source.height, channels: 3 } })
      .resize(w, h, { fit: 'fill' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { data, width: info.width, height: info.height };
  }
  let pipeline = sharp(source, { limitInputPixels: o.maxPixels }).rotate();
  if (w !== o.width || h !== o.height) pipeline = pipeline.resize(w, h, { fit: 'fill' });
  try {
    const { data, info } = await pipeline.flatten({ background: '#000000' }).toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    return { data, width: info.width, height: info.height };
  } catch (error) {
    throw classify(error, 'the photo to annotate');
  }
}

/**
 * Blends each face's overlay (rendered by librsvg, on libvips threads) into the pixels, in place.
 * The blend touches only the overlays' rectangles: faces, not the frame (compositing with sharp
 * works through the whole frame: 2000 x 1428 took ~14 ms more).
 */
async function drawOverlays(target: Picture, overlays: readonly FaceOverlay[]): Promise<void> {
  const rendered = await Promise.all(
    overlays.map(async (o) => ({ ...o, ...(await sharp(o.svg).ensureAlpha().raw().toBuffer({ resolveWithObject: true })) })),
  );
  const px = target.data;
  let sinceYield = 0;
  for (const { data, info, left, top } of rendered) {
    const width = Math.min(info.width, target.width - left);
    const height = Math.min(info.height, target.height - top);
    for (let y = 0; y < height; y++) {
      let src = y * info.width * 4;
      let dst = ((top + y) * target.width + left) * 3;
      for (let x = 0; x < width; x++, src += 4, dst += 3) {
        const a = data[src + 3]!;
        if (a === 0) continue;
        const k = a / 255;
        px[dst] = px[dst]! + (data[src]! - px[dst]!) * k;
        px[dst + 1] = px[dst + 1]! + (data[src + 1]! - px[dst + 1]!) * k;
        px[dst + 2] = px[dst + 2]! + (data[src + 2]! - px[dst + 2]!) * k;
      }
      // A crowd's overlay spans the frame (millions of pixels): let the event loop run in between.
      sinceYield += width;
      if (sinceYield >= BLEND_PIXELS_PER_TURN) {
        sinceYield = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }
}

/**
 * The upright photo with its faces drawn, as JPEG. `source` is the encoded photo or its decoded
 * upright pixels (of any size: they are scaled to the output, never up; a picture is drawn on in
 * place); `faces` are in upright original coordinates (`o.width` x `o.height`).
 */
export async function annotate(source: Uint8Array | Picture, faces: readonly DrawnFace[], o: AnnotateOptions): Promise<Buffer> {
  const scale = o.maxSide ? Math.min(1, o.maxSide / Math.max(o.width, o.height)) : 1;
  let w = Math.max(1, Math.round(o.width * scale));
  let h = Math.max(1, Math.round(o.height * scale));
  if (isPicture(source) && source.width < w) {
    // Decoded smaller than the output would be: drawn at the decoded size.
    w = source.width;
    h = source.height;
  }
  const pixels = await canvas(source, w, h, o);
  await drawOverlays(pixels, faceOverlays(w, h, faces, w / o.width));
  return sharp(pixels.data, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: o.quality ?? 85, optimiseCoding: false })
    .toBuffer();
}
