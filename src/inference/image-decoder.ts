/**
 * Image decoding with sharp (libvips): EXIF orientation applied, JPEG/PNG/WebP/GIF/TIFF/AVIF to
 * 8-bit RGB, a pixel limit against decompression bombs, and shrink-on-load so that camera originals
 * are decoded no larger than the pipeline needs. libvips runs on its own threads, off the event loop.
 *
 * Damage is IMAGE_CORRUPT, never a partly grey picture: pixels are decoded with `failOn: 'error'`,
 * which turns libvips' truncation warnings (a JPEG's "premature end", a PNG whose IHDR promises more
 * rows than its IDAT holds) into errors; WebP and GIF fail in the header read already. Bytes that
 * start with a supported format's signature but that libvips cannot even identify (a TIFF whose IFD,
 * written last, was cut off; an AVIF cut short) are that format damaged, not an unsupported one.
 * An image whose pixel data is whole but misses its end marker (PNG's IEND, GIF's trailer) decodes.
 */
import sharp from 'sharp';
import {
  CorruptImageError,
  EmptyImageError,
  FacematchError,
  ImageTooLargeError,
  UnsupportedImageError,
} from '../domain/errors.js';
import type { DecodeConfig } from '../config/config.js';
import type { RgbImage } from './geometry.js';

export interface DecodedImage {
  image: RgbImage;
  /** Size of the upright original, in pixels; face coordinates are reported in this frame. */
  width: number;
  height: number;
  /** decoded pixels per original pixel (≤ 1). */
  scaleX: number;
  scaleY: number;
  format: string;
}

const FORMATS = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif']);

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** The supported format whose signature the bytes start with (JPEG, PNG, GIF, WebP, TIFF, AVIF), if any. */
function formatSignature(bytes: Uint8Array): string | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, 64));
  const text = (start: number, end: number): string => b.toString('latin1', start, end);
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'JPEG';
  if (b.subarray(0, 8).equals(PNG_SIGNATURE)) return 'PNG';
  if (text(0, 6) === 'GIF87a' || text(0, 6) === 'GIF89a') return 'GIF';
  if (text(0, 4) === 'RIFF' && text(8, 12) === 'WEBP') return 'WebP';
  if (['II*\0', 'MM\0*', 'II+\0', 'MM\0+'].includes(text(0, 4))) return 'TIFF';
  if (text(4, 8) === 'ftyp') {
    // ISO BMFF: the major brand, then compatible brands up to the end of the ftyp box.
    const end = Math.min(b.length, b.length >= 4 ? b.readUInt32BE(0) : 0);
    for (let at = 8; at + 4 <= end; at += at === 8 ? 8 : 4) {
      if (text(at, at + 4) === 'avif' || text(at, at + 4) === 'avis') return 'AVIF';
    }
  }
  return undefined;
}

/**
 * A sharp failure as the typed error a caller can act on (too large, not an image, corrupt).
 * `format`: what the bytes are known to be (from their metadata or signature); libvips failing to
 * read a known format means damage, whatever words it uses.
 */
export function classify(error: unknown, what: string, format?: string): FacematchError {
  const message = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(message)) return new ImageTooLargeError(`${what} has more pixels than allowed`, { cause: error });
  if (format === undefined && /unsupported image format|bad seek|not a known file format/i.test(message)) {
    return new UnsupportedImageError(`${what} is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, AVIF)`, {
      cause: error,
    });
  }
  const damaged = format === undefined ? '' : ` (a truncated or damaged ${format.toUpperCase()})`;
  return new CorruptImageError(`${what} could not be decoded${damaged}: ${message.split('\n')[0]}`, { cause: error });
}

export async function decodeImage(bytes: Uint8Array, config: DecodeConfig, what = 'the image'): Promise<DecodedImage> {
  if (bytes.length === 0) throw new EmptyImageError(`${what} is empty (0 bytes)`);
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (error) {
    throw classify(error, what, formatSignature(bytes));
  }
  const format = meta.format ?? 'unknown';
  if (!FORMATS.has(format) || (format === 'heif' && meta.compression !== 'av1')) {
    throw new UnsupportedImageError(`${what} is ${format.toUpperCase()}; supported are JPEG, PNG, WebP, GIF, TIFF, AVIF`);
  }
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (w <= 0 || h <= 0) throw new CorruptImageError(`${what} has no dimensions`);
  if (w * h > config.maxPixels) {
    throw new ImageTooLargeError(
      `${what} is ${w}x${h} (${((w * h) / 1e6).toFixed(1)} MP); the limit is ${(config.maxPixels / 1e6).toFixed(1)} MP`,
    );
  }
  const swap = (meta.orientation ?? 1) >= 5;
  const width = swap ? h : w;
  const height = swap ? w : h;
  const scale = config.maxSide > 0 ? Math.min(1, config.maxSide / Math.max(width, height)) : 1;
  const tw = Math.max(1, Math.round(width * scale));
  const th = Math.max(1, Math.round(height * scale));
  try {
    let pipeline = sharp(bytes, { limitInputPixels: config.maxPixels, failOn: 'error' }).rotate();
    if (tw !== width || th !== height) pipeline = pipeline.resize(tw, th, { fit: 'fill', kernel: 'linear' });
    const { data, info } = await pipeline
      .flatten({ background: '#000000' })
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new CorruptImageError(`${what} decoded to ${info.channels} channels, expected 3`);
    return {
      image: { data, width: info.width, height: info.height },
      width,
      height,
      scaleX: info.width / width,
      scaleY: info.height / height,
      format,
    };
  } catch (error) {
    if (error instanceof FacematchError) throw error;
    throw classify(error, what, format === 'heif' ? 'AVIF' : format);
  }
}
