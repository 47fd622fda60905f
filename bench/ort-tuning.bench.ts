/**
 * onnxruntime session tuning benchmark (`npx tsx bench/ort-tuning.bench.ts`): what the tuner
 * (src/inference/session-tuner.ts) measures and chooses on this CPU for each shared model, the cost
 * of choosing on a first start (measuring) and on a restart (the cache), and the choice re-timed
 * against the static settings (level all) with more runs, in turns. Prints tables and writes
 * bench/out/ort-tuning.json.
 *
 * Environment: BENCH_TUNING_RUNS (timed runs per candidate while tuning, default 5, the service's),
 * BENCH_VERIFY_RUNS (runs of the re-timing, default 20), BENCH_THREADS (comma-separated intra-op
 * thread budgets, default "1,<cores>": a pool of one worker per core, and one worker with every core).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/config.js';
import { describeChoice, type ModelRole, type ModelTuning } from '../src/inference/session-choice.js';
import { timeChoices, tuneSessions, type TuneModel } from '../src/inference/session-tuner.js';
import { createLogger } from '../src/telemetry/logger.js';
import { SHARED, cpuDescription, f1, machineInfo, positiveEnv, table, writeReport } from './support.js';

const MODELS = path.join(SHARED, 'models');
const model = (file: string, size: number): TuneModel => ({ file: path.join(MODELS, file), inputSize: [size, size] });
const EMBEDDER = model('mbf512_faceplugin.onnx', 112);
/** Each detector with the test embedder (measured with the first, from the cache with the others). */
const DETECTORS = [model('det_500m.onnx', 640), model('det_2.5g.onnx', 640)];

const runs = positiveEnv('BENCH_TUNING_RUNS', 5);
const verifyRuns = positiveEnv('BENCH_VERIFY_RUNS', 20);
const budgets = (process.env.BENCH_THREADS ?? `1,${os.availableParallelism()}`).split(',').map((t) => Number.parseInt(t, 10));
const log = createLogger('warn');

interface Row {
  threads: number;
  role: ModelRole;
  file: string;
  tuning: ModelTuning;
  /** Choosing again with the cache just written. */
  cachedMs: number;
  verify: { staticMs: number; chosenMs: number };
}

console.log(`onnxruntime session tuning on ${cpuDescription()}, ${runs} timed runs per candidate, re-timed with ${verifyRuns}\n`);
const rows: Row[] = [];
const dir = await mkdtemp(path.join(os.tmpdir(), 'facematch-tuning-bench-'));
try {
  for (const threads of budgets) {
    const inference = parseConfig({ FACEMATCH_INTRA_OP_THREADS: String(threads), FACEMATCH_TUNING_CACHE: path.join(dir, `t${threads}.json`) }).inference;
    for (const detector of DETECTORS) {
      const models = { detector, embedder: EMBEDDER };
      const measured = await tuneSessions(inference, models, log, { runs });
      const cached = await tuneSessions(inference, models, log, { runs });
      for (const role of ['detector', 'embedder'] as const) {
        if (measured[role].source !== 'measured') continue;
        const staticChoice = { level: 'all', threads, spinning: true } as const;
        const { ms } = await timeChoices(inference, role, models[role], [staticChoice, measured[role].choice], verifyRuns, log);
        rows.push({
          threads,
          role,
          file: path.basename(models[role].file),
          tuning: measured[role],
          cachedMs: cached[role].tuneMs,
          verify: { staticMs: ms[0]!, chosenMs: ms[1]! },
        });
      }
    }
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

for (const r of rows) {
  console.log(`${r.file} (${r.role}), ${r.threads} thread budget, shapes ${r.tuning.shapes.map((s) => s.join('x')).join(' + ')}`);
  console.log(
    table(
      ['candidate', 'ms (median)', ''],
      r.tuning.candidates.map((c, i) => [`${i < 3 ? 'step 1' : 'step 2'}: ${describeChoice(c.choice)}`, f1(c.ms), i === r.tuning.candidates.findLastIndex((x) => describeChoice(x.choice) === describeChoice(r.tuning.choice)) ? '<- chosen' : '']),
    ),
  );
  console.log('');
}
console.log(
  table(
    ['model', 'threads', 'choice', 'first start: tuning ms', 'restart: tuning ms', `static all ms (${verifyRuns} runs)`, 'chosen ms', 'chosen / static'],
    rows.map((r) => [
      r.file,
      String(r.threads),
      describeChoice(r.tuning.choice),
      f1(r.tuning.tuneMs),
      f1(r.cachedMs),
      f1(r.verify.staticMs),
      f1(r.verify.chosenMs),
      // When the choice is the static one, the two columns time the same settings: the noise.
      `${((r.verify.chosenMs / r.verify.staticMs) * 100).toFixed(0)}%${describeChoice(r.tuning.choice) === describeChoice({ level: 'all', threads: r.threads, spinning: true }) ? ' (same settings: noise)' : ''}`,
    ]),
  ),
);
const out = await writeReport('ort-tuning.json', { machine: machineInfo(), runs, verifyRuns, rows });
console.log(`\nwritten ${out}`);
