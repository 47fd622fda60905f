-- pgvector tables of the embedded vector store: one per collection. {{DIM}} is the embedding
-- dimension given to VectorStore.init(); a store created with one dimension refuses another.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE action_faces (
  id        text PRIMARY KEY,
  event_id  text NOT NULL,
  photo_id  text NOT NULL,
  user_id   text,
  embedding vector({{DIM}}) NOT NULL
);

CREATE INDEX action_faces_embedding_idx ON action_faces USING hnsw (embedding vector_cosine_ops);
CREATE INDEX action_faces_event_idx ON action_faces (event_id);
CREATE INDEX action_faces_photo_idx ON action_faces (photo_id);
CREATE INDEX action_faces_user_idx ON action_faces (user_id) WHERE user_id IS NOT NULL;

CREATE TABLE user_samples (
  id        text PRIMARY KEY,
  event_id  text NOT NULL,
  photo_id  text NOT NULL,
  user_id   text,
  embedding vector({{DIM}}) NOT NULL
);

CREATE INDEX user_samples_embedding_idx ON user_samples USING hnsw (embedding vector_cosine_ops);
CREATE INDEX user_samples_event_idx ON user_samples (event_id);
CREATE INDEX user_samples_photo_idx ON user_samples (photo_id);
CREATE INDEX user_samples_user_idx ON user_samples (user_id) WHERE user_id IS NOT NULL;
