/**
 * The embedded defaults: one PGlite database (pgvector for embeddings, the same SQL migrations as
 * PostgreSQL for match records) in <dataDir>/db, and a folder of objects in <dataDir>/objects.
 */
import path from 'node:path';
import type { StoreConfig } from '../../config/config.js';
import type { MatchStore } from '../../ports/match-store.js';
import type { ObjectStore } from '../../ports/object-store.js';
import type { VectorStore } from '../../ports/vector-store.js';
import type { Logger } from '../../telemetry/logger.js';
import { LocalObjectStore } from './local.object-store.js';
import { PgliteDatabase } from './pglite.database.js';
import { PgliteMatchStore } from './pglite.match-store.js';
import { PgliteVectorStore } from './pglite.vector-store.js';

export interface EmbeddedStores {
  vectors: VectorStore;
  objects: ObjectStore;
  matches: MatchStore;
  close(): Promise<void>;
}

export async function openEmbeddedStores(config: StoreConfig, log: Logger): Promise<EmbeddedStores> {
  const t0 = performance.now();
  const db = await PgliteDatabase.open(path.join(config.dataDir, 'db'));
  try {
    const vectors = new PgliteVectorStore(db);
    const matches = new PgliteMatchStore(db);
    const objects = new LocalObjectStore({ root: path.join(config.dataDir, 'objects'), bucket: config.bucket });
    await Promise.all([matches.init(), objects.init()]);
    log.info({ dataDir: config.dataDir, ms: Math.round(performance.now() - t0) }, 'embedded stores open');
    return { vectors, objects, matches, close: () => db.close() };
  } catch (error) {
    await db.close();
    throw error;
  }
}
