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
import { checkModelFile, embedderIdentity, readModelPack } from '../inference/model-pack.js';
import { mayMeasure, workerThreads } from '../inference/session-choice.js';
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
 * Whether the inference pool starts before the stores open (`poolFirst`), and why. When the first
 * inference worker will measure the onnxruntime session settings (tuning on, on the CPU, a level not
 * pinned, and no choice for these models and threads in the tuning cache), the stores open only once
 * the pool is ready: opening them (PGlite's WASM start and migrations, the network clients) loads the
 * CPU the worker measures on, and once made the level `all` look 2.4x slower than it is. Otherwise
 * (a cached choice, tuning off, CUDA, levels pinned) both start at once, as fast as before.
 * Reads the model pack, the model files' sizes and times (a derived file is hashed to find it) and
 * the tuning cache; onnxruntime is loaded on this thread only when tuning is on (the cache key holds
 * its version).
 */
export async function startOrder(config: Config, workers: number): Promise<{ poolFirst: boolean; reason: string }> {
  // The sessions' threads as the pool gives them to each worker: the tuning cache is keyed by them.
  const inference = { ...config.inference, intraOpThreads: workerThreads(config.inference.intraOpThreads, workers) };
  if (!mayMeasure(inference)) {
    const why = inference.ortTuning === 'off' ? 'FACEMATCH_ORT_TUNING=off' : inference.device === 'cuda' ? 'CUDA' : 'both levels pinned by FACEMATCH_ORT_OPTIMIZATION';
    return { poolFirst: false, reason: `no onnxruntime tuning: ${why}` };
  }
  const pack = await readModelPack(inference.modelPack);
  // Paths only: the worker verifies the files' hashes.
  const [detector, embedder] = await Promise.all([
    checkModelFile(inference.modelsDir, pack.detector, false),
    checkModelFile(inference.modelsDir, pack.embedder, false),
  ]);
  const { modelsToMeasure } = await import('../inference/session-tuner.js');
  const roles = await modelsToMeasure(inference, {
    detector: { file: detector, inputSize: pack.detector.inputSize },
    embedder: { file: embedder, inputSize: pack.embedder.inputSize },
  });
  return roles.length > 0
    ? { poolFirst: true, reason: `the first inference worker measures the onnxruntime session settings of the ${roles.join(' and ')} (no choice in the tuning cache ${inference.tuningCache}): the stores open when it is done` }
    : { poolFirst: false, reason: `the onnxruntime session settings come from the tuning cache ${inference.tuningCache}` };
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
  // The pool starts at once; the stores wait for the order, decided meanwhile (a few tens of ms,
  // more with a derived model file to hash), so a start on a warm tuning cache is not held up.
  const starting = AnalyzerPool.start(config.inference, config.decode, workers, log, log.level, config.stores.annotatedMaxSide);
  // Awaited below in either order; a failure while the order is decided is not an unhandled rejection.
  starting.catch(() => undefined);
  const order = await startOrder(config, workers).catch((error: unknown) => ({
    poolFirst: false,
    // The pool meets the same problem (a model file missing) and fails the start with it.
    reason: `could not tell whether the tuner measures: ${toFacematchError(error).message}`,
  }));
  log.info({ order: order.poolFirst ? 'inference pool, then stores' : 'inference pool and stores together', reason: order.reason }, 'start order chosen');
  let pool: AnalyzerPool;
  let s: Stores;
  if (order.poolFirst) {
    pool = await starting;
    try {
      s = await openStores(config, log);
    } catch (error) {
      await pool.close();
      throw error;
    }
  } else {
    const [analyzer, stores] = await Promise.allSettled([starting, openStores(config, log)]);
    if (analyzer.status === 'rejected' || stores.status === 'rejected') {
      if (analyzer.status === 'fulfilled') await analyzer.value.close();
      if (stores.status === 'fulfilled') await stores.value.close();
      throw analyzer.status === 'rejected' ? analyzer.reason : (stores as PromiseRejectedResult).reason;
    }
    pool = analyzer.value;
    s = stores.value;
  }
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
