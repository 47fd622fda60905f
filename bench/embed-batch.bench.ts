/**
 * npm run bench:embed — is one embedder run over several faces faster than one run per face?
 *
 * Faces: the largest EMBED_FACES faces (default 32) of the crowd photo, detected and aligned once
 * with the `test` pack, so every configuration embeds the same tensors.
 *
 * Table 1, ms per face: the test embedder as shipped (fixed [1,3,112,112] input, one run per face)
 * against its dynamic-batch variant (models/test-batched.json, derived at first use) in batches of
 * 1, 2, 4, 8, 16 and 32, at graph optimisation levels 'extended' and 'all' and 1 or 2 intra-op
 * threads. Every configuration embeds the faces once per round, in an order shuffled each round (a
 * burst of load elsewhere then hits different configurations), and the table shows the median over
 * EMBED_ROUNDS rounds (default 9) with the spread (max/min).
 *
 * Table 2, across requests: two photos of EMBED_PAIR_FACES faces each (default 6, the size of a
 * typical group shot), embedded (a) in two worker threads with a session each, 1 intra-op thread,
 * one batched run per photo at the same time, as the AnalyzerPool with 2 workers on 2 cores does;
 * (b) in one session with 2 intra-op threads, the two photos one after the other (one worker);
 * (c) in one session with 2 intra-op threads, both photos in one run (a batching window across
 * requests). Wall time for both photos, median over EMBED_PAIR_ROUNDS rounds (default 15).
 *
 * The JSON report goes to bench/out/embed-batch.json.
 */
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { parseConfig } from '../src/config/config.js';
import { alignmentToImage } from '../src/inference/arcface.embedder.js';
import { FaceAnalyzer } from '../src/inference/face-analyzer.js';
import { sampleToTensor } from '../src/inference/geometry.js';
import { checkModelFile, readModelPack } from '../src/inference/model-pack.js';
import { createLogger } from '../src/telemetry/logger.js';
import { readFile } from 'node:fs/promises';
import { seededRandom } from '../test/support/seeded-random.js';
import { GROUPS_DIR, SHARED, cpuSnapshot, cpuShares, f1, machineInfo, median, positiveEnv, table, writeReport } from './support.js';

const MODELS_DIR = path.join(SHARED, 'models');
const CROWD = 'insightface-rest_lumia.jpg';
const FACES = positiveEnv('EMBED_FACES', 32);
const ROUNDS = positiveEnv('EMBED_ROUNDS', 9);
const PAIR_FACES = positiveEnv('EMBED_PAIR_FACES', 6);
const PAIR_ROUNDS = positiveEnv('EMBED_PAIR_ROUNDS', 15);
const BATCHES = [1, 2, 4, 8, 16, 32];
const LEVELS = ['extended', 'all'] as const;
const THREADS = [1, 2];
const PER = 3 * 112 * 112;

type Level = (typeof LEVELS)[number];

/** The aligned, normalised faces of the crowd photo, largest first, back to back. */
async function alignedFaces(): Promise<{ tensors: Float32Array; count: number }> {
  const config = parseConfig({ FACEMATCH_MODEL_PACK: 'test', FACEMATCH_MODELS_DIR: MODELS_DIR });
  const analyzer = await FaceAnalyzer.load(config.inference, config.decode, createLogger('warn'));
  const decoded = await analyzer.decode(await readFile(path.join(GROUPS_DIR, CROWD)), CROWD);
  const faces = await analyzer.detectDecoded(decoded);
  const spec = analyzer.pack.embedder;
  const layout = { width: 112, height: 112, mean: spec.mean, std: spec.std, bgr: spec.colorOrder === 'BGR' };
  const count = Math.min(faces.length, Math.max(FACES, 2 * PAIR_FACES));
  const tensors = new Float32Array(count * PER);
  faces.slice(0, count).forEach((f, i) => sampleToTensor(decoded.image, alignmentToImage(f.landmarks, [112, 112]), layout, tensors, i * PER));
  return { tensors, count };
}

