/**
 * MilvusVectorStore with a fake client: what the adapter decides on its own (quoting, the upsert
 * route by server version, the dimension check, deadlines and error mapping). The behaviour
 * against a real server is in test/integration/milvus.vector-store.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { literal, MilvusVectorStore, versionAtLeast, type MilvusApi, type MilvusVectorStoreOptions } from './milvus.vector-store.js';

const OK = { error_code: 'Success', reason: '' };
const OPTIONS: MilvusVectorStoreOptions = {
  address: 'milvus.test:19530',
  collectionPrefix: 'fm',
  index: 'HNSW',
  hnswM: 16,
  hnswEfConstruction: 200,
  searchEf: 64,
  timeoutMs: 200,
};

type Calls = { method: string; args: unknown }[];

/** A client whose every method must be set up: any other call fails the test. */
function fake(methods: Partial<Record<keyof MilvusApi, (args: never) => unknown>>, calls: Calls = []): MilvusApi {
  return new Proxy({} as MilvusApi, {
    get(_, name: string) {
      const method = (methods as Record<string, ((args: unknown) => unknown) | undefined>)[name];
      if (!method) throw new Error(`unexpected call to MilvusClient.${name}`);
      return (args: unknown) => {
        calls.push({ method: name, args });
        return Promise.resolve(method(args));
      };
    },
  });
}

/** A server holding both collections, loaded, with embeddings of `dim` dimensions. */
function existing(version: string, dim = 4): Partial<Record<keyof MilvusApi, (args: never) => unknown>> {
  return {
    getVersion: () => ({ version }),
    hasCollection: () => ({ status: OK, value: true }),
    describeCollection: () => ({
      status: OK,
      schema: {
        fields: ['id', 'event_id', 'photo_id', 'user_id']
          .map((name) => ({ name, type_params: [] as { key: string; value: string }[] }))
          .concat([{ name: 'embedding', type_params: [{ key: 'dim', value: String(dim) }] }]),
      },
    }),
    describeIndex: () => ({
      status: OK,
      index_descriptions: [{ params: [{ key: 'index_type', value: 'HNSW' }, { key: 'metric_type', value: 'COSINE' }] }],
    }),
    getLoadState: () => ({ status: OK, state: 'LoadStateLoaded' }),
    // The read init() and ping() use to see that a collection serves.
    query: () => ({ status: OK, data: [] }),
    checkHealth: () => ({ isHealthy: true, reasons: [] }),
  };
}

const record = { id: 'f"1', eventId: 'e', photoId: 'p', embedding: Float32Array.from([1, 0, 0, 0]) };

