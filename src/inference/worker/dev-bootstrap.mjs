// Runs the TypeScript worker from source (tests, `tsx` scripts): registers tsx in this worker
// thread first. The built package uses dist/inference/worker/analyzer.worker.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./analyzer.worker.ts');
