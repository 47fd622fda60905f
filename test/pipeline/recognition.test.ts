/**
 * Identification on real photos: enrol the first photo of each of the 23 identities, probe every
 * other photo. Also the photo transformations a real upload goes through.
 */
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { cosine, type Face } from '../../src/domain/face.js';
import type { FaceAnalyzer } from '../../src/inference/face-analyzer.js';
import { identities, read, sharedAnalyzer } from '../support/shared.js';

let analyzer: FaceAnalyzer;
const largest = async (bytes: Buffer): Promise<Face> => {
  const face = (await analyzer.analyze(bytes)).faces[0];
  if (!face) throw new Error('no face');
  return face;
};

beforeAll(async () => {
  analyzer = await sharedAnalyzer();
});

describe('identification over testdata/faces', () => {
  it('ranks the right person first for >= 99% of probes, and accepts < 1% of impostor pairs at the threshold', async () => {
    const people = identities();
    const gallery = new Map<string, Float32Array>();
    const probes: { id: string; file: string; embedding: Float32Array }[] = [];
    for (const { id, files } of people) {
      const [first, ...rest] = files;
      gallery.set(id, (await largest(await read(first!))).embedding);
      for (const file of rest) probes.push({ id, file, embedding: (await largest(await read(file))).embedding });
    }
    let correct = 0;
    let impostorPairs = 0;
    let impostorAccepted = 0;
    let genuineRejected = 0;
    const misses: string[] = [];
    for (const p of probes) {
      const ranked = [...gallery].map(([id, e]) => ({ id, sim: cosine(e, p.embedding) })).sort((a, b) => b.sim - a.sim);
      if (ranked[0]!.id === p.id) correct++;
      else misses.push(`${p.file} → ${ranked[0]!.id}`);
      for (const r of ranked) {
        if (r.id === p.id) {
          if (r.sim < analyzer.threshold) genuineRejected++;
        } else {
          impostorPairs++;
          if (r.sim >= analyzer.threshold) impostorAccepted++;
        }
      }
    }
    const rank1 = correct / probes.length;
    const far = impostorAccepted / impostorPairs;
    console.info(
      `identification: ${people.length} enrolled, ${probes.length} probes, rank-1 ${(rank1 * 100).toFixed(1)}%, ` +
        `threshold ${analyzer.threshold}: impostor pairs accepted ${impostorAccepted}/${impostorPairs} (${(far * 100).toFixed(2)}%), ` +
        `genuine pairs rejected ${genuineRejected}/${probes.length}`,
    );
    expect(people).toHaveLength(23);
    expect(misses).toEqual([]);
    expect(rank1).toBeGreaterThanOrEqual(0.99);
    expect(far).toBeLessThan(0.01);
  });
});

describe('the same face survives what happens to uploads', () => {
  // The first portrait of every identity (different sizes, crops and cameras).
  const samples = identities().map((p) => p.files[0]!);

  it.each(samples)('%s: EXIF rotation, half size, JPEG re-encode keep cosine >= 0.95', async (file) => {
    const bytes = await read(file);
    const base = (await largest(bytes)).embedding;
    const upright = sharp(bytes).rotate();
    const { width } = await upright.clone().toBuffer({ resolveWithObject: true }).then((r) => r.info);
    const variants = {
      // Pixels stored turned a quarter anticlockwise, with the EXIF tag that turns them back.
      exif: await upright.clone().rotate(-90).withMetadata({ orientation: 6 }).jpeg({ quality: 95 }).toBuffer(),
      half: await upright.clone().resize({ width: Math.round(width / 2) }).jpeg({ quality: 90 }).toBuffer(),
      reencoded: await sharp(bytes).jpeg({ quality: 70 }).toBuffer(),
    };
    for (const [name, variant] of Object.entries(variants)) {
      const sim = cosine(base, (await largest(variant)).embedding);
      expect(sim, name).toBeGreaterThanOrEqual(0.95);
    }
  });

  it.each(samples)('%s: turned 90° in its pixels (no EXIF tag) keeps cosine >= 0.95', async (file) => {
    const bytes = await read(file);
    const base = (await largest(bytes)).embedding;
    for (const angle of [90, 270]) {
      const turned = await sharp(bytes).rotate().rotate(angle).jpeg({ quality: 95 }).toBuffer();
      expect(cosine(base, (await largest(turned)).embedding), `${angle}°`).toBeGreaterThanOrEqual(0.95);
    }
  });

  it('a sideways face among upright ones is embedded as well as upright', async () => {
    // A portrait turned 90° pasted beside an upright one: two faces, the turned one still matches.
    const [a, b] = [identities()[0]!.files[0]!, identities()[12]!.files[0]!];
    const left = await sharp(await read(a)).rotate().resize(400, 400, { fit: 'cover' }).toBuffer();
    const right = await sharp(await read(b)).rotate().resize(400, 400, { fit: 'cover' }).rotate(90).toBuffer();
    const canvas = await sharp({ create: { width: 900, height: 500, channels: 3, background: '#808080' } })
      .composite([
        { input: left, left: 20, top: 50 },
        { input: right, left: 480, top: 50 },
      ])
      .jpeg({ quality: 95 })
      .toBuffer();
    const faces = (await analyzer.analyze(canvas)).faces;
    const reference = (await largest(await sharp(await read(b)).rotate().resize(400, 400, { fit: 'cover' }).toBuffer())).embedding;
    const best = Math.max(...faces.map((f) => cosine(f.embedding, reference)));
    expect(best).toBeGreaterThanOrEqual(0.95);
  });
});
