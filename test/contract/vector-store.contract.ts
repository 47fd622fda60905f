/**
 * Behaviour every VectorStore must have (embedded pgvector, Milvus). A test file calls
 * `vectorStoreContract(name, make)`; the store it makes may already hold data (a shared server):
 * every test writes under ids, events and users of its own, and the embedding-space tests in
 * namespaces of their own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Collection, EmbedderIdentity, VectorRecord, VectorStore } from '../../src/ports/vector-store.js';
import { seededRandom } from '../support/seeded-random.js';

/** The dimension the contract initialises the store with (ArcFace's). */
export const CONTRACT_DIMENSION = 512;


/** A uniformly distributed unit vector (normalised Gaussian). */
export function randomUnit(random: () => number, dimension = CONTRACT_DIMENSION): Float32Array {
  const v = new Float64Array(dimension);
  for (let i = 0; i < dimension; i++) v[i] = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  return normalise(v);
}

/** A unit vector whose cosine similarity to the unit vector `to` is `similarity`. */
export function unitNear(to: Float32Array, similarity: number, random: () => number): Float32Array {
  const w = Float64Array.from(randomUnit(random, to.length));
  let dot = 0;
  for (let i = 0; i < to.length; i++) dot += w[i]! * to[i]!;
  for (let i = 0; i < to.length; i++) w[i] = w[i]! - dot * to[i]!;
  const orthogonal = normalise(w);
  const rest = Math.sqrt(1 - similarity * similarity);
  const v = new Float64Array(to.length);
  for (let i = 0; i < to.length; i++) v[i] = similarity * to[i]! + rest * orthogonal[i]!;
  return normalise(v);
}

export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function normalise(v: Float64Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n);
  return Float32Array.from(v, (x) => x / n);
}

export interface StoreUnderTest<S> {
  store: S;
  /** Runs after the contract has closed the store: removes what `make` created. */
  cleanup: () => Promise<void>;
}

export interface VectorStoreUnderTest extends StoreUnderTest<VectorStore> {
  /**
   * Another store on the same backing (same data directory, same Milvus and collection prefix), not
   * yet initialised: a service started again, or another replica. The test closes it.
   */
  another: () => Promise<VectorStore>;
  /**
   * Records of the user in both collections of the store's default set, read from its backing
   * directly (test/support/inspect.ts): how the contract checks writes and erasures by user.
   */
  vectorsOfUser: (userId: string) => Promise<number>;
}

