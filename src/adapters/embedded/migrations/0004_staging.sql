-- Where upserts and searchMany() copy their vectors in binary (COPY ... FORMAT binary, see
-- pglite.vector-store.ts) before the statement that reads them. They were session temporary tables:
-- a transaction that touched one cost ~1.8 ms more in PGlite than one that did not (3.4 ms against
-- 1.1 ms for a 4-row COPY, read and delete), twice per photo; an ordinary table costs no such extra.
-- Unlogged (their rows never outlive the transaction that wrote them, so they need no WAL),
-- and without a dimension: the target column checks it. The store empties them in that transaction.

CREATE UNLOGGED TABLE vector_upserts (
  n         int NOT NULL,
  id        text NOT NULL,
  event_id  text NOT NULL,
  photo_id  text NOT NULL,
  user_id   text,
  embedding vector NOT NULL
);

CREATE UNLOGGED TABLE vector_queries (
  i        int NOT NULL,
  event_id text NOT NULL,
  lim      int NOT NULL,
  v        vector NOT NULL
);