function session(file: string, level: Level, threads: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(file, {
    graphOptimizationLevel: level,
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionProviders: ['cpu'],
    logSeverityLevel: 3,
  });
}

/** Embeds faces [0, count) in runs of `batch`; returns the wall time in ms. */
async function embedAll(s: ort.InferenceSession, tensors: Float32Array, count: number, batch: number): Promise<number> {
  const name = s.inputNames[0]!;
  const t0 = performance.now();
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const out = await s.run({ [name]: new ort.Tensor('float32', tensors.subarray(start * PER, (start + n) * PER), [n, 3, 112, 112]) });
    for (const t of Object.values(out)) t.dispose();
  }
  return performance.now() - t0;
}

interface Case {
  label: string;
  level: Level;
  threads: number;
  model: 'fixed' | 'batched';
  batch: number;
  session: ort.InferenceSession;
  msPerFace: number[];
}

/** A worker thread holding one session (plain JS, so it runs without tsx): embeds what it is sent. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ort);
(async () => {
  const s = await ort.InferenceSession.create(workerData.file, {
    graphOptimizationLevel: workerData.level, intraOpNumThreads: 1, interOpNumThreads: 1,
    executionProviders: ['cpu'], logSeverityLevel: 3,
  });
  parentPort.on('message', async (tensors) => {
    const n = tensors.length / ${PER};
    const t0 = performance.now();
    const out = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', tensors, [n, 3, 112, 112]) });
    parentPort.postMessage(performance.now() - t0);
    for (const t of Object.values(out)) t.dispose();
  });
  parentPort.postMessage('ready');
})();
`;

function startWorker(file: string, level: Level): Promise<Worker> {
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { file, level, ort: import.meta.resolve('onnxruntime-node').replace('file://', '') },
  });
  return new Promise((resolve, reject) => {
    worker.once('message', () => resolve(worker));
    worker.once('error', reject);
  });
}

function workerRun(worker: Worker, tensors: Float32Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      worker.off('error', fail);
      resolve();
    };
    const fail = (error: Error): void => {
      worker.off('message', done);
      reject(error);
    };
    worker.once('message', done).once('error', fail);
    worker.postMessage(tensors.slice());
  });
}

async function main(): Promise<void> {
  const pack = await readModelPack('test-batched');
  const fixedFile = await checkModelFile(MODELS_DIR, { file: pack.embedder.derivedFrom!.file, sha256: pack.embedder.derivedFrom!.sha256 }, true);
  const batchedFile = await checkModelFile(MODELS_DIR, pack.embedder, true);
  const { tensors, count } = await alignedFaces();
  const faces = Math.min(FACES, count);
  console.log(`embed-batch: ${faces} faces of ${CROWD}, ${ROUNDS} rounds; ${os.cpus().length} CPUs; batched model ${batchedFile}`);

  const cases: Case[] = [];
  for (const level of LEVELS) {
    for (const threads of THREADS) {
      const fixed = await session(fixedFile, level, threads);
      const batched = await session(batchedFile, level, threads);
      cases.push({ label: 'fixed, 1 run per face', level, threads, model: 'fixed', batch: 1, session: fixed, msPerFace: [] });
      for (const batch of BATCHES) {
        cases.push({ label: `batched, batch ${batch}`, level, threads, model: 'batched', batch, session: batched, msPerFace: [] });
      }
    }
  }
  for (const c of cases) await embedAll(c.session, tensors, Math.min(faces, 2 * c.batch), c.batch); // warm-up

  const cpu0 = await cpuSnapshot();
  const random = seededRandom(14);
  for (let round = 0; round < ROUNDS; round++) {
    const order = cases.map((c) => ({ c, key: random() })).sort((p, q) => p.key - q.key);
    for (const { c } of order) c.msPerFace.push((await embedAll(c.session, tensors, faces, c.batch)) / faces);
    process.stderr.write(`round ${round + 1}/${ROUNDS}\n`);
  }
  const shares = cpuShares(cpu0, await cpuSnapshot());

  const rows = [];
  for (const level of LEVELS) {
    for (const threads of THREADS) {
      const mine = cases.filter((c) => c.level === level && c.threads === threads);
      const base = median(mine[0]!.msPerFace);
      for (const c of mine) {
        const m = median(c.msPerFace);
        const spread = Math.max(...c.msPerFace) / Math.min(...c.msPerFace);
        rows.push([level, String(threads), c.label, f1(m), `${(base / m).toFixed(2)}x`, spread.toFixed(2)]);
      }
    }
  }
  console.log(`\nms per face (median of ${ROUNDS} rounds; speed-up against the fixed model, same level and threads)\n`);
  console.log(table(['level', 'threads', 'model', 'ms/face', 'speed-up', 'max/min'], rows));

  // --- across requests ---------------------------------------------------------------------------
  const photoA = tensors.slice(0, PAIR_FACES * PER);
  const photoB = tensors.slice(PAIR_FACES * PER, 2 * PAIR_FACES * PER);
  const both = tensors.slice(0, 2 * PAIR_FACES * PER);
  const pair: Record<string, { level: Level; ms: number[] }[]> = {};
  for (const level of LEVELS) {
    const workers = await Promise.all([startWorker(batchedFile, level), startWorker(batchedFile, level)]);
    const one = await session(batchedFile, level, 2);
    const scenarios: [string, () => Promise<unknown>][] = [
      ['2 workers x 1 thread, a photo each, at once', () => Promise.all([workerRun(workers[0], photoA), workerRun(workers[1], photoB)])],
      ['1 session x 2 threads, photo after photo', async () => {
        await embedAll(one, photoA, PAIR_FACES, PAIR_FACES);
        await embedAll(one, photoB, PAIR_FACES, PAIR_FACES);
      }],
      ['1 session x 2 threads, both photos in 1 run', () => embedAll(one, both, 2 * PAIR_FACES, 2 * PAIR_FACES)],
    ];
    for (const [, run] of scenarios) await run(); // warm-up
    const ms = scenarios.map(() => [] as number[]);
    for (let round = 0; round < PAIR_ROUNDS; round++) {
      for (let i = 0; i < scenarios.length; i++) {
        const k = (i + round) % scenarios.length;
        const t0 = performance.now();
        await scenarios[k]![1]();
        ms[k]!.push(performance.now() - t0);
      }
    }
    scenarios.forEach(([label], i) => ((pair[label] ??= []).push({ level, ms: ms[i]! })));
    await Promise.all(workers.map((w) => w.terminate()));
    await one.release();
  }
  const pairRows = Object.entries(pair).flatMap(([label, byLevel]) =>
    byLevel.map(({ level, ms }) => [label, level, f1(median(ms)), f1(median(ms) / (2 * PAIR_FACES))]),
  );
  console.log(`\nTwo photos of ${PAIR_FACES} faces each, batched model: wall time for both (median of ${PAIR_ROUNDS} rounds)\n`);
  console.log(table(['how', 'level', 'ms both', 'ms/face'], pairRows));
  const busy = shares ? `CPU during table 1: ${(shares.own * 100).toFixed(0)}% this process, ${(shares.other * 100).toFixed(0)}% others` : '';
  if (busy) console.log(`\n${busy}`);

  const file = await writeReport('embed-batch.json', {
    machine: machineInfo(),
    faces,
    rounds: ROUNDS,
    cpu: shares,
    perFace: cases.map((c) => ({ level: c.level, threads: c.threads, model: c.model, batch: c.batch, msPerFace: c.msPerFace })),
    pair: { faces: PAIR_FACES, rounds: PAIR_ROUNDS, results: pair },
  });
  console.log(`report: ${file}`);
  for (const s of new Set(cases.map((c) => c.session))) await s.release();
}

await main();
