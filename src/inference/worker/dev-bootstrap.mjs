// Runs a TypeScript worker from source (tests, `tsx` scripts): registers tsx in this worker thread
// first, then imports the worker named by workerData.entry (see ./entry.ts). The built package
// starts dist/inference/worker/*.worker.js directly.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(`./${workerData.entry}.ts`);
