-- Which embedder made the vectors of these tables (model pack name, sha256 of the embedder's
-- weights): embeddings of two embedders must never be compared, so a start with another embedder
-- is refused. One row, written by the first start that names an embedder (tables made before this
-- migration adopt the embedder they are next started with).

CREATE TABLE embedding_space (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  pack        text NOT NULL,
  sha256      text NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
