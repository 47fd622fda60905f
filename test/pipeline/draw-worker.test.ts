/**
 * The drawing worker: draws what annotate() draws, takes the pixels without a copy, reports bad
 * input with its error code, and replaces itself when its thread dies.
 */
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import type { Picture } from '../../src/domain/face.js';
import { DrawWorker } from '../../src/inference/draw-worker.js';
import { group } from '../support/shared.js';

const face = {
  box: { x: 100, y: 80, width: 120, height: 150 },
  score: 0.9,
  landmarks: [
    [130, 130],
    [190, 130],
    [160, 160],
    [135, 195],
    [185, 195],
  ] as const,
  highlight: true,
  label: '#0 0.71',
};

async function picture(): Promise<Picture> {
  const { data, info } = await sharp(group('faceapi_bbt2.jpg')).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

describe('DrawWorker', () => {
  const drawing = new DrawWorker().start();
  afterAll(() => drawing.close());

  it('returns the JPEG of the picture with the face drawn, and takes the pixels without copying them', async () => {
    const pic = await picture();
    const jpeg = await drawing.draw(pic, [face], { width: pic.width, height: pic.height, maxPixels: 1e8 });
    expect(pic.data.byteLength).toBe(0); // transferred to the worker
    const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([675, 469]);
    // The box's left edge (a 2 px stroke, blurred by JPEG's chroma subsampling) is clearly green.
    const i = (Math.round(face.box.y + face.box.height / 2) * info.width + face.box.x) * info.channels;
    const [r, g, b] = [data[i]!, data[i + 1]!, data[i + 2]!];
    expect(g - Math.max(r, b), `rgb ${r},${g},${b}`).toBeGreaterThan(40);
  });

  it('reports bytes that are not an image with their error code, and keeps working', async () => {
    await expect(drawing.draw(new TextEncoder().encode('not a photo'), [face], { width: 675, height: 469, maxPixels: 1e8 })).rejects.toMatchObject({
      code: expect.stringMatching(/^IMAGE_/) as string,
    });
    const pic = await picture();
    await expect(drawing.draw(pic, [], { width: pic.width, height: pic.height, maxPixels: 1e8 })).resolves.toBeInstanceOf(Uint8Array);
  });

  it('fails the drawings of a worker that died, and draws again with a new one', async () => {
    const pic = await picture();
    const pending = drawing.draw(pic, [face], { width: pic.width, height: pic.height, maxPixels: 1e8 });
    // The thread dies under the drawing (as on an out-of-memory abort).
    await (drawing as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await expect(pending).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('drawing worker') as string });
    const again = await picture();
    await expect(drawing.draw(again, [face], { width: again.width, height: again.height, maxPixels: 1e8 })).resolves.toBeInstanceOf(Uint8Array);
  });
});
