/**
 * Runs on every core when the other inference workers have nothing to do (issue 14).
 *
 * Each of N workers has sessions of C/N intra-op threads, so that N photos in flight never
 * oversubscribe the cores. With one photo in flight, that photo's detector runs took one core while
 * the others idled, and so did the embedder run of a photo with one face (several faces are shared
 * between the workers: ./shared-embedding.ts). So each worker also holds *wide* sessions of both
 * models with a thread per core, without spinning (idle threads sleep: a photo that arrives during a
 * wide run gets its cores back at once), and a run takes one when the pool's count of spare workers
 * (idle ones while no photo waits, kept by the pool in a SharedArrayBuffer) is above 0 as the run
 * starts. With the test pack's models the outputs were bit for bit those of one thread, at every
 * graph optimisation level (test/pipeline/spare-cores.test.ts checks it on every CI run).
 */
import { availableParallelism } from 'node:os';
import type { LoadedSession } from './onnx-session.js';

/** A model's wide session, and when a run takes it (checked as each run starts). */
export interface WideSession {
  loaded: LoadedSession;
  when: () => boolean;
}

/** Reads the pool's spare-worker count (an Int32 in `shared`): true while another worker is idle. */
export function spareCores(shared: SharedArrayBuffer): () => boolean {
  const count = new Int32Array(shared);
  return () => Atomics.load(count, 0) > 0;
}

/** Threads of the wide session, or 0 when it would have no more than the worker's own sessions. */
export function wideThreads(workerThreads: number): number {
  const cores = availableParallelism();
  return workerThreads > 0 && cores > workerThreads ? cores : 0;
}