describe('MilvusVectorStore (fake client)', () => {
  it('quotes values as Milvus string literals', () => {
    expect(literal('a"b\\c\nd')).toBe('"a\\"b\\\\c\\nd"');
    expect(`event_id == ${literal('" || event_id != "')}`).toBe('event_id == "\\" || event_id != \\""');
  });

  it('compares server versions', () => {
    expect(versionAtLeast('v2.3.5-lite', [2, 4, 0])).toBe(false);
    expect(versionAtLeast('v2.4.0', [2, 4, 0])).toBe(true);
    expect(versionAtLeast('2.10.1', [2, 4, 0])).toBe(true);
    expect(versionAtLeast('unknown', [2, 4, 0])).toBe(false);
  });

  it('on 2.3 upserts as a delete of the ids then an insert (native upsert misplaces partition-key rows)', async () => {
    const calls: Calls = [];
    const store = new MilvusVectorStore(
      fake({ ...existing('v2.3.5-lite'), deleteEntities: () => ({ status: OK, delete_cnt: '0' }), insert: () => ({ status: OK }) }, calls),
      OPTIONS,
    );
    await store.init(4);
    await store.upsert('action_faces', [record, { ...record, photoId: 'p2' }]);
    const writes = calls.filter((c) => c.method === 'deleteEntities' || c.method === 'insert');
    expect(writes.map((c) => c.method)).toEqual(['deleteEntities', 'insert']);
    expect(writes[0]!.args).toMatchObject({ collection_name: 'fm_action_faces', filter: 'id in ["f\\"1"]' });
    // One row per id, the last one given.
    expect(writes[1]!.args).toMatchObject({ fields_data: [{ id: 'f"1', photo_id: 'p2', user_id: '', embedding: [1, 0, 0, 0] }] });
  });

  it('from 2.4 uses the native upsert', async () => {
    const calls: Calls = [];
    const store = new MilvusVectorStore(fake({ ...existing('v2.4.1'), upsert: () => ({ status: OK }) }, calls), OPTIONS);
    await store.init(4);
    await store.upsert('user_samples', [{ ...record, userId: 'u' }]);
    expect(calls.at(-1)).toMatchObject({ method: 'upsert', args: { collection_name: 'fm_user_samples', fields_data: [{ user_id: 'u' }] } });
  });

  it('searches the event with Strong consistency and ef >= limit, and maps hits', async () => {
    const calls: Calls = [];
    const store = new MilvusVectorStore(
      fake(
        {
          ...existing('v2.3.5'),
          search: () => ({
            status: OK,
            results: [
              { id: 'a', score: 0.9, event_id: 'e', photo_id: 'p', user_id: '' },
              { id: 'b', score: 0.4, event_id: 'e', photo_id: 'q', user_id: 'u' },
            ],
          }),
        },
        calls,
      ),
      OPTIONS,
    );
    await store.init(4);
    const hits = await store.search('user_samples', { eventId: 'e"x', embedding: record.embedding, limit: 100, minSimilarity: 0.5 });
    expect(hits).toEqual([{ id: 'a', eventId: 'e', photoId: 'p', similarity: 0.9 }]);
    expect(calls.at(-1)!.args).toMatchObject({ filter: 'event_id == "e\\"x"', limit: 100, params: { ef: 100 }, consistency_level: 0 });
  });

  it('searchMany sends one Search per event and limit, and maps each answer to its query', async () => {
    const calls: Calls = [];
    const row = (id: string, score: number) => ({ id, score, event_id: 'e', photo_id: `p-${id}`, user_id: `u-${id}` });
    const store = new MilvusVectorStore(
      fake(
        {
          ...existing('v2.3.5'),
          // Two vectors of event e (limit 2) in one call, each answered with 2 rows; one of event f.
          search: (args: { data: number[][]; filter: string }) => ({
            status: OK,
            results: args.data.length === 2 ? [[row('a', 0.9), row('b', 0.8)], [row('c', 0.7), row('d', 0.2)]] : [row('x', 0.6)],
          }),
        },
        calls,
      ),
      OPTIONS,
    );
    await store.init(4);
    const q = (eventId: string, limit: number) => ({ eventId, embedding: record.embedding, limit, minSimilarity: 0.5 });
    const hits = await store.searchMany('user_samples', [q('e', 2), q('f', 2), q('e', 2)]);
    expect(hits.map((h) => h.map((x) => x.id))).toEqual([['a', 'b'], ['x'], ['c']]);
    expect(hits[0]![0]).toEqual({ id: 'a', eventId: 'e', photoId: 'p-a', userId: 'u-a', similarity: 0.9 });
    const searches = calls.filter((c) => c.method === 'search').map((c) => c.args as { data: number[][]; filter: string });
    expect(searches.map((s) => [s.filter, s.data.length])).toEqual([
      ['event_id == "e"', 2],
      ['event_id == "f"', 1],
    ]);
  });

  it('searchMany asks one query at a time when the answers are uneven (the 2.3 SDK would misplace rows)', async () => {
    const calls: Calls = [];
    const row = (id: string, score: number) => ({ id, score, event_id: 'e', photo_id: 'p', user_id: '' });
    let single = 0;
    const store = new MilvusVectorStore(
      fake(
        {
          ...existing('v2.3.5'),
          search: (args: { data: number[][] }) =>
            args.data.length > 1
              ? // What SDK 2.3.5 makes of topks [1, 2] (scores a, b, c): the second list starts at
                // offset 2 (topk x index), so it holds c and a row past the end, b is lost.
                { status: OK, results: [[row('a', 0.9)], [row('c', 0.7), { id: undefined, score: 0.8 }]] }
              : { status: OK, results: single++ === 0 ? [row('a', 0.9)] : [row('b', 0.8), row('c', 0.7)] },
        },
        calls,
      ),
      OPTIONS,
    );
    await store.init(4);
    const q = { eventId: 'e', embedding: record.embedding, limit: 2, minSimilarity: 0 };
    const hits = await store.searchMany('action_faces', [q, q]);
    expect(hits.map((h) => h.map((x) => x.id))).toEqual([['a'], ['b', 'c']]);
    expect(calls.filter((c) => c.method === 'search').map((c) => (c.args as { data: number[][] }).data.length)).toEqual([2, 1, 1]);
  });

  it('refuses a collection of another dimension', async () => {
    const store = new MilvusVectorStore(fake(existing('v2.3.5', 256)), OPTIONS);
    await expect(store.init(512)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/256-dimensional.*512/) as string });
  });

  it('records the embedder on collections without one; refuses another embedder before building or loading anything', async () => {
    const A = { pack: 'buffalo_l', sha256: '4c'.repeat(32) };
    const B = { pack: 'buffalo_s', sha256: '9c'.repeat(32) };
    const properties = new Map<string, { key: string; value: string }[]>();
    const server = (calls: Calls) =>
      fake(
        {
          ...existing('v2.3.5'),
          describeCollection: ({ collection_name }: { collection_name: string }) => ({
            ...(existing('v2.3.5').describeCollection as () => object)(),
            properties: properties.get(collection_name) ?? [],
          }),
          alterCollection: ({ collection_name, properties: p }: { collection_name: string; properties: Record<string, string> }) => {
            properties.set(collection_name, Object.entries(p).map(([key, value]) => ({ key, value })));
            return OK;
          },
        },
        calls,
      );
    const first: Calls = [];
    await new MilvusVectorStore(server(first), OPTIONS).init(4, { embedder: A, namespace: 'next' });
    expect(first.filter((c) => c.method === 'alterCollection').map((c) => c.args)).toMatchObject([
      { collection_name: 'fm_next_action_faces', properties: { 'facematch.embedder.pack': 'buffalo_l', 'facematch.embedder.sha256': A.sha256 } },
      { collection_name: 'fm_next_user_samples', properties: { 'facematch.embedder.pack': 'buffalo_l', 'facematch.embedder.sha256': A.sha256 } },
    ]);

    const second: Calls = [];
    await expect(new MilvusVectorStore(server(second), OPTIONS).init(4, { embedder: B, namespace: 'next' })).rejects.toMatchObject({
      code: 'EMBEDDER_MISMATCH',
      message: expect.stringMatching(
        /^Milvus at milvus.test:19530, collection fm_next_action_faces, holds embeddings of model pack buffalo_l \(embedder sha256 4c4c4c4c4c4c…\), but this service runs model pack buffalo_s \(embedder sha256 9c9c9c9c9c9c…\).*FACEMATCH_VECTOR_NAMESPACE/,
      ) as string,
    });
    expect(second.map((c) => c.method)).not.toContain('alterCollection');
    expect(second.map((c) => c.method)).not.toContain('describeIndex');
    expect(second.map((c) => c.method)).not.toContain('getLoadState');

    // Same embedder under another pack name: the same space. Without an identity: nothing checked.
    await new MilvusVectorStore(server([]), OPTIONS).init(4, { embedder: { pack: 'buffalo_l_copy', sha256: A.sha256 }, namespace: 'next' });
    await new MilvusVectorStore(server([]), OPTIONS).init(4, { namespace: 'next' });
    await expect(new MilvusVectorStore(server([]), OPTIONS).init(4, { namespace: 'Next-1' })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });

  it('maps an unreachable server to BACKEND_UNAVAILABLE naming Milvus', async () => {
    const down = Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 });
    const store = new MilvusVectorStore(fake({ getVersion: () => Promise.reject(down) }), OPTIONS);
    await expect(store.init(4)).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringContaining('Milvus at milvus.test:19530 is unavailable') as string,
    });
  });

  it('gives up on a call after the deadline', async () => {
    const store = new MilvusVectorStore(fake({ getVersion: () => new Promise(() => undefined) }), OPTIONS);
    const started = Date.now();
    await expect(store.init(4)).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('did not answer') as string });
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('init waits until each collection answers a read, not only until Milvus calls it loaded', async () => {
    // As after a restart: loaded at once, but reads hang (the query node is replaying) for a while.
    let hanging = 3;
    const calls: Calls = [];
    const store = new MilvusVectorStore(
      fake({ ...existing('v2.3.5'), query: () => (hanging-- > 0 ? new Promise(() => undefined) : { status: OK, data: [] }) }, calls),
      { ...OPTIONS, loadTimeoutMs: 5_000 },
    );
    await store.init(4);
    expect(calls.filter((c) => c.method === 'query')).toHaveLength(3 + 2);
    expect(calls.find((c) => c.method === 'query')!.args).toMatchObject({ collection_name: 'fm_action_faces', consistency_level: 0 });
  });

  it('init gives up after loadTimeoutMs, naming the collection that does not answer', async () => {
    const store = new MilvusVectorStore(fake({ ...existing('v2.3.5'), query: () => new Promise(() => undefined) }), { ...OPTIONS, loadTimeoutMs: 600 });
    await expect(store.init(4)).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringMatching(/Milvus at milvus.test:19530: collection fm_action_faces is loaded but did not answer a read within \d+ ms/) as string,
    });
  });

  it('ping fails within pingTimeoutMs naming the collection that does not answer reads, and passes once it does', async () => {
    let serving = false;
    const store = new MilvusVectorStore(
      fake({ ...existing('v2.3.5'), query: () => (serving ? { status: OK, data: [] } : new Promise(() => undefined)) }),
      { ...OPTIONS, pingTimeoutMs: 300 },
    );
    serving = true;
    await store.init(4);
    serving = false;
    const started = Date.now();
    await expect(store.ping()).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringMatching(/Milvus at milvus.test:19530: collection fm_(action_faces|user_samples) did not answer a read within/) as string,
    });
    expect(Date.now() - started).toBeLessThan(600);
    serving = true;
    await store.ping();
  });

  it('ping says which collection is not loaded, and asks Milvus to load it again', async () => {
    let state = 'LoadStateLoaded';
    const calls: Calls = [];
    const store = new MilvusVectorStore(
      fake({ ...existing('v2.3.5'), getLoadState: () => ({ status: OK, state }), loadCollection: () => OK }, calls),
      OPTIONS,
    );
    await store.init(4);
    state = 'LoadStateNotLoad';
    await expect(store.ping()).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('collection fm_action_faces is not loaded') as string });
    expect(calls.filter((c) => c.method === 'loadCollection').map((c) => (c.args as { collection_name: string }).collection_name).sort()).toEqual([
      'fm_action_faces',
      'fm_user_samples',
    ]);
  });

  it('retries a request Milvus refuses as not ready, within the deadline; then reports it unavailable', async () => {
    const notReady = { error_code: 'NotReadyServe', reason: 'proxy not healthy' };
    let refusals = 2;
    const calls: Calls = [];
    const store = new MilvusVectorStore(
      fake({ ...existing('v2.3.5'), deleteEntities: () => (refusals-- > 0 ? { status: notReady } : { status: OK, delete_cnt: '2' }) }, calls),
      { ...OPTIONS, timeoutMs: 1_000 },
    );
    await store.init(4);
    expect(await store.deleteByPhoto('action_faces', 'p')).toBe(2);
    expect(calls.filter((c) => c.method === 'deleteEntities')).toHaveLength(3);

    refusals = Infinity;
    const started = Date.now();
    await expect(store.deleteByPhoto('action_faces', 'p')).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringContaining('Milvus at milvus.test:19530 is unavailable (delete): proxy not healthy') as string,
    });
    expect(Date.now() - started).toBeLessThan(1_100);
  });

  it('does not retry a refused connection: a dead server fails at once', async () => {
    const down = Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 });
    let up = true;
    const calls: Calls = [];
    const store = new MilvusVectorStore(
      fake({ ...existing('v2.3.5'), deleteEntities: () => (up ? { status: OK, delete_cnt: '0' } : Promise.reject(down)) }, calls),
      { ...OPTIONS, timeoutMs: 5_000 },
    );
    await store.init(4);
    up = false;
    const started = Date.now();
    await expect(store.deleteByPhoto('action_faces', 'p')).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    expect(Date.now() - started).toBeLessThan(200);
    expect(calls.filter((c) => c.method === 'deleteEntities')).toHaveLength(1);
  });

  it('rejects bad input before calling Milvus', async () => {
    const store = new MilvusVectorStore(fake(existing('v2.3.5')), OPTIONS);
    await expect(store.upsert('action_faces', [record])).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await store.init(4);
    await expect(store.upsert('action_faces', [{ ...record, embedding: new Float32Array(3) }])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(store.upsert('action_faces', [{ ...record, embedding: Float32Array.from([NaN, 0, 0, 0]) }])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(store.search('action_faces', { eventId: 'e', embedding: record.embedding, limit: 0, minSimilarity: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
