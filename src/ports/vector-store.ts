/**
 * Face embeddings and similarity search. Two collections: the faces of action shots, and the
 * enrolment samples of users (one per facecam photo). Designed to fit Milvus: the event id is the
 * partition key, the metric is cosine, primary keys are deterministic so that writes are upserts.
 */
export type Collection = 'action_faces' | 'user_samples';

export interface VectorRecord {
  /** Primary key: a face id (action faces) or a sample id (user samples). */
  id: string;
  eventId: string;
  photoId: string;
  /** Set on user samples. */
  userId?: string;
  /** L2-normalised. */
  embedding: Float32Array;
}

export interface VectorHit {
  id: string;
  eventId: string;
  photoId: string;
  userId?: string;
  /** Cosine similarity, -1..1. */
  similarity: number;
}

export interface SearchQuery {
  eventId: string;
  embedding: Float32Array;
  limit: number;
  /** Hits below this similarity are not returned. */
  minSimilarity: number;
}

/**
 * Which embedder made a store's vectors. Embeddings of two embedders live in different spaces (even
 * at the same dimension) and must never be compared: the sha256 of the embedder's weights decides
 * (two packs with the same embedder, buffalo_s and buffalo_sc, share a space); the pack name is
 * what messages show.
 */
export interface EmbedderIdentity {
  /** Model pack name, e.g. `buffalo_l`. */
  pack: string;
  /** sha256 of the embedder's weights (the manifest's `embedder.sha256`), lowercase hex. */
  sha256: string;
}

export interface VectorStoreInitOptions {
  /**
   * Recorded with the vectors by a store that has none yet (a new store, or one made before
   * identities were recorded); a store holding another embedder's vectors refuses to start with
   * EmbedderMismatchError. Without it (tests and benchmarks of a store alone) nothing is checked.
   */
  embedder?: EmbedderIdentity;
  /**
   * Selects a separate set of collections/tables, e.g. for a new model pack ('' or absent: the
   * default set). Lowercase letters, digits and underscores, starting with a letter, at most 40.
   */
  namespace?: string;
}

export interface VectorStore {
  /** Creates collections/indexes if missing, records or checks the embedder; idempotent. */
  init(dimension: number, options?: VectorStoreInitOptions): Promise<void>;
  /** Inserts or replaces by id. */
  upsert(collection: Collection, records: readonly VectorRecord[]): Promise<void>;
  /** Nearest first. */
  search(collection: Collection, query: SearchQuery): Promise<VectorHit[]>;
  /** Several searches in one round trip: the hits of each query, in the order of the queries. */
  searchMany(collection: Collection, queries: readonly SearchQuery[]): Promise<VectorHit[][]>;
  /** Removes every record of these photos; returns how many were removed. */
  deleteByPhoto(collection: Collection, photoId: string): Promise<number>;
  /**
   * The photo's vectors become exactly `records` (all of `collection`, all of this photo): whatever
   * the photo had before, in either collection, goes (a reprocess may find fewer faces, or turn a
   * facecam into an action shot). One transaction where the store has them (the embedded store);
   * on Milvus the deletes, then the upsert (a crash in between leaves fewer vectors, which the
   * retry writes again).
   */
  replacePhoto(photoId: string, collection: Collection, records: readonly VectorRecord[]): Promise<void>;
  /** Removes every record of this user (user samples). */
  deleteByUser(userId: string): Promise<number>;
  /**
   * Asks the store to reclaim the space of deleted records (Milvus frees deleted vectors only at
   * compaction); returns without waiting for it to finish. Stores that free space on delete omit it.
   */
  compact?(): Promise<unknown>;
  /** Throws BackendUnavailableError when the store cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
