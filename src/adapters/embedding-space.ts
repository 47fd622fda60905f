/**
 * One embedding space per store, the part both vector stores share: checking a namespace and an
 * embedder identity, deciding whether two identities share a space, and the error that names both.
 * Each store records the identity where it survives next to its vectors (a table of the embedded
 * database, properties of the Milvus collections).
 */
import { ConfigError, EmbedderMismatchError } from '../domain/errors.js';
import type { EmbedderIdentity } from '../ports/vector-store.js';

/** Lowercase (an unquoted PostgreSQL identifier), short enough for Milvus and PostgreSQL names. */
const NAMESPACE = /^[a-z][a-z0-9_]{0,39}$/;
const SHA256 = /^[0-9a-f]{64}$/;

/** The namespace, '' for the default set; throws ConfigError for one that cannot name tables. */
export function checkNamespace(namespace: string | undefined): string {
  const ns = namespace ?? '';
  if (ns !== '' && !NAMESPACE.test(ns)) {
    throw new ConfigError(
      `vector namespace ${JSON.stringify(ns)}: use lowercase letters, digits and underscores, starting with a letter, at most 40 characters`,
    );
  }
  return ns;
}

export function checkEmbedder(embedder: EmbedderIdentity): EmbedderIdentity {
  if (!embedder.pack || !SHA256.test(embedder.sha256)) {
    throw new ConfigError(`embedder identity needs a pack name and a lowercase hex sha256, got ${JSON.stringify(embedder)}`);
  }
  return embedder;
}

/** Whether vectors of `a` and `b` may be compared: the embedder's weights decide, not the pack's name. */
export function sameEmbedder(a: EmbedderIdentity, b: EmbedderIdentity): boolean {
  return a.sha256 === b.sha256;
}

/** `where` (e.g. `Milvus at host:19530, collection x`) holds vectors of `stored`; the service runs `configured`. */
export function embedderMismatch(where: string, stored: EmbedderIdentity, configured: EmbedderIdentity): EmbedderMismatchError {
  return new EmbedderMismatchError(
    `${where} holds embeddings of model pack ${stored.pack} (embedder sha256 ${short(stored.sha256)}), ` +
      `but this service runs model pack ${configured.pack} (embedder sha256 ${short(configured.sha256)}): ` +
      `embeddings of two embedders cannot be compared. Start with model pack ${stored.pack} again, or set ` +
      `FACEMATCH_VECTOR_NAMESPACE to a name not used before to give the new pack an empty set of vectors, ` +
      `then re-process the photos (README: "Moving to a new model pack")`,
  );
}

function short(sha256: string): string {
  return `${sha256.slice(0, 12)}…`;
}
