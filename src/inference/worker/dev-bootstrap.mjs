// Runs a TypeScript worker from source (tests, `tsx` scripts): registers tsx in this worker thread
// first, then imports the worker named by workerData.entry (see ./entry.ts): a name beside this
// file, or a module's file URL. The built package starts the workers' .js files directly.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const { entry } = workerData;
await import(entry.startsWith('file:') ? entry : `./${entry}.ts`);
