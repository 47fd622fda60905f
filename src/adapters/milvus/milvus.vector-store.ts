/**
 * VectorStore on Milvus 2.3: one collection per port collection (`<prefix>_action_faces`,
 * `<prefix>_user_samples`; with a namespace `<prefix>_<namespace>_action_faces` ...), each with
 *
 *   id         VarChar primary key (the deterministic face/sample id: a retry replaces, never duplicates)
 *   event_id   VarChar, the partition key (a search filtered by event reads that event's partition)
 *   photo_id   VarChar
 *   user_id    VarChar, '' when there is none
 *   embedding  FloatVector(dim), HNSW + COSINE by default (a COSINE score is the cosine similarity)
 *
 * Consistency. A search or query runs at Strong consistency: Milvus waits until the query node has
 * applied every write acknowledged before the search began, so a photo processed by one request is
 * found by the next request, whichever replica of the service (Milvus client) serves it. The
 * alternatives do not give that across replicas: Bounded (the SDK's default) may miss writes of the
 * last `common.gracefulTime` (5 s); Session is only as good as the guarantee timestamp the client
 * sends, and that is the last write of *this* client, which another replica does not know. Strong
 * costs time: a read waits for the query node's clock to pass its start, which moves in time ticks
 * (`proxy.timeTickInterval`, 200 ms by default), and measures 200 or 400 ms per search on Milvus
 * 2.3.5 at that default whatever the collection's size (bench/stores.bench.ts; Bounded: 2-3 ms).
 * Searches issued concurrently wait for the same tick, so a caller with several should send them
 * together. The interval is the server's: the chart starts Milvus with 50 ms
 * (`milvus.timeTickIntervalMs`), where a photo's store and search calls take less than half as long
 * (bench/milvus-tick.bench.ts).
 *
 * Upsert. Milvus up to 2.3.x computes the partition of an upserted row from the wrong field when the
 * collection has a partition key (milvus-io/milvus#30607, fixed for later releases by #30772/#30773):
 * upserted rows land in a partition that a search filtered by their event never reads. On servers
 * older than 2.4 an upsert is therefore a delete of the ids followed by an insert; a search between
 * the two does not see the rows (a reprocessed photo briefly has no faces), and a retry converges.
 * From 2.4 on, the native upsert is used.
 *
 * Deletion frees nothing at once: Milvus marks rows deleted and drops them from its segments when it
 * compacts them (automatically, once a segment's share of deleted rows or their age passes
 * thresholds, or on request). `compact()` requests it, e.g. after a user is forgotten.
 *
 * Embedding space. Each collection's properties record which embedder made its vectors
 * (`facematch.embedder.pack`, `facematch.embedder.sha256`; see embedding-space.ts): Milvus keeps
 * them in its metadata with the schema, and describeCollection, which init() calls anyway, returns
 * them. A collection without them (new, or made before they were recorded) gets them by
 * alterCollection, which merges properties. init() refuses a collection of another embedder before
 * it builds an index or loads anything.
 *
 * Failures: every call has a deadline (`timeoutMs`); a server that cannot be reached or does not
 * answer in time surfaces as BackendUnavailableError naming Milvus and its address. The gRPC channel
 * reconnects on its own (backoff capped at 2 s), so the same instance recovers when Milvus is back.
 * A status by which a live Milvus refuses a request it has not executed (not ready to serve, rate
 * limited, collection not loaded yet) is retried with a doubling pause (100 ms up to 1 s) within the
 * same deadline; a timeout or a refused connection is not, so a dead server still fails fast.
 *
 * After a (re)start. Milvus 2.3 reports a collection loaded (getLoadState) before it can serve a read:
 * its query node replays the collection's DML channel from the last checkpoint (which stays at the
 * start of the oldest unflushed segment, so minutes of time ticks on a quiet test server), and until
 * the replay reaches the present, every Strong read waits for it ("delegator query failed to wait
 * tsafe" in Milvus's log). So do deletes by a filter that is not the primary key (`photo_id == ...`,
 * `user_id == ...`), which Milvus runs as a query first. Measured on 2 cores: 5-25 s after the proxy
 * answers health checks, longer than one call's deadline. Milvus 2.6 reports such a delegator as not
 * serviceable (milvus-io/milvus#46551); 2.3 does not, so the store asks itself: init() waits until a
 * Strong read of each collection answers (up to `loadTimeoutMs`), and ping(), which /readyz runs,
 * fails naming the collection while one does not answer within `pingTimeoutMs`.
 */
