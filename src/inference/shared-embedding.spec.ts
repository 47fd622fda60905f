import { describe, expect, it } from 'vitest';
import { abandon, collectShare, createSharedFaces, stopHelpers, takeShare, unclaimed, type EmbedRun } from './shared-embedding.js';

const PER = 4;
const DIM = 2;

/** Faces whose "embedding" is their first two tensor values, so who computed one does not matter. */
function photo(faces: number) {
  const task = createSharedFaces(faces, PER, DIM, 1);
  const input = new Float32Array(task.input);
  for (let i = 0; i < faces; i++) input.set([i, -i, 0, 0], i * PER);
  const want = Array.from({ length: faces }, (_, i) => Float32Array.from([i, -i]));
  return { task, want };
}

const embed: EmbedRun = (tensors, count) =>
  Promise.resolve(Array.from({ length: count }, (_, i) => Float32Array.from(tensors.subarray(i * PER, i * PER + DIM))));

describe('shared embedding', () => {
  it('gives every face once, in order, however the work was split', async () => {
    const { task, want } = photo(9);
    const owner = takeShare(task, embed, false);
    const helper = takeShare(task, embed, true);
    const [mine, theirs] = await Promise.all([owner, helper]);
    expect(mine + theirs).toBe(9);
    expect(unclaimed(task)).toBe(0);
    expect(await collectShare(task, embed)).toEqual(want);
  });

  it('the owner embeds the faces a helper failed on', async () => {
    const { task, want } = photo(6);
    const errors: unknown[] = [];
    const failing: EmbedRun = () => Promise.reject(new Error('onnxruntime: out of memory'));
    // The helper claims two faces and fails on both; the owner then takes the rest.
    const helper = takeShare({ ...task, chunk: 2 }, failing, true, (e) => errors.push(e));
    expect(await helper).toBe(0);
    expect(errors).toHaveLength(3);
    expect(await collectShare(task, embed)).toEqual(want);
  });

  it('stops waiting for a helper that died with faces claimed, and embeds them itself', async () => {
    const { task, want } = photo(5);
    // A helper claims face 0 and never finishes (its thread is gone).
    const control = new Int32Array(task.control);
    Atomics.add(control, 0, 1);
    expect(await takeShare(task, embed, false)).toBe(4);
    const collected = collectShare(task, embed);
    abandon(task);
    expect(await collected).toEqual(want);
  });

  it('a stopped helper takes nothing more; the owner does the rest', async () => {
    const { task, want } = photo(4);
    stopHelpers(task);
    expect(await takeShare(task, embed, true)).toBe(0);
    expect(await takeShare(task, embed, false)).toBe(4);
    expect(await collectShare(task, embed)).toEqual(want);
  });

  it('the owner’s own failure is its caller’s', async () => {
    const { task } = photo(2);
    await expect(takeShare(task, () => Promise.reject(new Error('model broken')), false)).rejects.toThrow('model broken');
  });
});