export function vectorStoreContract(name: string, make: () => Promise<VectorStoreUnderTest>): void {
  describe(`VectorStore contract: ${name}`, () => {
    let subject: VectorStoreUnderTest | undefined;
    const store = (): VectorStore => subject!.store;
    const vectorsOfUser = (userId: string): Promise<number> => subject!.vectorsOfUser(userId);
    const ns = `vc${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    let serial = 0;
    /** A fresh id: events, photos, users and records of one test never meet another's. */
    const fresh = (what: string): string => `${ns}-${what}-${++serial}`;
    const random = seededRandom(20240611);

    const record = (eventId: string, embedding: Float32Array, over: Partial<VectorRecord> = {}): VectorRecord => ({
      id: fresh('rec'),
      eventId,
      photoId: fresh('photo'),
      embedding,
      ...over,
    });
    const search = (collection: Collection, eventId: string, embedding: Float32Array, limit = 10, minSimilarity = -1) =>
      store().search(collection, { eventId, embedding, limit, minSimilarity });

    beforeAll(async () => {
      subject = await make();
      await subject.store.init(CONTRACT_DIMENSION);
    });
    afterAll(async () => {
      if (!subject) return;
      await subject.store.close();
      await subject.cleanup();
    });

    it('init is idempotent and ping answers', async () => {
      await store().init(CONTRACT_DIMENSION);
      await expect(store().ping()).resolves.toBeUndefined();
    });

    it('upserting an id twice keeps one record, the latest', async () => {
      const event = fresh('event');
      const first = randomUnit(random);
      const second = randomUnit(random);
      const r = record(event, first);
      await store().upsert('action_faces', [r]);
      await store().upsert('action_faces', [{ ...r, embedding: second }]);
      const hits = await search('action_faces', event, second);
      expect(hits.map((h) => h.id)).toEqual([r.id]);
      expect(hits[0]!.similarity).toBeCloseTo(1, 4);
      const viaOld = await search('action_faces', event, first);
      expect(viaOld[0]!.similarity).toBeCloseTo(dot(first, second), 4);

      const user = fresh('user');
      const sample = record(event, first, { userId: user });
      await store().upsert('user_samples', [sample]);
      await store().upsert('user_samples', [sample]);
      expect(await vectorsOfUser(user)).toBe(1);
    });

    it('upsert of no records is a no-op', async () => {
      await expect(store().upsert('action_faces', [])).resolves.toBeUndefined();
    });

    it('finds the nearest record in the searched event, never one of another event', async () => {
      const [a, b, empty] = [fresh('event'), fresh('event'), fresh('event')];
      const query = randomUnit(random);
      const target = record(a, unitNear(query, 0.8, random));
      // Nearer to the query than anything in event a, but in event b.
      const elsewhere = record(b, unitNear(query, 0.99, random));
      const noiseA = Array.from({ length: 20 }, () => record(a, randomUnit(random)));
      const noiseB = Array.from({ length: 20 }, () => record(b, randomUnit(random)));
      await store().upsert('action_faces', [...noiseA, target, elsewhere, ...noiseB]);

      const inA = await search('action_faces', a, query, 5);
      expect(inA[0]).toEqual({ id: target.id, eventId: a, photoId: target.photoId, similarity: expect.closeTo(0.8, 4) as number });
      expect(inA.every((h) => h.eventId === a)).toBe(true);
      expect(inA.map((h) => h.id)).not.toContain(elsewhere.id);

      const inB = await search('action_faces', b, query, 5);
      expect(inB[0]!.id).toBe(elsewhere.id);
      expect(inB.every((h) => h.eventId === b)).toBe(true);

      expect(await search('action_faces', empty, query)).toEqual([]);
    });

    it('returns nearest first, at most `limit` hits, with cosine similarities', async () => {
      const event = fresh('event');
      const query = randomUnit(random);
      const planted = [0.9, 0.7, 0.5, 0.3].map((s) => ({ s, r: record(event, unitNear(query, s, random)) }));
      const noise = Array.from({ length: 30 }, () => record(event, randomUnit(random)));
      await store().upsert('action_faces', [...noise, ...planted.map((p) => p.r)]);

      const hits = await search('action_faces', event, query, 6);
      expect(hits).toHaveLength(6);
      expect(hits.slice(0, 4).map((h) => h.id)).toEqual(planted.map((p) => p.r.id));
      planted.forEach((p, i) => expect(hits[i]!.similarity).toBeCloseTo(p.s, 4));
      for (let i = 1; i < hits.length; i++) expect(hits[i]!.similarity).toBeLessThanOrEqual(hits[i - 1]!.similarity);
      expect(await search('action_faces', event, query, 2)).toHaveLength(2);
    });

    it('leaves out hits below minSimilarity', async () => {
      const event = fresh('event');
      const query = randomUnit(random);
      const planted = [0.9, 0.7, 0.5, 0.3].map((s) => record(event, unitNear(query, s, random)));
      await store().upsert('action_faces', [...planted, ...Array.from({ length: 10 }, () => record(event, randomUnit(random)))]);
      const hits = await search('action_faces', event, query, 10, 0.6);
      expect(hits.map((h) => h.id)).toEqual([planted[0]!.id, planted[1]!.id]);
      expect(await search('action_faces', event, query, 10, 0.95)).toEqual([]);
    });

    it('searchMany answers each query as search would, in order, across events, limits and empty answers', async () => {
      const [a, b, empty] = [fresh('event'), fresh('event'), fresh('event')];
      const queries = Array.from({ length: 6 }, () => randomUnit(random));
      // Event a: a planted near neighbour for queries 0-3; event b holds only 2 records, so a query
      // there with limit 5 gets fewer hits than one in event a (uneven answers within one call).
      const planted = queries.slice(0, 4).map((q) => record(a, unitNear(q, 0.9, random)));
      const inB = [record(b, unitNear(queries[4]!, 0.8, random)), record(b, randomUnit(random))];
      await store().upsert('action_faces', [...planted, ...inB, ...Array.from({ length: 20 }, () => record(a, randomUnit(random)))]);

      const asked = [
        { eventId: a, embedding: queries[0]!, limit: 5, minSimilarity: -1 },
        { eventId: b, embedding: queries[4]!, limit: 5, minSimilarity: -1 },
        { eventId: a, embedding: queries[1]!, limit: 5, minSimilarity: -1 },
        { eventId: empty, embedding: queries[5]!, limit: 5, minSimilarity: -1 },
        { eventId: a, embedding: queries[2]!, limit: 1, minSimilarity: 0.5 },
        { eventId: a, embedding: queries[3]!, limit: 5, minSimilarity: 0.95 },
        { eventId: a, embedding: queries[5]!, limit: 5, minSimilarity: 0.5 },
      ];
      const many = await store().searchMany('action_faces', asked);
      const one = await Promise.all(asked.map((q) => store().search('action_faces', q)));
      expect(many).toEqual(one);
      expect(many.map((hits) => hits.length)).toEqual([5, 2, 5, 0, 1, 0, 0]);
      expect(many[0]![0]!.id).toBe(planted[0]!.id);
      expect(many[1]![0]!.id).toBe(inB[0]!.id);
      expect(many[2]![0]!.id).toBe(planted[1]!.id);
      expect(many[4]).toEqual([{ id: planted[2]!.id, eventId: a, photoId: planted[2]!.photoId, similarity: expect.closeTo(0.9, 4) as number }]);
      expect(await store().searchMany('action_faces', [])).toEqual([]);
    });

    it('keeps the two collections apart and returns the user of a sample', async () => {
      const event = fresh('event');
      const user = fresh('user');
      const v = randomUnit(random);
      const face = record(event, v);
      const sample = record(event, v, { userId: user });
      await store().upsert('action_faces', [face]);
      await store().upsert('user_samples', [sample]);

      const faces = await search('action_faces', event, v);
      expect(faces.map((h) => h.id)).toEqual([face.id]);
      expect(faces[0]!.userId).toBeUndefined();
      const samples = await search('user_samples', event, v);
      expect(samples.map((h) => [h.id, h.userId, h.photoId])).toEqual([[sample.id, user, sample.photoId]]);
    });

    it('deleteByPhoto removes exactly the records of that photo in that collection', async () => {
      const event = fresh('event');
      const [p1, p2] = [fresh('photo'), fresh('photo')];
      const query = randomUnit(random);
      const ofP1 = [0, 1, 2].map(() => record(event, unitNear(query, 0.6, random), { photoId: p1 }));
      const ofP2 = [0, 1].map(() => record(event, unitNear(query, 0.6, random), { photoId: p2 }));
      const sampleOfP1 = record(event, query, { photoId: p1, userId: fresh('user') });
      await store().upsert('action_faces', [...ofP1, ...ofP2]);
      await store().upsert('user_samples', [sampleOfP1]);

      expect(await store().deleteByPhoto('action_faces', p1)).toBe(3);
      const left = await search('action_faces', event, query);
      expect(left.map((h) => h.id).sort()).toEqual(ofP2.map((r) => r.id).sort());
      expect((await search('user_samples', event, query)).map((h) => h.id)).toEqual([sampleOfP1.id]);
      expect(await store().deleteByPhoto('action_faces', p1)).toBe(0);
    });

    it('replacePhoto leaves the photo exactly the given records, in either collection, and no other photo’s less', async () => {
      const event = fresh('event');
      const [p1, p2] = [fresh('photo'), fresh('photo')];
      const query = randomUnit(random);
      const user = fresh('user');
      // The photo was a facecam (one sample) with a stray action face; another photo stays put.
      const oldSample = record(event, query, { photoId: p1, userId: user });
      const oldFace = record(event, unitNear(query, 0.7, random), { photoId: p1 });
      const other = record(event, unitNear(query, 0.6, random), { photoId: p2 });
      await store().upsert('user_samples', [oldSample]);
      await store().upsert('action_faces', [oldFace, other]);

      // Reprocessed as an action shot with two faces, one of them under the stray face's id.
      const now = [record(event, unitNear(query, 0.9, random), { photoId: p1, id: oldFace.id }), record(event, unitNear(query, 0.8, random), { photoId: p1 })];
      await store().replacePhoto(p1, 'action_faces', now);
      const faces = await search('action_faces', event, query);
      expect(faces.map((h) => h.id).sort()).toEqual([...now.map((r) => r.id), other.id].sort());
      expect(faces.find((h) => h.id === oldFace.id)!.similarity).toBeCloseTo(dot(query, now[0]!.embedding), 4);
      expect(await search('user_samples', event, query)).toEqual([]);
      expect(await vectorsOfUser(user)).toBe(0);

      // No faces this time: nothing of the photo is left.
      await store().replacePhoto(p1, 'action_faces', []);
      expect((await search('action_faces', event, query)).map((h) => h.id)).toEqual([other.id]);
    });

    it('replacePhoto refuses a record of another photo and keeps what the photo had', async () => {
      const event = fresh('event');
      const [p1, p2] = [fresh('photo'), fresh('photo')];
      const query = randomUnit(random);
      const kept = record(event, query, { photoId: p1 });
      await store().upsert('action_faces', [kept]);
      await expect(store().replacePhoto(p1, 'action_faces', [record(event, query, { photoId: p2 })])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect((await search('action_faces', event, query)).map((h) => h.id)).toEqual([kept.id]);
    });

    it('deleteByUser removes exactly that user’s records', async () => {
      const event = fresh('event');
      const [u1, u2] = [fresh('user'), fresh('user')];
      const query = randomUnit(random);
      const ofU1 = [0, 1].map(() => record(event, unitNear(query, 0.7, random), { userId: u1 }));
      const ofU2 = record(event, unitNear(query, 0.5, random), { userId: u2 });
      await store().upsert('user_samples', [...ofU1, ofU2]);
      expect(await vectorsOfUser(u1)).toBe(2);

      expect(await store().deleteByUser(u1)).toBe(2);
      expect(await vectorsOfUser(u1)).toBe(0);
      expect(await vectorsOfUser(u2)).toBe(1);
      expect((await search('user_samples', event, query)).map((h) => h.id)).toEqual([ofU2.id]);
      expect(await store().deleteByUser(u1)).toBe(0);
    });

    it('rejects an embedding of another dimension', async () => {
      const event = fresh('event');
      const short = randomUnit(random, CONTRACT_DIMENSION - 1);
      await expect(store().upsert('action_faces', [record(event, short)])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(search('action_faces', event, short)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    });

    describe('one embedding space per store', () => {
      // Two embedders of the same dimension: what a pack change looks like to the store.
      const A: EmbedderIdentity = { pack: 'pack_a', sha256: 'a1'.repeat(32) };
      const B: EmbedderIdentity = { pack: 'pack_b', sha256: 'b2'.repeat(32) };
      const opened: VectorStore[] = [];
      /** Another store on the subject's backing, initialised with these options. */
      const start = async (options: Parameters<VectorStore['init']>[1]): Promise<VectorStore> => {
        const s = await subject!.another();
        opened.push(s);
        await s.init(CONTRACT_DIMENSION, options);
        return s;
      };
      const refusal = (stored: EmbedderIdentity, configured: EmbedderIdentity) => ({
        code: 'EMBEDDER_MISMATCH',
        message: expect.stringMatching(
          new RegExp(`${stored.pack} \\(embedder sha256 ${stored.sha256.slice(0, 12)}.*${configured.pack} \\(embedder sha256 ${configured.sha256.slice(0, 12)}.*FACEMATCH_VECTOR_NAMESPACE`),
        ) as string,
      });
      afterAll(async () => {
        for (const s of opened.splice(0)) await s.close();
      });

      it('a store started with embedder A refuses embedder B, naming both; B in a fresh namespace starts empty; A still works', async () => {
        const [nsA, nsB] = [`${ns}_a`, `${ns}_b`];
        const event = fresh('event');
        const v = randomUnit(random);

        const a = await start({ embedder: A, namespace: nsA });
        const ofA = record(event, v);
        await a.upsert('action_faces', [ofA]);

        const b = await subject!.another();
        opened.push(b);
        await expect(b.init(CONTRACT_DIMENSION, { embedder: B, namespace: nsA })).rejects.toMatchObject(refusal(A, B));

        const fresher = await start({ embedder: B, namespace: nsB });
        expect(await fresher.search('action_faces', { eventId: event, embedding: v, limit: 5, minSimilarity: -1 })).toEqual([]);
        const ofB = record(event, unitNear(v, 0.99, random));
        await fresher.upsert('action_faces', [ofB]);
        expect((await fresher.search('action_faces', { eventId: event, embedding: v, limit: 5, minSimilarity: -1 })).map((h) => h.id)).toEqual([ofB.id]);
        // Started with B again: the namespace has recorded B.
        await expect(start({ embedder: A, namespace: nsB })).rejects.toMatchObject(refusal(B, A));

        const again = await start({ embedder: A, namespace: nsA });
        expect((await again.search('action_faces', { eventId: event, embedding: v, limit: 5, minSimilarity: -1 })).map((h) => h.id)).toEqual([ofA.id]);
        // The embedder decides, not the pack's name: another pack with A's embedder shares the space.
        await start({ embedder: { pack: 'pack_a_renamed', sha256: A.sha256 }, namespace: nsA });
      });

      it('a store that holds vectors but no embedder (made before embedders were recorded) adopts the first one, then refuses another', async () => {
        // The subject's default collections: written above without an embedder.
        const event = fresh('event');
        const v = randomUnit(random);
        const old = record(event, v);
        await store().upsert('action_faces', [old]);

        const a = await start({ embedder: A });
        expect((await a.search('action_faces', { eventId: event, embedding: v, limit: 5, minSimilarity: -1 })).map((h) => h.id)).toEqual([old.id]);
        await expect(start({ embedder: B })).rejects.toMatchObject(refusal(A, B));
        await start({ embedder: A });
      });
    });
  });
}

export { seededRandom };