import { ConsistencyLevelEnum, DataType, ErrorCode, LoadState, MilvusClient } from '@zilliz/milvus2-sdk-node';
import {
  BackendUnavailableError,
  ConfigError,
  FacematchError,
  InternalError,
  InvalidArgumentError,
} from '../../domain/errors.js';
import type {
  Collection,
  EmbedderIdentity,
  SearchQuery,
  VectorHit,
  VectorRecord,
  VectorStore,
  VectorStoreInitOptions,
} from '../../ports/vector-store.js';
import { checkEmbedder, checkNamespace, embedderMismatch, sameEmbedder } from '../embedding-space.js';

/** The calls the store makes: a unit test hands in a fake with these, the store the real client. */
export type MilvusApi = Pick<
  MilvusClient,
  | 'getVersion'
  | 'checkHealth'
  | 'hasCollection'
  | '_createCollection'
  | 'describeCollection'
  | 'alterCollection'
  | 'describeIndex'
  | 'createIndex'
  | 'loadCollection'
  | 'getLoadState'
  | 'insert'
  | 'upsert'
  | 'deleteEntities'
  | 'search'
  | 'query'
  | 'flush'
  | 'compact'
  | 'getCompactionState'
  | 'closeConnection'
>;

export type MilvusIndexType = 'HNSW' | 'FLAT';
export type MilvusReadConsistency = 'Strong' | 'Bounded';

export interface MilvusVectorStoreOptions {
  /** host:port of the Milvus proxy (for messages; the client is already connected to it). */
  address: string;
  /** Collections are `<prefix>_action_faces` and `<prefix>_user_samples`. */
  collectionPrefix: string;
  /** Index built on a new collection; an existing collection keeps the one it has. */
  index: MilvusIndexType;
  hnswM: number;
  hnswEfConstruction: number;
  /** HNSW `ef` of a search, raised to the search limit when smaller (Milvus requires ef >= limit). */
  searchEf: number;
  /** Deadline of each call. */
  timeoutMs: number;
  /**
   * Strong (default): every search sees every acknowledged write, from any client. Bounded exists for
   * the benchmark's comparison; a service must not use it (see the file comment).
   */
  readConsistency?: MilvusReadConsistency;
  /** How long init() waits for the collections to load and answer a Strong read (default 120 s). */
  loadTimeoutMs?: number;
  /**
   * Deadline of ping() (default 1.5 s, under the 2 s a /readyz check is given, so that the answer
   * names Milvus and what it waits for rather than a bare timeout).
   */
  pingTimeoutMs?: number;
}

export interface MilvusConnectOptions extends MilvusVectorStoreOptions {
  /** "user:password" or an API key. */
  token?: string | undefined;
}

const DEFAULT_LOAD_TIMEOUT_MS = 120_000;
const DEFAULT_PING_TIMEOUT_MS = 1_500;
/** Milvus caps a search's limit (topk) at 16384. */
const MAX_LIMIT = 16_384;
const MAX_ID_LENGTH = 1024;
/**
 * Rows per insert/upsert request. The 2.3 SDK builds each column with one Array.concat per row,
 * which is quadratic in the rows of a request: measured with 512 floats, 250 rows go at ~2,100
 * rows/s, 1,000 at ~840 and 2,000 at ~460.
 */
const BATCH_ROWS = 250;
/** Query vectors per Search call (Milvus allows nq up to 16,384; 512-d floats: 2 KB each). */
const SEARCH_BATCH = 256;
/** Before this server version the native upsert misplaces rows of partition-key collections. */
const NATIVE_UPSERT_SINCE: readonly [number, number, number] = [2, 4, 0];
const SUFFIX: Readonly<Record<Collection, string>> = { action_faces: 'action_faces', user_samples: 'user_samples' };
const OUTPUT_FIELDS = ['id', 'event_id', 'photo_id', 'user_id'];
/** Collection properties that record the embedder. */
const PACK_PROPERTY = 'facematch.embedder.pack';
const SHA256_PROPERTY = 'facematch.embedder.sha256';

interface CollectionState {
  name: string;
  /** Search params for the index the collection has. */
  searchParams: (limit: number) => Record<string, number>;
}

/** A Milvus status as the SDK returns it (on responses, or as the response itself). */
interface Status {
  error_code: string | number;
  reason: string;
  code?: number;
}

export class MilvusVectorStore implements VectorStore {
  private dimension: number | undefined;
  private collections: Record<Collection, CollectionState> | undefined;
  private nativeUpsert = false;
  private closed = false;
  private readonly consistency: ConsistencyLevelEnum;
  private readonly where: string;

