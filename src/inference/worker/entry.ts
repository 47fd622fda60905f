/**
 * Where a worker thread's code is. Built, the worker's own .js; from source (tests, `tsx` scripts),
 * a small bootstrap that registers tsx in the new thread and then imports the worker named by
 * `workerData.entry`: a name beside the bootstrap, or a module's file URL.
 */
export type WorkerName = 'analyzer.worker' | 'draw.worker';

const FROM_SOURCE = import.meta.url.endsWith('.ts');

export function workerUrl(name: WorkerName): URL {
  return new URL(FROM_SOURCE ? './dev-bootstrap.mjs' : `./${name}.js`, import.meta.url);
}

/**
 * A worker module elsewhere in the tree: `name` (without extension) beside the module whose
 * `import.meta.url` is `beside`. Returns the URL to start and the `entry` to pass in `workerData`.
 */
export function workerModule(name: string, beside: string): { url: URL; entry: string } {
  const own = new URL(`./${name}.${FROM_SOURCE ? 'ts' : 'js'}`, beside);
  return { url: FROM_SOURCE ? new URL('./dev-bootstrap.mjs', import.meta.url) : own, entry: own.href };
}
