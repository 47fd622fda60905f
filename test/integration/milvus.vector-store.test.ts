/**
 * MilvusVectorStore against a real Milvus 2.3 (scripts/test-env up milvus): the VectorStore contract,
 * then what only a shared, remote store must show — a write through one replica is found at once
 * through another, ids and events are quoted safely into Milvus expressions, the collection refuses
 * another model's dimension, and when Milvus stops, calls fail fast with BACKEND_UNAVAILABLE and the
 * same store recovers once it is back, with nothing lost.
 *
 * Reads FACEMATCH_MILVUS_ADDRESS; without it the file is skipped. Each run works in collections of a
 * prefix of its own and drops them at the end.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { MilvusClient } from '@zilliz/milvus2-sdk-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MilvusVectorStore, type MilvusVectorStoreOptions } from '../../src/adapters/milvus/milvus.vector-store.js';
import { parseConfig } from '../../src/config/config.js';
import type { VectorRecord } from '../../src/ports/vector-store.js';
import { CONTRACT_DIMENSION, randomUnit, seededRandom, unitNear, vectorStoreContract } from '../contract/vector-store.contract.js';
import { milvusVectors, type VectorsInspector } from '../support/inspect.js';

const ADDRESS = process.env.FACEMATCH_MILVUS_ADDRESS;
const SKIP_REASON = 'FACEMATCH_MILVUS_ADDRESS is not set: start Milvus with `scripts/test-env up milvus` and export its lines, or run `npm run test:integration`';
if (!ADDRESS) console.warn(`milvus.vector-store.test.ts skipped: ${SKIP_REASON}`);

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MILVUS_SH = path.resolve(HERE, '..', '..', 'scripts', 'test-env.d', 'milvus.sh');
const run = promisify(execFile);

/** Calls a function of scripts/test-env.d/milvus.sh (milvus_up, milvus_down, milvus_env). */
async function milvusSh(fn: 'milvus_up' | 'milvus_down' | 'milvus_env'): Promise<string> {
  const { stdout } = await run('bash', ['-c', `set -euo pipefail; source "$0"; ${fn}`, MILVUS_SH], { timeout: 300_000 });
  return stdout;
}

const RUN = `it_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`;

/** Every prefix of this run starts with RUN: afterAll drops the collections whose names do. */
function options(prefix: string, over: Partial<MilvusVectorStoreOptions> = {}): MilvusVectorStoreOptions & { token: string | undefined } {
  const config = parseConfig({ ...process.env, FACEMATCH_MILVUS_COLLECTION_PREFIX: prefix }).milvus;
  return { ...config, ...over };
}

afterAll(async () => {
  if (!ADDRESS) return;
  const client = new MilvusClient({ address: ADDRESS, timeout: 10_000, logLevel: 'error' });
  try {
    // With the collections of the namespaces the tests made (`<prefix>_<namespace>_action_faces`).
    const listed = await client.showCollections();
    for (const { name } of listed.data) {
      if (name.startsWith(`${RUN}_`)) await client.dropCollection({ collection_name: name }).catch(() => undefined);
    }
  } finally {
    client.closeConnection();
  }
}, 120_000);