  /** Takes ownership of the client: `close()` closes it. */
  constructor(
    private readonly client: MilvusApi,
    private readonly options: MilvusVectorStoreOptions,
  ) {
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,199}$/.test(options.collectionPrefix)) {
      throw new ConfigError(`Milvus collection prefix ${JSON.stringify(options.collectionPrefix)}: use letters, digits and underscores, not starting with a digit`);
    }
    this.consistency = (options.readConsistency ?? 'Strong') === 'Strong' ? ConsistencyLevelEnum.Strong : ConsistencyLevelEnum.Bounded;
    this.where = `Milvus at ${options.address}`;
  }

  /** Connects a real client (lazily: nothing is sent before the first call). */
  static connect(options: MilvusConnectOptions): MilvusVectorStore {
    const client = new MilvusClient({
      address: options.address,
      ...(options.token ? { token: options.token } : {}),
      timeout: options.timeoutMs,
      // The SDK retries UNAVAILABLE/DEADLINE_EXCEEDED calls with a doubling delay; once is enough
      // for a blip, and keeps a dead server's answer fast.
      maxRetries: 1,
      retryDelay: 100,
      channelOptions: {
        // Reconnect soon after the server is back, instead of grpc's backoff of up to 120 s.
        'grpc.initial_reconnect_backoff_ms': 250,
        'grpc.max_reconnect_backoff_ms': 2_000,
      },
      logLevel: 'error',
    });
    // The SDK sends a Connect at construction and keeps the promise, which it awaits only before
    // createCollection (a call the store does not use): with the server down it would reject
    // unhandled and end the process.
    client.connectPromise.catch(() => undefined);
    return new MilvusVectorStore(client, options);
  }

  async init(dimension: number, options: VectorStoreInitOptions = {}): Promise<void> {
    if (!Number.isInteger(dimension) || dimension < 2 || dimension > 32_768) {
      throw new ConfigError(`embedding dimension must be an integer in 2..32768 (Milvus's range), got ${dimension}`);
    }
    const namespace = checkNamespace(options.namespace);
    const embedder = options.embedder && checkEmbedder(options.embedder);
    const version = await this.rpc('get the server version', () => this.client.getVersion());
    this.nativeUpsert = versionAtLeast(version.version, NATIVE_UPSERT_SINCE);
    const base = namespace === '' ? this.options.collectionPrefix : `${this.options.collectionPrefix}_${namespace}`;
    const states = {} as Record<Collection, CollectionState>;
    for (const collection of Object.keys(SUFFIX) as Collection[]) {
      states[collection] = await this.prepare(`${base}_${SUFFIX[collection]}`, dimension, embedder);
    }
    this.collections = states;
    this.dimension = dimension;
  }

  async upsert(collection: Collection, records: readonly VectorRecord[]): Promise<void> {
    const { name } = this.collection(collection);
    if (records.length === 0) return;
    // The last record of an id wins, as a sequence of upserts would have it.
    const byId = new Map<string, Record<string, string | number[]>>();
    for (const r of records) byId.set(r.id, this.row(r));
    const rows = [...byId.values()];
    for (let start = 0; start < rows.length; start += BATCH_ROWS) {
      const batch = rows.slice(start, start + BATCH_ROWS);
      if (this.nativeUpsert) {
        const result = await this.rpc('upsert', () => this.client.upsert({ collection_name: name, fields_data: batch, timeout: this.options.timeoutMs }));
        this.check('upsert', result.status);
      } else {
        const ids = batch.map((row) => row.id as string);
        const deleted = await this.rpc('upsert (delete)', () =>
          this.client.deleteEntities({ collection_name: name, filter: `id in [${ids.map(literal).join(',')}]`, timeout: this.options.timeoutMs }),
        );
        this.check('upsert (delete)', deleted.status);
        const inserted = await this.rpc('upsert (insert)', () => this.client.insert({ collection_name: name, fields_data: batch, timeout: this.options.timeoutMs }));
        this.check('upsert (insert)', inserted.status);
      }
    }
  }

  async search(collection: Collection, query: SearchQuery): Promise<VectorHit[]> {
    const [hits] = await this.searchMany(collection, [query]);
    return hits ?? [];
  }

  /**
   * Queries of the same event and limit go to Milvus together (one Search with nq vectors, up to
   * SEARCH_BATCH at a time), so a crowd photo waits for one consistency time tick, not one per face.
   *
   * The SDK (2.3.5) slices a multi-vector answer assuming every query got the same number of hits
   * (`topk * index` as the offset): when they differ it would attach hits to the wrong query. The
   * answer is therefore accepted only when every query has a row list of one common length;
   * otherwise that batch is asked again one query at a time.
   */
  async searchMany(collection: Collection, queries: readonly SearchQuery[]): Promise<VectorHit[][]> {
    const state = this.collection(collection);
    for (const q of queries) {
      if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > MAX_LIMIT) {
        throw new InvalidArgumentError(`search limit must be an integer in 1..${MAX_LIMIT}, got ${q.limit}`);
      }
      if (!Number.isFinite(q.minSimilarity)) throw new InvalidArgumentError('minSimilarity must be a number');
    }
    const vectors = queries.map((q) => this.vector(q.embedding));
    const groups = new Map<string, number[]>();
    queries.forEach((q, i) => {
      const key = `${q.limit}\u0000${q.eventId}`;
      groups.set(key, [...(groups.get(key) ?? []), i]);
    });
    type Row = Record<string, unknown> & { score: number };
    const rowsOf: Row[][] = queries.map(() => []);
    const ask = async (which: readonly number[]): Promise<Row[][] | undefined> => {
      const q = queries[which[0]!]!;
      const result = await this.rpc('search', () =>
        this.client.search({
          collection_name: state.name,
          data: which.map((i) => vectors[i]!),
          filter: `event_id == ${literal(q.eventId)}`,
          limit: q.limit,
          metric_type: 'COSINE',
          params: state.searchParams(q.limit),
          output_fields: OUTPUT_FIELDS,
          consistency_level: this.consistency,
          timeout: this.options.timeoutMs,
        }),
      );
      this.check('search', result.status);
      const results = result.results as unknown as Row[] | Row[][];
      if (which.length === 1) return [results as Row[]];
      if (results.length === 0) return which.map(() => []);
      const lists = results as Row[][];
      const even = lists.length === which.length && lists.every((l) => Array.isArray(l) && l.length === lists[0]!.length);
      return even ? lists : undefined;
    };
    for (const members of groups.values()) {
      for (let start = 0; start < members.length; start += SEARCH_BATCH) {
        const batch = members.slice(start, start + SEARCH_BATCH);
        const lists = (await ask(batch)) ?? (await Promise.all(batch.map(async (i) => (await ask([i]))![0]!)));
        batch.forEach((i, k) => (rowsOf[i] = lists[k]!));
      }
    }
    return rowsOf.map((rows, i) => {
      const hits: VectorHit[] = [];
      for (const r of rows) {
        const similarity = Number(r.score);
        if (!(similarity >= queries[i]!.minSimilarity)) continue;
        const hit: VectorHit = { id: String(r.id), eventId: String(r.event_id), photoId: String(r.photo_id), similarity };
        if (typeof r.user_id === 'string' && r.user_id !== '') hit.userId = r.user_id;
        hits.push(hit);
      }
      return hits.sort((a, b) => b.similarity - a.similarity);
    });
  }

  async deleteByPhoto(collection: Collection, photoId: string): Promise<number> {
    const { name } = this.collection(collection);
    return this.deleteWhere(name, `photo_id == ${literal(photoId)}`);
  }

  async replacePhoto(photoId: string, collection: Collection, records: readonly VectorRecord[]): Promise<void> {
    this.collection(collection);
    for (const r of records) {
      if (r.photoId !== photoId) throw new InvalidArgumentError(`vector record ${r.id} is of photo ${r.photoId}, not ${photoId}`);
    }
    // Both deletes at once (each waits for the query node to catch up: Strong), both awaited
    // before the upsert, so an old vector never outlives its replacement.
    const deletes = await Promise.allSettled((['action_faces', 'user_samples'] as const).map((c) => this.deleteByPhoto(c, photoId)));
    const failed = deletes.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    await this.upsert(collection, records);
  }

  async deleteByUser(userId: string): Promise<number> {
    const states = this.ready();
    if (userId === '') throw new InvalidArgumentError('user id must not be empty');
    // Both collections at once: each delete waits for a time tick (Milvus runs a delete by a filter
    // as a query first), and two in a row would wait twice.
    const counts = await Promise.all(Object.values(states).map((state) => this.deleteWhere(state.name, `user_id == ${literal(userId)}`)));
    return counts.reduce((a, b) => a + b, 0);
  }

  /**
   * Readiness, within `pingTimeoutMs` in all: Milvus answers its health check and, once init() has
   * run, each collection is loaded and answers a read at the store's consistency (see "After a
   * (re)start" in the file comment). A collection that is no longer loaded (an operator released
   * it) is asked to load again, so the store heals without a restart.
   */
  async ping(): Promise<void> {
    const timeoutMs = this.options.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const health = await this.rpc('health check', () => this.client.checkHealth(), deadline);
    if (!health.isHealthy) {
      throw new BackendUnavailableError(`${this.where} is not healthy: ${(health.reasons as unknown[]).map(String).join('; ') || 'no reason given'}`);
    }
    if (this.collections === undefined) return;
    await Promise.all(Object.values(this.collections).map((state) => this.serves(state.name, deadline, true)));
  }

  /**
   * Asks Milvus to compact both collections, which is when it frees the space of deleted rows (it
   * also compacts on its own, later). Flushes first: compaction only rewrites sealed segments. With
   * `wait`, returns when the compactions have finished (or after `waitTimeoutMs`, default 60 s).
   * Returns how many compaction plans Milvus made.
   */
  async compact(o: { wait?: boolean; waitTimeoutMs?: number } = {}): Promise<{ plans: number; completed: boolean }> {
    const names = Object.values(this.ready()).map((s) => s.name);
    const flushed = await this.rpc('flush', () => this.client.flush({ collection_names: names, timeout: this.options.timeoutMs }));
    this.check('flush', flushed.status);
    const ids: string[] = [];
    let plans = 0;
    for (const name of names) {
      const res = await this.rpc('compact', () => this.client.compact({ collection_name: name, timeout: this.options.timeoutMs }));
      this.check('compact', res.status);
      ids.push(String(res.compactionID));
      plans += Number((res as { compactionPlanCount?: number }).compactionPlanCount ?? 0);
    }
    if (!o.wait) return { plans, completed: false };
    const until = Date.now() + (o.waitTimeoutMs ?? 60_000);
    for (const id of ids) {
      for (;;) {
        const state = await this.rpc('compaction state', () => this.client.getCompactionState({ compactionID: id, timeout: this.options.timeoutMs }));
        this.check('compaction state', state.status);
        if (String(state.state) === 'Completed') break;
        if (Date.now() > until) return { plans, completed: false };
        await sleep(500);
      }
    }
    return { plans, completed: true };
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.client.closeConnection();
    }
    return Promise.resolve();
  }

  /**
   * Creates the collection, its index and loads it, as far as each is missing; checks what exists;
   * records the embedder on a collection that has none (see "Embedding space" in the file comment).
   */
  private async prepare(name: string, dimension: number, embedder: EmbedderIdentity | undefined): Promise<CollectionState> {
    const has = await this.rpc('check a collection', () => this.client.hasCollection({ collection_name: name, timeout: this.options.timeoutMs }));
    this.check('check a collection', has.status);
    if (!has.value) {
      const created = await this.rpc('create a collection', () =>
        this.client._createCollection({
          collection_name: name,
          description: 'facematch face embeddings',
          consistency_level: 'Strong',
          // Partitions that event ids hash into (Milvus's default for a partition key).
          num_partitions: 64,
          fields: [
            { name: 'id', data_type: DataType.VarChar, is_primary_key: true, max_length: MAX_ID_LENGTH },
            { name: 'event_id', data_type: DataType.VarChar, is_partition_key: true, max_length: MAX_ID_LENGTH },
            { name: 'photo_id', data_type: DataType.VarChar, max_length: MAX_ID_LENGTH },
            { name: 'user_id', data_type: DataType.VarChar, max_length: MAX_ID_LENGTH },
            { name: 'embedding', data_type: DataType.FloatVector, dim: dimension },
          ],
          timeout: this.options.timeoutMs,
        }),
      );
      // Another replica may have created it in the meantime: that is fine, the checks below decide.
      if (!isSuccess(created) && !/already exist/i.test(created.reason)) this.check('create a collection', created);
    }

    const described = await this.rpc('describe a collection', () => this.client.describeCollection({ collection_name: name, timeout: this.options.timeoutMs }));
    this.check('describe a collection', described.status);
    // Another embedder's vectors are refused first: that, not the dimension, is what to fix.
    const stored = storedEmbedder(described.properties);
    if (embedder && stored && !sameEmbedder(stored, embedder)) throw embedderMismatch(`${this.where}, collection ${name},`, stored, embedder);
    const fields = new Map(described.schema.fields.map((f) => [f.name, f]));
    for (const field of ['id', 'event_id', 'photo_id', 'user_id', 'embedding']) {
      if (!fields.has(field)) throw new ConfigError(`${this.where}: collection ${name} has no field ${field}; it was not made by facematch (use another collection prefix)`);
    }
    const dimParam = fields.get('embedding')!.type_params.find((p) => p.key === 'dim')?.value;
    if (Number(dimParam) !== dimension) {
      throw new ConfigError(
        `${this.where}: collection ${name} holds ${String(dimParam ?? '?')}-dimensional embeddings, the model makes ${dimension}; set FACEMATCH_VECTOR_NAMESPACE to a new name for another model`,
      );
    }
    if (embedder && !stored) await this.recordEmbedder(name, embedder);

    let index = await this.rpc('describe an index', () => this.client.describeIndex({ collection_name: name, field_name: 'embedding', timeout: this.options.timeoutMs }));
    if (!isSuccess(index.status) || index.index_descriptions.length === 0) {
      const params: Record<string, number> =
        this.options.index === 'HNSW' ? { M: this.options.hnswM, efConstruction: this.options.hnswEfConstruction } : {};
      const created = await this.rpc('create an index', () =>
        this.client.createIndex({
          collection_name: name,
          field_name: 'embedding',
          index_name: 'embedding',
          index_type: this.options.index,
          metric_type: 'COSINE',
          params,
          timeout: this.options.timeoutMs,
        }),
      );
      if (!isSuccess(created) && !/already exist|at most one distinct index/i.test(created.reason)) this.check('create an index', created);
      index = await this.rpc('describe an index', () => this.client.describeIndex({ collection_name: name, field_name: 'embedding', timeout: this.options.timeoutMs }));
      this.check('describe an index', index.status);
    }
    const indexParams = new Map((index.index_descriptions[0]?.params ?? []).map((p) => [p.key, String(p.value)]));
    const metric = indexParams.get('metric_type');
    if (metric !== undefined && metric !== 'COSINE') {
      throw new ConfigError(`${this.where}: collection ${name} is indexed for ${metric}, facematch needs COSINE; use another collection prefix`);
    }
    const indexType = indexParams.get('index_type') ?? this.options.index;

    await this.load(name);
    await this.waitForReads(name);
    const ef = this.options.searchEf;
    return {
      name,
      searchParams: indexType === 'HNSW' ? (limit) => ({ ef: Math.max(ef, limit) }) : () => ({}),
    };
  }

  /**
   * Records the embedder in the collection's properties, then reads them back: of two replicas
   * starting at once with different embedders on a new collection, the one whose write was
   * overwritten sees the other's and refuses.
   */
  private async recordEmbedder(name: string, embedder: EmbedderIdentity): Promise<void> {
    const altered = await this.rpc('record the embedder', () =>
      this.client.alterCollection({
        collection_name: name,
        properties: { [PACK_PROPERTY]: embedder.pack, [SHA256_PROPERTY]: embedder.sha256 },
        timeout: this.options.timeoutMs,
      }),
    );
    this.check('record the embedder', altered);
    const described = await this.rpc('describe a collection', () => this.client.describeCollection({ collection_name: name, timeout: this.options.timeoutMs }));
    this.check('describe a collection', described.status);
    const recorded = storedEmbedder(described.properties);
    if (!recorded) throw new InternalError(`${this.where}: collection ${name} did not keep the embedder properties it was given`);
    if (!sameEmbedder(recorded, embedder)) throw embedderMismatch(`${this.where}, collection ${name},`, recorded, embedder);
  }

  private async load(name: string): Promise<void> {
    const state = await this.rpc('check loading', () => this.client.getLoadState({ collection_name: name, timeout: this.options.timeoutMs }));
    this.check('check loading', state.status);
    if (state.state === LoadState.LoadStateLoaded) return;
    if (state.state !== LoadState.LoadStateLoading) {
      const loaded = await this.rpc('load a collection', () => this.client.loadCollection({ collection_name: name, timeout: this.options.timeoutMs }));
      this.check('load a collection', loaded);
    }
    const until = Date.now() + (this.options.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS);
    for (;;) {
      const now = await this.rpc('check loading', () => this.client.getLoadState({ collection_name: name, timeout: this.options.timeoutMs }));
      this.check('check loading', now.status);
      if (now.state === LoadState.LoadStateLoaded) return;
      if (Date.now() > until) throw new BackendUnavailableError(`${this.where}: collection ${name} is still loading (${now.state})`);
      await sleep(200);
    }
  }

  /**
   * Whether the collection is loaded and answers a read (a query for an id that cannot exist, at the
   * store's consistency) before `deadline`; throws BackendUnavailableError saying which it is not.
   */
  private async serves(name: string, deadline: number, reload = false): Promise<void> {
    const state = await this.rpc('check loading', () => this.client.getLoadState({ collection_name: name, timeout: this.options.timeoutMs }), deadline);
    this.check('check loading', state.status);
    if (state.state !== LoadState.LoadStateLoaded) {
      if (reload && state.state === LoadState.LoadStateNotLoad) {
        // Not awaited: loading takes longer than a readiness check; the next one sees the progress.
        this.client.loadCollection({ collection_name: name, timeout: this.options.timeoutMs }).catch(() => undefined);
      }
      throw new BackendUnavailableError(`${this.where}: collection ${name} is not loaded (${state.state})`);
    }
    const started = Date.now();
    try {
      const probe = await this.rpc(
        `a read of ${name}`,
        () =>
          this.client.query({
            collection_name: name,
            filter: 'id == ""',
            output_fields: ['id'],
            limit: 1,
            consistency_level: this.consistency,
            timeout: this.options.timeoutMs,
          }),
        deadline,
      );
      this.check(`a read of ${name}`, probe.status);
    } catch (error) {
      if (!(error instanceof MilvusTimeout)) throw error;
      throw new BackendUnavailableError(
        `${this.where}: collection ${name} did not answer a read within ${Date.now() - started} ms (after a start Milvus replays its changes before it serves reads)`,
        { cause: error },
      );
    }
  }

  /** After load(): waits, up to `loadTimeoutMs`, until the collection answers reads. */
  private async waitForReads(name: string): Promise<void> {
    const started = Date.now();
    const until = started + (this.options.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS);
    let pause = 250;
    for (;;) {
      try {
        await this.serves(name, Math.min(Date.now() + this.options.timeoutMs, until));
        return;
      } catch (error) {
        // A refused connection or an error status is final; a slow answer is what is waited out.
        if (!(error instanceof BackendUnavailableError && error.cause instanceof MilvusTimeout)) throw error;
        if (Date.now() + pause >= until) {
          throw new BackendUnavailableError(`${this.where}: collection ${name} is loaded but did not answer a read within ${Date.now() - started} ms`, { cause: error });
        }
      }
      await sleep(pause);
      pause = Math.min(pause * 2, 2_000);
    }
  }

  private async deleteWhere(name: string, filter: string): Promise<number> {
    const result = await this.rpc('delete', () => this.client.deleteEntities({ collection_name: name, filter, timeout: this.options.timeoutMs }));
    this.check('delete', result.status);
    return Number(result.delete_cnt);
  }

  private ready(): Record<Collection, CollectionState> {
    if (this.collections === undefined) throw new ConfigError('vector store used before init()');
    return this.collections;
  }

  private collection(collection: Collection): CollectionState {
    const state = this.ready()[collection] as CollectionState | undefined;
    if (state === undefined) throw new InvalidArgumentError(`unknown collection ${String(collection)}`);
    return state;
  }

  private row(r: VectorRecord): Record<string, string | number[]> {
    for (const [what, value] of [['id', r.id], ['eventId', r.eventId], ['photoId', r.photoId]] as const) {
      if (!value) throw new InvalidArgumentError('vector record needs id, eventId and photoId');
      if (value.length > MAX_ID_LENGTH) throw new InvalidArgumentError(`vector record ${what} is longer than ${MAX_ID_LENGTH} characters`);
    }
    if ((r.userId ?? '').length > MAX_ID_LENGTH) throw new InvalidArgumentError(`vector record userId is longer than ${MAX_ID_LENGTH} characters`);
    return { id: r.id, event_id: r.eventId, photo_id: r.photoId, user_id: r.userId ?? '', embedding: this.vector(r.embedding) };
  }

  private vector(embedding: Float32Array): number[] {
    const dimension = this.dimension;
    if (dimension === undefined) throw new ConfigError('vector store used before init()');
    if (embedding.length !== dimension) {
      throw new InvalidArgumentError(`embedding has ${embedding.length} dimensions, the store holds ${dimension}`);
    }
    const out = new Array<number>(embedding.length);
    for (let i = 0; i < embedding.length; i++) {
      const x = embedding[i]!;
      if (!Number.isFinite(x)) throw new InvalidArgumentError('embedding holds a NaN or infinite value');
      out[i] = x;
    }
    return out;
  }

  /** Runs one call with the deadline; what fails to reach Milvus becomes BackendUnavailableError. */
  /**
   * Runs one call before `deadline` (default: `timeoutMs` from now). A status by which Milvus
   * refuses a request it has not executed (not ready to serve, rate limited, not loaded yet) is
   * retried after 100, 200, 400 ms ... (at most 1 s) while the deadline allows; the last answer is
   * returned for the caller's check(). What fails to reach Milvus becomes BackendUnavailableError.
   */
  private async rpc<T>(what: string, call: () => Promise<T>, deadline = Date.now() + this.options.timeoutMs): Promise<T> {
    if (this.closed) throw new BackendUnavailableError(`${this.where}: the store is closed`);
    const started = Date.now();
    let pause = 100;
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new MilvusTimeout(`${this.where} did not answer ${what} within ${Date.now() - started} ms`)),
          Math.max(0, deadline - Date.now()),
        );
      });
      let result: T;
      try {
        result = await Promise.race([call(), late]);
      } catch (error) {
        throw this.failure(what, error);
      } finally {
        clearTimeout(timer);
      }
      const status = statusIn(result);
      if (status === undefined || isSuccess(status) || !isRefusal(status) || Date.now() + pause >= deadline) return result;
      await sleep(pause);
      pause = Math.min(pause * 2, 1_000);
    }
  }

  private failure(what: string, error: unknown): FacematchError {
    if (error instanceof FacematchError) return error;
    const message = error instanceof Error ? error.message : String(error);
    if ((error as { code?: unknown } | null)?.code === 4 || /DEADLINE_EXCEEDED|Deadline exceeded/i.test(message)) {
      return new MilvusTimeout(`${this.where} did not answer ${what} in time: ${firstLine(message)}`, { cause: error });
    }
    if (isUnavailable(error, message)) {
      return new BackendUnavailableError(`${this.where} is unavailable (${what}): ${firstLine(message)}`, { cause: error });
    }
    return new InternalError(`${this.where}: ${what} failed: ${firstLine(message)}`, { cause: error });
  }

  /** Turns a status other than Success into an error. */
  private check(what: string, status: Status): void {
    if (isSuccess(status)) return;
    const reason = firstLine(status.reason || String(status.error_code));
    if (isRefusal(status)) {
      throw new BackendUnavailableError(`${this.where} is unavailable (${what}): ${reason}`);
    }
    throw new InternalError(`${this.where}: ${what} failed: ${reason}`);
  }
}

