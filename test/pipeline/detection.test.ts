/** Detection on real photos with the real SCRFD-500MF model. */
import { describe, expect, it } from 'vitest';
import { group, identities, read, sharedAnalyzer } from '../support/shared.js';

const count = async (file: string): Promise<number> => {
  const a = await sharedAnalyzer();
  return (await a.detectFaces(await a.decode(await read(file)))).length;
};

describe('face detection on real photos', () => {
  it('finds the 6 people of insightface_t1.jpg', async () => {
    expect(await count(group('insightface_t1.jpg'))).toBe(6);
  });

  it.each([
    ['faceapi_bbt1.jpg', 4],
    ['faceapi_bbt2.jpg', 3],
    ['faceapi_bbt3.jpg', 5],
    ['facerec_obama_and_biden.jpg', 3],
    ['facerec_two_people.jpg', 2],
    ['facerec_kit_with_rose.jpg', 2],
  ])('finds every person in %s (%i)', async (file, n) => {
    expect(await count(group(file))).toBe(n);
  });

  it('finds 100+ faces in the crowd photos', async () => {
    expect(await count(group('insightface-rest_lumia.jpg'))).toBeGreaterThanOrEqual(100);
    expect(await count(group('hpc203_selfie.jpg'))).toBeGreaterThanOrEqual(100);
  });

  it('finds at least one face in every portrait, the tight face-api crops included', async () => {
    const a = await sharedAnalyzer();
    const missing: string[] = [];
    for (const { files } of identities()) {
      for (const file of files) {
        const decoded = await a.decode(await read(file));
        const faces = await a.detectFaces(decoded);
        if (faces.length === 0) missing.push(file);
      }
    }
    expect(missing).toEqual([]);
  });

  it('reports boxes and landmarks in original pixels, largest face first', async () => {
    const a = await sharedAnalyzer();
    const decoded = await a.decode(await read(group('facerec_obama_and_biden.jpg')));
    const faces = await a.detectFaces(decoded);
    const areas = faces.map((f) => f.box.width * f.box.height);
    expect(areas).toEqual([...areas].sort((p, q) => q - p));
    for (const f of faces) {
      expect(f.box.x).toBeGreaterThanOrEqual(-1);
      expect(f.box.x + f.box.width).toBeLessThanOrEqual(decoded.width + 1);
      for (const [x, y] of f.landmarks) {
        expect(x).toBeGreaterThan(f.box.x);
        expect(x).toBeLessThan(f.box.x + f.box.width);
        expect(y).toBeGreaterThan(f.box.y);
        expect(y).toBeLessThan(f.box.y + f.box.height);
      }
    }
  });
});
