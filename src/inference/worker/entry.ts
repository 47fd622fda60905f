/**
 * Where a worker thread's code is. Built, the worker's own .js beside this file; from source (tests,
 * `tsx` scripts), a small bootstrap that registers tsx in the new thread and then imports the
 * worker named by `workerData.entry`.
 */
export type WorkerName = 'analyzer.worker' | 'draw.worker';

const FROM_SOURCE = import.meta.url.endsWith('.ts');

export function workerUrl(name: WorkerName): URL {
  return new URL(FROM_SOURCE ? './dev-bootstrap.mjs' : `./${name}.js`, import.meta.url);
}