/**
 * A Milvus expression string literal. Milvus parses them as Go quoted strings, whose escapes are
 * the ones JSON.stringify writes (\", \\, \n, \uXXXX ...): a value cannot end the literal early.
 */
export function literal(value: string): string {
  return JSON.stringify(value);
}

/** gRPC codes and messages of a server that is down, unreachable, overloaded or too slow. */
const UNAVAILABLE_MESSAGE =
  /\b(UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|CANCELLED)\b|ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENOTFOUND|No connection established|Connection dropped|Deadline exceeded/i;
const UNAVAILABLE_GRPC_CODES = new Set([1, 4, 8, 14]);
/** Statuses of a server that is up but not serving (starting, recovering, rate-limiting). */
const UNAVAILABLE_REASON = /not ready|not healthy|service unavailable|rate limit|no available|channel.*not (found|available)|not loaded|recovering|stopping/i;
const UNAVAILABLE_CODES = new Set(['NotReadyServe', 'NotReadyCoordActivating', 'RateLimit', 'ForceDeny', 'CollectionNotLoaded']);

function isUnavailable(error: unknown, message: string): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return (typeof code === 'number' && UNAVAILABLE_GRPC_CODES.has(code)) || UNAVAILABLE_MESSAGE.test(message);
}

/** A status by which a live Milvus refuses a request without executing it (safe to send again). */
function isRefusal(status: Status): boolean {
  return UNAVAILABLE_CODES.has(String(status.error_code)) || UNAVAILABLE_REASON.test(status.reason);
}

