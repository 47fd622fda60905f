-- The HNSW indexes go: each insertion into the graph cost milliseconds in PGlite's WASM (~100
-- rows/s at 100k stored). The store now builds an IVFFlat index itself once a table is large
-- enough, and rebuilds it as the table grows (pglite.vector-store.ts); below that, searches are exact.

DROP INDEX IF EXISTS action_faces_embedding_idx;
DROP INDEX IF EXISTS user_samples_embedding_idx;