describe.skipIf(!ADDRESS)(`Milvus at ${ADDRESS ?? '(unset)'}`, () => {
  vectorStoreContract('Milvus', () => {
    const storage = milvusVectors(options(`${RUN}_contract`));
    return Promise.resolve({
      store: MilvusVectorStore.connect(options(`${RUN}_contract`)),
      another: () => Promise.resolve(MilvusVectorStore.connect(options(`${RUN}_contract`))),
      vectorsOfUser: (userId: string) => storage.vectorsOfUser(userId),
      cleanup: () => storage.close(),
    });
  });

  describe('beyond the contract', () => {
    const random = seededRandom(7);
    const prefix = `${RUN}_more`;
    let a: MilvusVectorStore;
    let b: MilvusVectorStore;
    /** A third client, reading the collections directly (test/support/inspect.ts). */
    let storage: VectorsInspector | undefined;
    let serial = 0;
    const fresh = (what: string) => `${RUN}-${what}-${++serial}`;
    const record = (eventId: string, embedding: Float32Array, over: Partial<VectorRecord> = {}): VectorRecord => ({
      id: fresh('rec'),
      eventId,
      photoId: fresh('photo'),
      embedding,
      ...over,
    });

    beforeAll(async () => {
      // Two stores, two clients, two connections: two replicas of the service.
      a = MilvusVectorStore.connect(options(prefix));
      b = MilvusVectorStore.connect(options(prefix));
      storage = milvusVectors(options(prefix));
      await a.init(CONTRACT_DIMENSION);
      await b.init(CONTRACT_DIMENSION);
    }, 180_000);
    afterAll(async () => {
      await a?.close();
      await b?.close();
      await storage?.close();
    });

    it('a write through one replica is seen by the next request to another, at once', async () => {
      for (let round = 0; round < 5; round++) {
        const event = fresh('event');
        const user = fresh('user');
        const face = record(event, randomUnit(random));
        const sample = record(event, randomUnit(random), { userId: user });
        await a.upsert('action_faces', [face]);
        await a.upsert('user_samples', [sample]);
        // No pause: the very next call, on the other client.
        const hits = await b.search('action_faces', { eventId: event, embedding: face.embedding, limit: 3, minSimilarity: 0.9 });
        expect(hits.map((h) => h.id)).toEqual([face.id]);
        const samples = await b.search('user_samples', { eventId: event, embedding: sample.embedding, limit: 3, minSimilarity: -1 });
        expect(samples.map((h) => [h.id, h.userId])).toEqual([[sample.id, user]]);
        expect(await storage!.vectorsOfUser(user)).toBe(1);
        expect(await a.deleteByUser(user)).toBe(1);
        expect(await storage!.vectorsOfUser(user)).toBe(0);
        expect(await b.search('user_samples', { eventId: event, embedding: sample.embedding, limit: 3, minSimilarity: -1 })).toEqual([]);
      }
    });

    it('an upsert that moves a face to another event leaves nothing in the old one', async () => {
      const [before, after] = [fresh('event'), fresh('event')];
      const v = randomUnit(random);
      const face = record(before, v);
      await a.upsert('action_faces', [face]);
      await a.upsert('action_faces', [{ ...face, eventId: after }]);
      expect(await b.search('action_faces', { eventId: before, embedding: v, limit: 5, minSimilarity: -1 })).toEqual([]);
      expect((await b.search('action_faces', { eventId: after, embedding: v, limit: 5, minSimilarity: -1 })).map((h) => [h.id, h.eventId])).toEqual([[face.id, after]]);
    });

    it('quotes ids into expressions: quotes, backslashes and newlines match exactly and inject nothing', async () => {
      const v = randomUnit(random);
      const plain = fresh('event');
      const tricky = [`${plain}" || event_id != "`, `${plain}\\`, `${plain}\n"x'`, `${plain} ünï ✓`];
      await a.upsert('action_faces', [record(plain, unitNear(v, 0.9, random)), ...tricky.map((e) => record(e, v, { photoId: `${e}/photo` }))]);
      for (const event of tricky) {
        const hits = await b.search('action_faces', { eventId: event, embedding: v, limit: 10, minSimilarity: -1 });
        expect(hits.map((h) => [h.eventId, h.photoId])).toEqual([[event, `${event}/photo`]]);
      }
      expect(await a.deleteByPhoto('action_faces', `${tricky[0]!}/photo`)).toBe(1);
      expect((await b.search('action_faces', { eventId: plain, embedding: v, limit: 10, minSimilarity: -1 })).length).toBe(1);
      const user = `${fresh('user')}" || user_id != "`;
      await a.upsert('user_samples', [record(plain, v, { userId: user })]);
      expect(await storage!.vectorsOfUser(user)).toBe(1);
      expect(await b.deleteByUser(user)).toBe(1);
    });

    it('refuses to open a collection made for another dimension', async () => {
      const other = MilvusVectorStore.connect(options(prefix));
      try {
        await expect(other.init(CONTRACT_DIMENSION / 2)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/512-dimensional.*256/) as string });
      } finally {
        await other.close();
      }
    });

    it('compact() has Milvus compact both collections after deletions', async () => {
      const event = fresh('event');
      const user = fresh('user');
      await a.upsert('user_samples', Array.from({ length: 20 }, () => record(event, randomUnit(random), { userId: user })));
      expect(await a.deleteByUser(user)).toBe(20);
      const result = await a.compact({ wait: true, waitTimeoutMs: 90_000 });
      expect(result.completed).toBe(true);
      expect(await storage!.vectorsOfUser(user)).toBe(0);
    }, 120_000);

    it('a server that cannot be reached fails fast with BACKEND_UNAVAILABLE naming Milvus', async () => {
      const nowhere = MilvusVectorStore.connect({ ...options(prefix), address: '127.0.0.1:9', timeoutMs: 3_000 });
      try {
        const started = Date.now();
        await expect(nowhere.init(CONTRACT_DIMENSION)).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('Milvus at 127.0.0.1:9') as string });
        await expect(nowhere.ping()).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
        expect(Date.now() - started).toBeLessThan(5_000);
      } finally {
        await nowhere.close();
      }
    });
  });

  describe('Milvus stops and comes back', () => {
    const random = seededRandom(11);
    const prefix = `${RUN}_fault`;
    let store: MilvusVectorStore;
    let ours = false;

    beforeAll(async () => {
      // Only the server that milvus.sh runs can be stopped here.
      ours = (await milvusSh('milvus_env')).includes(`FACEMATCH_MILVUS_ADDRESS=${ADDRESS}\n`);
      store = MilvusVectorStore.connect(options(prefix));
      await store.init(CONTRACT_DIMENSION);
    }, 180_000);
    afterAll(async () => {
      await store?.close();
      // Whatever happened, leave Milvus running for what comes next.
      if (ours) await milvusSh('milvus_up');
    }, 300_000);

    it('calls fail fast with BACKEND_UNAVAILABLE naming Milvus; the same store recovers, nothing lost', async (ctx) => {
      if (!ours) ctx.skip(`FACEMATCH_MILVUS_ADDRESS=${ADDRESS} is not the Milvus of scripts/test-env.d/milvus.sh: not stopping it`);
      const event = `${RUN}-fault-event`;
      const v = randomUnit(random);
      const kept: VectorRecord = { id: `${RUN}-fault-kept`, eventId: event, photoId: `${RUN}-fault-photo`, embedding: v };
      await store.upsert('action_faces', [kept]);
      expect((await store.search('action_faces', { eventId: event, embedding: v, limit: 1, minSimilarity: 0.99 })).map((h) => h.id)).toEqual([kept.id]);

      await milvusSh('milvus_down');
      const calls: [string, () => Promise<unknown>][] = [
        ['ping', () => store.ping()],
        ['search', () => store.search('action_faces', { eventId: event, embedding: v, limit: 1, minSimilarity: 0 })],
        ['upsert', () => store.upsert('action_faces', [{ ...kept, id: `${RUN}-fault-new` }])],
        ['deleteByUser', () => store.deleteByUser('nobody')],
      ];
      const timings: string[] = [];
      for (const [name, call] of calls) {
        const started = Date.now();
        const error = await call().then(
          () => undefined,
          (e: unknown) => e,
        );
        const took = Date.now() - started;
        expect(error, name).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining(`Milvus at ${ADDRESS}`) as string });
        expect(took, `${name} took ${took} ms`).toBeLessThan(5_000);
        timings.push(`${name} ${took} ms`);
      }
      console.info(`Milvus fault test: with Milvus stopped, failed in ${timings.join(', ')}`);

      await milvusSh('milvus_up');
      // The same store, without re-init: its channel reconnects; the collections load again.
      const back = Date.now();
      let hits: Awaited<ReturnType<MilvusVectorStore['search']>> | undefined;
      let last: unknown;
      const seen = new Set<string>();
      while (Date.now() - back < 120_000) {
        try {
          await store.ping();
          hits = await store.search('action_faces', { eventId: event, embedding: v, limit: 1, minSimilarity: 0.99 });
          break;
        } catch (error) {
          last = error;
          seen.add((error as Error).message.replace(/\d{6,}/g, 'N'));
          expect(error).toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      }
      expect(hits, `not recovered after 120 s: ${String(last)}`).toBeDefined();
      console.info(`Milvus fault test: the store answered again ${Date.now() - back} ms after milvus_up returned; meanwhile: ${[...seen].join(' | ') || 'no errors'}`);
      // Written before the stop, found after it.
      expect(hits!.map((h) => h.id)).toEqual([kept.id]);
      // And it takes writes again.
      const next = { ...kept, id: `${RUN}-fault-after`, embedding: unitNear(v, 0.95, random) };
      await store.upsert('action_faces', [next]);
      expect((await store.search('action_faces', { eventId: event, embedding: v, limit: 5, minSimilarity: 0.9 })).map((h) => h.id)).toEqual([kept.id, next.id]);
    }, 400_000);
  });
});
