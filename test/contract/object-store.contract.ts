/**
 * Behaviour every ObjectStore must have (local folder, S3/MinIO). The store may already hold
 * objects: every test writes under a key prefix of its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ObjectStore } from '../../src/ports/object-store.js';
import type { StoreUnderTest } from './vector-store.contract.js';

/** Keys every store refuses: parent segments, absolute paths, characters outside [A-Za-z0-9._/-]. */
/** Keys no method takes: empty, escaping the folder, absolute, a backslash, a control character. */
export const UNSAFE_KEYS = ['', '../escape.jpg', 'a/../../escape.jpg', '..', '/etc/passwd', 'back\\slash.jpg', 'nul\0.jpg'];
/** Keys a photographer may upload and get() reads, but facematch never writes (checkObjectKey). */
export const FOREIGN_KEYS = ['with space.jpg', 'ümlaut.jpg', 'q?x=1'];
export const BAD_KEYS = [...UNSAFE_KEYS, ...FOREIGN_KEYS];

export function objectStoreContract(name: string, make: () => Promise<StoreUnderTest<ObjectStore>>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let subject: StoreUnderTest<ObjectStore> | undefined;
    const store = (): ObjectStore => subject!.store;
    const ns = `oc${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    let serial = 0;
    const fresh = (name = 'object.bin'): string => `${ns}/${++serial}/${name}`;
    const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

    beforeAll(async () => {
      subject = await make();
      await subject.store.init();
    });
    afterAll(async () => {
      if (!subject) return;
      await subject.cleanup();
    });

    it('init is idempotent and ping answers', async () => {
      await store().init();
      await expect(store().ping()).resolves.toBeUndefined();
    });

    it('get returns the bytes put, exactly', async () => {
      const key = fresh('annotated.jpg');
      const all = Uint8Array.from({ length: 256 * 4 }, (_, i) => i % 256);
      const location = await store().put(key, all, 'image/jpeg');
      expect(location.key).toBe(key);
      expect(location.bucket).toEqual(expect.any(String));
      expect(location.url).toMatch(/^[a-z]+:\/\//);
      expect(await store().location(key)).toMatchObject({ bucket: location.bucket, key });
      expect(await store().exists(key)).toBe(true);
      expect(Buffer.from(await store().get(key)).equals(Buffer.from(all))).toBe(true);

      const empty = fresh('empty.bin');
      await store().put(empty, new Uint8Array(0), 'application/octet-stream');
      expect(await store().get(empty)).toHaveLength(0);
    });

    it('put over an existing key replaces it', async () => {
      const key = fresh();
      await store().put(key, bytes(10, 1), 'application/octet-stream');
      await store().put(key, bytes(3, 2), 'application/octet-stream');
      expect([...(await store().get(key))]).toEqual([2, 2, 2]);
    });

    it('a reader sees the old object or the new one, never a mix', async () => {
      const key = fresh('big.bin');
      const size = 1 << 20;
      const versions = [bytes(size, 0xaa), bytes(size / 2, 0x55)];
      await store().put(key, versions[0]!, 'application/octet-stream');
      let writing = true;
      const writer = (async () => {
        for (let i = 1; i <= 12; i++) await store().put(key, versions[i % 2]!, 'application/octet-stream');
        writing = false;
      })();
      let reads = 0;
      while (writing) {
        const got = await store().get(key);
        const fill = got[0];
        expect([0xaa, 0x55]).toContain(fill);
        expect(got.length).toBe(fill === 0xaa ? size : size / 2);
        expect(got.every((b) => b === fill)).toBe(true);
        reads++;
      }
      await writer;
      expect(reads).toBeGreaterThan(0);
    });

    it('get of a missing key fails with SOURCE_NOT_FOUND; exists says false', async () => {
      const key = fresh('missing.jpg');
      await expect(store().get(key)).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND' });
      expect(await store().exists(key)).toBe(false);
    });

    it('delete removes the object and is idempotent', async () => {
      const key = fresh();
      await store().put(key, bytes(5, 9), 'application/octet-stream');
      await store().delete(key);
      expect(await store().exists(key)).toBe(false);
      await expect(store().get(key)).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND' });
      await expect(store().delete(key)).resolves.toBeUndefined();
      await expect(store().delete(fresh('never.bin'))).resolves.toBeUndefined();
    });

    it('keys with a shared prefix are independent objects', async () => {
      const a = fresh('a.jpg');
      const b = a.replace(/a\.jpg$/, 'b.jpg');
      await store().put(a, bytes(1, 1), 'image/jpeg');
      await store().put(b, bytes(1, 2), 'image/jpeg');
      await store().delete(a);
      expect([...(await store().get(b))]).toEqual([2]);
    });

    it('rejects unsafe keys with INVALID_ARGUMENT; get() reads a photographer\'s key facematch would not write', async () => {
      for (const key of BAD_KEYS) {
        await expect(store().put(key, bytes(1, 0), 'image/jpeg'), key).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
        if (UNSAFE_KEYS.includes(key)) await expect(store().get(key), key).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
        // Not there: SOURCE_NOT_FOUND, not a refusal of the key.
        else await expect(store().get(`${ns}/${key}`), key).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND' });
        await expect(store().exists(key), key).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
        await expect(store().delete(key), key).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
        await expect(store().location(key), key).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      }
    });
  });
}
