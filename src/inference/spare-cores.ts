/**
 * A detector run on every core when the other inference workers have nothing to do (issue 14).
 *
 * Each of N workers has sessions of C/N intra-op threads, so that N photos in flight never
 * oversubscribe the cores. With one photo in flight, that photo's detector run took one core while
 * the others idled (its faces are shared already: ./shared-embedding.ts). So each worker also holds
 * a *wide* detector session with a thread per core, without spinning (idle threads sleep: a photo
 * that arrives during a wide run gets its cores back at once), and a run takes it when the pool's
 * count of spare workers (idle ones while no photo waits, kept by the pool in a SharedArrayBuffer)
 * is above 0 as the run starts.
 */
import { availableParallelism } from 'node:os';

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
