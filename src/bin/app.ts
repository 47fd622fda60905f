/**
 * Wiring shared by every entry point (server, CLI): configuration → adapters → service.
 * Each store is embedded by default; configuration selects Milvus, S3 and PostgreSQL (openStores).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Tracer } from '@opentelemetry/api';
import { AddressPolicy } from '../adapters/image-source/address-policy.js';
import { CompositeImageSource } from '../adapters/image-source/composite.image-source.js';
import { HttpImageSource } from '../adapters/image-source/http.image-source.js';
import { openStores } from '../adapters/stores.js';
import { PACKAGE_ROOT, type Config } from '../config/config.js';
import { toFacematchError } from '../domain/errors.js';
import { DrawWorker } from '../inference/draw-worker.js';
import { AnalyzerPool } from '../inference/analyzer-pool.js';
import { embedderIdentity, readModelPack } from '../inference/model-pack.js';
import type { KeyedLocks } from '../ports/locks.js';
import type { MatchStore } from '../ports/match-store.js';
import type { ObjectStore } from '../ports/object-store.js';
import type { VectorStore } from '../ports/vector-store.js';
import { MatchingService } from '../services/matching.service.js';
import type { Logger } from '../telemetry/logger.js';
import type { Readiness } from '../transport/http/http.server.js';

export interface Stores {
  vectors: VectorStore;
  objects: ObjectStore;
  matches: MatchStore;
  locks: KeyedLocks;
  close(): Promise<void>;
}

export interface App {
  config: Config;
  analyzer: AnalyzerPool;
  stores: Stores;
  service: MatchingService;
  ready(): Promise<Readiness>;
  close(): Promise<void>;
}

export const VERSION = (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

async function check(name: string, fn: () => Promise<void>, timeoutMs = 2000): Promise<[string, string]> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return [name, 'ok'];
  } catch (error) {
    return [name, toFacematchError(error).message];
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `inferenceWorkers`: the inference pool's size, FACEMATCH_INFERENCE_WORKERS unless given. A caller
 * that handles one photo at a time (the CLI's commands, the demo) passes 1: one worker whose sessions
 * get every core's onnxruntime threads, instead of a server's pool of workers with a few threads each.
 */
export async function createApp(
  config: Config,
  log: Logger,
  o: { tracer: Tracer; localFiles?: boolean; inferenceWorkers?: number },
): Promise<App> {
  const workers = o.inferenceWorkers ?? config.inference.workers;
  const [analyzer, stores] = await Promise.allSettled([
    AnalyzerPool.start(config.inference, config.decode, workers, log, log.level, config.stores.annotatedMaxSide),
    openStores(config, log),
  ]);
  if (analyzer.status === 'rejected' || stores.status === 'rejected') {
    if (analyzer.status === 'fulfilled') await analyzer.value.close();
    if (stores.status === 'fulfilled') await stores.value.close();
    throw analyzer.status === 'rejected' ? analyzer.reason : (stores as PromiseRejectedResult).reason;
  }
  const pool = analyzer.value;
  const s = stores.value;
  try {
    const embedder = embedderIdentity(await readModelPack(config.inference.modelPack));
    await s.vectors.init(pool.dimension, { embedder, namespace: config.stores.vectorNamespace });
  } catch (error) {
    await Promise.all([s.close(), pool.close()]);
    throw error;
  }
  return assemble(config, pool, s, o);
}

function assemble(config: Config, analyzer: AnalyzerPool, stores: Stores, o: { tracer: Tracer; localFiles?: boolean }): App {
  const http = new HttpImageSource(config.source, new AddressPolicy(config.source.allow));
  // Blending and encoding the annotated copies run there, off the event loop.
  const drawing = new DrawWorker().start();
  const images = new CompositeImageSource({
    http,
    objects: { store: stores.objects, bucket: config.stores.bucket },
    localFiles: o.localFiles ?? false,
    config: config.source,
  });
  const service = new MatchingService({
    model: analyzer,
    images,
    vectors: stores.vectors,
    objects: stores.objects,
    matches: stores.matches,
    locks: stores.locks,
    annotate: (source, faces, size) =>
      drawing.draw(source, faces, { ...size, maxPixels: config.decode.maxPixels, maxSide: config.stores.annotatedMaxSide }),
    tracer: o.tracer,
    ...(config.inference.matchThreshold !== undefined ? { threshold: config.inference.matchThreshold } : {}),
  });
  return {
    config,
    analyzer,
    stores,
    service,
    async ready() {
      const checks = Object.fromEntries(
        await Promise.all([
          Promise.resolve(['models', `${analyzer.pack.name} on ${analyzer.provider}`] as [string, string]),
          check('vectors', () => stores.vectors.ping()),
          check('objects', () => stores.objects.ping()),
          check('matches', () => stores.matches.ping()),
        ]),
      );
      const ok = ['vectors', 'objects', 'matches'].every((k) => checks[k] === 'ok');
      return { ok, checks };
    },
    close: async () => {
      await Promise.all([stores.close(), analyzer.close(), drawing.close()]);
    },
  };
}