/** The status of an answer: the answer itself (a bare status) or its `status` field. */
function statusIn(answer: unknown): Status | undefined {
  const isStatus = (v: unknown): v is Status => typeof v === 'object' && v !== null && 'error_code' in v;
  if (isStatus(answer)) return answer;
  const nested = (answer as { status?: unknown } | null)?.status;
  return isStatus(nested) ? nested : undefined;
}

/** The embedder recorded in a collection's properties, if any. */
function storedEmbedder(properties: readonly { key: string; value: string | number }[] | undefined): EmbedderIdentity | undefined {
  const get = (key: string) => {
    const value = properties?.find((p) => p.key === key)?.value;
    return value === undefined ? undefined : String(value);
  };
  const sha256 = get(SHA256_PROPERTY);
  return sha256 ? { pack: get(PACK_PROPERTY) ?? '(unnamed)', sha256 } : undefined;
}

/** Milvus did not answer before the deadline (it may be down, overloaded, or still catching up). */
class MilvusTimeout extends BackendUnavailableError {}

function isSuccess(status: Status | undefined): boolean {
  return status !== undefined && (status.error_code === ErrorCode.SUCCESS || status.error_code === 0);
}

function firstLine(text: string): string {
  const line = text.split('\n')[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

/** Whether a version like "v2.3.5-lite" is at least `min`. */
export function versionAtLeast(version: string, min: readonly [number, number, number]): boolean {
  const parts = /(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!parts) return false;
  const v = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  for (let i = 0; i < 3; i++) {
    if (v[i]! !== min[i]!) return v[i]! > min[i]!;
  }
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
