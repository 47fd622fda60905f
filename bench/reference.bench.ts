/**
 * Reference benchmark (`npm run bench:reference`): facematch's FaceAnalyzer.analyze() against the
 * InsightFace Python pipeline it replaces (insightface's FaceAnalysis: SCRFD, norm_crop, ArcFaceONNX)
 * on the same CPU, the same model files (the `test` pack) and the same settings (detector input
 * 640, score 0.5, NMS 0.4, the pack's embedder normalisation, the same intra-op thread count).
 *
 * Python is benchmark tooling only: bench/reference/setup.sh makes a cached virtualenv outside the
 * repo (pinned insightface, onnxruntime 1.30.0 = onnxruntime-node's core, OpenCV, numpy), and
 * bench/reference/insightface_ref.py runs as one long-lived process that reads photos on stdin, so
 * Python's start-up is never timed. Each side times itself, inside its own process, from the photo's
 * bytes in memory to the embeddings (decode + detect + align + embed); one photo at a time, the two
 * sides interleaved per photo (A B A B ...), so machine-load drift hits both alike.
 *
 * Photos: every group photo in ../shared/testdata/groups, plus a 24-megapixel JPEG made in memory
 * from insightface_t1 (as bench/pipeline.bench.ts does). The warm-up run of each side also checks
 * that the two find the same faces: counts, boxes matched by IoU, and the cosine similarity of the
 * matched faces' embeddings (near 1 when alignment and normalisation agree).
 *
 * Prints a table and writes bench/out/reference.json.
 *
 * Two ways to run facematch's side (BENCH_FACEMATCH):
 * - `analyzer` (default): one FaceAnalyzer in this thread, BENCH_THREADS intra-op threads, the same
 *   sessions as the Python side: the pipelines compared alone.
 * - `pool`: the service's inference pool as it starts by default, one worker per core with one
 *   intra-op thread each, a photo's faces embedded by every idle worker (src/inference/
 *   shared-embedding.ts); the Python side keeps BENCH_THREADS threads (onnxruntime's default: every
 *   core), as the InsightFace pipeline runs by default. Photos still go one at a time.
 *
 * Before each timed call the bench pauses BENCH_GAP_MS (default 100): idle onnxruntime threads spin
 * for a while after a run, and one side's spinning threads must not share the cores with the other
 * side's next run.
 *
 * Environment: BENCH_ITERATIONS (default 5 per side, after one warm-up each), BENCH_THREADS (intra-op
 * threads, default all cores), BENCH_PYTHON_SPINNING (0 or 1; by default the Python side's sessions
 * take the intra-op threads and spinning of facematch's sessions in force, which its session tuner,
 * where there is one, may have chosen: idle threads that spin cost a loaded machine dearly, so a
 * difference there would be measured instead of the pipelines), PYTHON (for the setup), and the
 * usual FACEMATCH_* variables; the model pack defaults to `test` and the models directory to
 * ../shared/models.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import sharp from 'sharp';
import { parseConfig } from '../src/config/config.js';
import { cosine, type Face, type FaceAnalysis } from '../src/domain/face.js';
import { AnalyzerPool } from '../src/inference/analyzer-pool.js';
import { FaceAnalyzer } from '../src/inference/face-analyzer.js';
import { readModelPack, type ModelPack } from '../src/inference/model-pack.js';
import { createLogger } from '../src/telemetry/logger.js';
import {
  GROUPS_DIR,
  REPO,
  SHARED,
  busy,
  cpuDescription,
  cpuShares,
  cpuSnapshot,
  f1,
  groupPhotos,
  machineInfo,
  median,
  pct,
  positiveEnv,
  round,
  roundShare,
  sum,
  table,
  writeReport,
} from './support.js';

const BIG_SOURCE = 'insightface_t1.jpg';
const BIG_SIZE = [6000, 4000] as const;
/** Boxes overlapping at least this much are the same face found by both sides. */
const SAME_FACE_IOU = 0.5;

const iterations = positiveEnv('BENCH_ITERATIONS', 5);
const threads = positiveEnv('BENCH_THREADS', os.availableParallelism());
const spinningEnv = process.env.BENCH_PYTHON_SPINNING;
const mode = process.env.BENCH_FACEMATCH ?? 'analyzer';
const gapMs = Number(process.env.BENCH_GAP_MS ?? 100);
if (!Number.isFinite(gapMs) || gapMs < 0) throw new Error('BENCH_GAP_MS must be a number of ms >= 0');
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
if (mode !== 'analyzer' && mode !== 'pool') throw new Error('BENCH_FACEMATCH must be analyzer or pool');
if (spinningEnv !== undefined && spinningEnv !== '0' && spinningEnv !== '1') throw new Error('BENCH_PYTHON_SPINNING must be 0 or 1');

const config = parseConfig({
  ...process.env,
  FACEMATCH_MODEL_PACK: process.env.FACEMATCH_MODEL_PACK ?? 'test',
  FACEMATCH_MODELS_DIR: process.env.FACEMATCH_MODELS_DIR ?? path.join(SHARED, 'models'),
  FACEMATCH_INTRA_OP_THREADS: String(threads),
});
const log = createLogger('warn');

// ---------------------------------------------------------------------------------------------
// The Python reference process

interface RefFace {
  box: [number, number, number, number];
  score: number;
}

interface RefResult {
  name: string;
  width: number;
  height: number;
  faces: RefFace[];
  ms: { decode: number; total: number };
  embeddings?: number[][];
}

interface RefReady {
  insightface: string;
  onnxruntime: string;
  opencv: string;
  numpy: string;
  python: string;
  sessions: Record<Role, { threads: number; spinning: boolean }>;
  cv2_threads: number;
  det_size: number[];
  det_thresh: number;
  nms: number;
  det_mean_std: number[];
  rec_mean_std: number[];
  rec_guessed_mean_std: number[];
  providers: string[];
}

/** Runs bench/reference/setup.sh (cached after the first time); returns the venv's python and the seconds it took. */
async function setupReference(): Promise<{ python: string; seconds: number }> {
  const t0 = performance.now();
  const python = await new Promise<string>((resolve, reject) => {
    const child = execFile(path.join(REPO, 'bench', 'reference', 'setup.sh'), { encoding: 'utf8' }, (error, stdout) => {
      if (error) reject(new Error(`bench/reference/setup.sh failed: ${error.message}`));
      else resolve(stdout.trim().split('\n').at(-1) ?? '');
    });
    child.stderr?.pipe(process.stderr);
  });
  return { python, seconds: (performance.now() - t0) / 1000 };
}

class Reference {
  private readonly lines: AsyncIterator<string>;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly ready: RefReady,
    lines: AsyncIterator<string>,
  ) {
    this.lines = lines;
  }

  static async start(python: string, work: string, pack: ModelPack, sessions: Record<Role, SessionSetting>): Promise<Reference> {
    const { detector, embedder } = pack;
    const dir = config.inference.modelsDir;
    const child = spawn(
      python,
      [
        path.join(REPO, 'bench', 'reference', 'insightface_ref.py'),
        '--det', path.join(dir, detector.file),
        '--rec', path.join(dir, embedder.file),
        '--work', work,
        '--det-threads', String(sessions.detector.threads),
        '--det-spinning', sessions.detector.spinning ? '1' : '0',
        '--rec-threads', String(sessions.embedder.threads),
        '--rec-spinning', sessions.embedder.spinning ? '1' : '0',
        '--det-size', String(detector.inputSize[0]),
        '--det-thresh', String(config.inference.detScore),
        '--nms', String(config.inference.nmsIou),
        '--rec-mean', String(embedder.mean),
        '--rec-std', String(embedder.std),
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    child.stderr.pipe(process.stderr);
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done) throw new Error('the Python reference exited before it was ready (its error is above)');
    const ready = (JSON.parse(first.value) as { ready: RefReady }).ready;
    return new Reference(child, ready, lines);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  async analyze(name: string, bytes: Uint8Array, embeddings = false): Promise<RefResult> {
    this.child.stdin.write(`${JSON.stringify({ name, size: bytes.length, embeddings })}\n`);
    this.child.stdin.write(bytes);
    const next = await this.lines.next();
    if (next.done) throw new Error(`the Python reference exited during ${name}`);
    const res = JSON.parse(next.value) as RefResult | { name: string; error: string };
    if ('error' in res) throw new Error(`Python reference, ${name}: ${res.error}`);
    return res;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    await exited;
  }
}

type Role = 'detector' | 'embedder';

interface SessionSetting {
  level: string;
  /** 0: onnxruntime's default. */
  threads: number;
  spinning: boolean;
  /** How facematch chose it (its session tuner's source), or `static`. */
  source: string;
}

/**
 * facematch's session settings in force, per model: what its session tuner chose where the analyzer
 * has one (it may pick another optimisation level, one thread, or no spinning on this CPU), else
 * the static settings (graph optimisation `all`, the configured threads, spinning).
 */
function facematchSessions(analyzer: object): Record<Role, SessionSetting> {
  const tuning = (analyzer as unknown as { tuning?: Record<string, { choice?: Omit<SessionSetting, 'source'>; source?: string } | undefined> })
    .tuning;
  const one = (role: Role): SessionSetting => {
    const t = tuning?.[role];
    return t?.choice ? { ...t.choice, source: t.source ?? '?' } : { level: 'all', threads, spinning: true, source: 'static' };
  };
  return { detector: one('detector'), embedder: one('embedder') };
}

/**
 * The Python side's: facematch's threads (BENCH_THREADS against the pool), and its spinning unless
 * BENCH_PYTHON_SPINNING says otherwise.
 */
function pythonSessions(fm: Record<Role, SessionSetting>): Record<Role, SessionSetting> {
  const one = (s: SessionSetting): SessionSetting => ({
    level: 'all',
    threads: mode === 'pool' ? threads : s.threads,
    spinning: spinningEnv === undefined ? s.spinning : spinningEnv === '1',
    source: spinningEnv === undefined ? 'as facematch' : 'BENCH_PYTHON_SPINNING',
  });
  return { detector: one(fm.detector), embedder: one(fm.embedder) };
}

const describeSession = (s: SessionSetting): string =>
  `${s.level}, ${s.threads === 0 ? 'default' : s.threads} threads, ${s.spinning ? 'spinning' : 'no spinning'} (${s.source})`;

/** CPU time (ms) of process `pid` from /proc (user + system, ticks of 10 ms); null elsewhere. */
async function processCpuMs(pid: number | undefined): Promise<number | null> {
  if (pid === undefined) return null;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Inputs and the face comparison

interface Input {
  name: string;
  bytes: Uint8Array;
  group: boolean;
}

async function loadInputs(): Promise<Input[]> {
  const inputs: Input[] = [];
  for (const f of await groupPhotos()) inputs.push({ name: f, bytes: await readFile(path.join(GROUPS_DIR, f)), group: true });
  // Kept in memory only: a camera-original-sized JPEG, never written into the repository.
  const big = await sharp(await readFile(path.join(GROUPS_DIR, BIG_SOURCE)))
    .resize(BIG_SIZE[0], BIG_SIZE[1], { fit: 'fill' })
    .jpeg({ quality: 90 })
    .toBuffer();
  inputs.push({ name: `${path.parse(BIG_SOURCE).name}@${BIG_SIZE[0]}x${BIG_SIZE[1]}.jpg`, bytes: big, group: false });
  return inputs;
}

function boxIou(a: Face['box'], b: RefFace['box']): number {
  const [x1, y1, x2, y2] = b;
  const ix = Math.max(0, Math.min(a.x + a.width, x2) - Math.max(a.x, x1));
  const iy = Math.max(0, Math.min(a.y + a.height, y2) - Math.max(a.y, y1));
  const inter = ix * iy;
  const union = a.width * a.height + (x2 - x1) * (y2 - y1) - inter;
  return union > 0 ? inter / union : 0;
}

/** Faces found by both (greedy by IoU) and the cosine similarities of their embeddings. */
function compareFaces(ours: readonly Face[], ref: RefResult): { matched: number; cosines: number[] } {
  const pairs: { i: number; j: number; iou: number }[] = [];
  ours.forEach((f, i) =>
    ref.faces.forEach((r, j) => {
      const iou = boxIou(f.box, r.box);
      if (iou >= SAME_FACE_IOU) pairs.push({ i, j, iou });
    }),
  );
  pairs.sort((p, q) => q.iou - p.iou);
  const usedI = new Set<number>();
  const usedJ = new Set<number>();
  const cosines: number[] = [];
  for (const { i, j } of pairs) {
    if (usedI.has(i) || usedJ.has(j)) continue;
    usedI.add(i);
    usedJ.add(j);
    const e = ref.embeddings?.[j];
    if (e) cosines.push(cosine(ours[i]!.embedding, Float32Array.from(e)));
  }
  return { matched: usedI.size, cosines };
}

// ---------------------------------------------------------------------------------------------

interface PhotoResult {
  photo: string;
  group: boolean;
  megapixels: number;
  faces: { facematch: number; python: number; both: number };
  /** Cosine similarity of the two sides' embeddings of the faces both found: min and median. */
  embedding_cosine: { min: number; median: number };
  median_ms: { facematch: number; python: number; facematch_decode: number; python_decode: number };
  /** python / facematch, medians; above 1: facematch is faster. */
  ratio: number;
  runs_ms: { facematch: number[]; python: number[] };
}

/** facematch's side: a FaceAnalyzer or the service's AnalyzerPool. */
interface Side {
  analyze(bytes: Uint8Array, what?: string): Promise<FaceAnalysis>;
}

async function benchPhoto(analyzer: Side, ref: Reference, input: Input): Promise<PhotoResult> {
  // Warm-up of each side, which also gives the faces to compare.
  const ours = await analyzer.analyze(input.bytes, input.name);
  const theirs = await ref.analyze(input.name, input.bytes, true);
  const { matched, cosines } = compareFaces(ours.faces, theirs);

  const fm: number[] = [];
  const fmDecode: number[] = [];
  const py: number[] = [];
  const pyDecode: number[] = [];
  for (let i = 0; i < iterations; i++) {
    await pause(gapMs);
    const t0 = performance.now();
    const r = await analyzer.analyze(input.bytes, input.name);
    fm.push(performance.now() - t0);
    const d = r.stages.find((s) => s.stage === 'decode');
    fmDecode.push(d ? d.end - d.start : Number.NaN);
    await pause(gapMs);
    const p = await ref.analyze(input.name, input.bytes);
    py.push(p.ms.total);
    pyDecode.push(p.ms.decode);
  }
  const mFm = median(fm);
  const mPy = median(py);
  return {
    photo: input.name,
    group: input.group,
    megapixels: (ours.width * ours.height) / 1e6,
    faces: { facematch: ours.faces.length, python: theirs.faces.length, both: matched },
    embedding_cosine: { min: cosines.length ? Math.min(...cosines) : Number.NaN, median: median(cosines) },
    median_ms: { facematch: mFm, python: mPy, facematch_decode: median(fmDecode), python_decode: median(pyDecode) },
    ratio: mPy / mFm,
    runs_ms: { facematch: fm.map((x) => round(x, 2)), python: py.map((x) => round(x, 2)) },
  };
}

async function main(): Promise<void> {
  const started = performance.now();
  const setup = await setupReference();
  const pack = await readModelPack(config.inference.modelPack);
  const analyzer: Side & { tuning?: unknown; close?: () => Promise<void> } =
    mode === 'pool'
      ? await AnalyzerPool.start({ ...config.inference, intraOpThreads: 0 }, config.decode, os.availableParallelism(), log)
      : await FaceAnalyzer.load(config.inference, config.decode, log);
  // The venv's python is <pyref>/venv/bin/python: FaceAnalysis's model folder goes in <pyref>.
  const fmSessions = facematchSessions(analyzer);
  const pySessions = pythonSessions(fmSessions);
  const ref = await Reference.start(setup.python, path.resolve(setup.python, '..', '..', '..'), pack, pySessions);

  const results: PhotoResult[] = [];
  let otherShare: number | null = null;
  try {
    const inputs = await loadInputs();
    const cpuStart = await cpuSnapshot();
    const pyStart = await processCpuMs(ref.pid);
    for (const input of inputs) results.push(await benchPhoto(analyzer, ref, input));
    const cpuEnd = await cpuSnapshot();
    const pyEnd = await processCpuMs(ref.pid);
    // The Python process's CPU time is not other processes' load: take it out of that share.
    const shares = cpuShares(cpuStart, cpuEnd);
    if (shares && cpuStart && cpuEnd && pyStart !== null && pyEnd !== null) {
      const capacity = (cpuEnd.wallMs - cpuStart.wallMs) * os.cpus().length;
      otherShare = Math.max(0, shares.other - (pyEnd - pyStart) / capacity);
    }
  } finally {
    await ref.stop();
    await analyzer.close?.();
  }

  // --- Table
  const cos = (x: number): string => (Number.isNaN(x) ? '-' : x.toFixed(3));
  const rows = results.map((r) => [
    r.photo,
    r.megapixels.toFixed(2),
    String(r.faces.facematch),
    String(r.faces.python),
    String(r.faces.both),
    `${cos(r.embedding_cosine.min)} / ${cos(r.embedding_cosine.median)}`,
    f1(r.median_ms.facematch),
    f1(r.median_ms.python),
    r.ratio.toFixed(2),
  ]);
  const groups = results.filter((r) => r.group);
  const totalFm = sum(groups.map((r) => r.median_ms.facematch));
  const totalPy = sum(groups.map((r) => r.median_ms.python));
  const medianRatio = median(groups.map((r) => r.ratio));
  rows.push([
    `group photos (${groups.length}), total`,
    '',
    String(sum(groups.map((r) => r.faces.facematch))),
    String(sum(groups.map((r) => r.faces.python))),
    String(sum(groups.map((r) => r.faces.both))),
    '',
    f1(totalFm),
    f1(totalPy),
    (totalPy / totalFm).toFixed(2),
  ]);

  const rd = ref.ready;
  const cpus = os.cpus();
  console.log(
    `facematch vs the InsightFace Python pipeline: ${cpuDescription(cpus)}, pack ${pack.name} ` +
      `(${pack.detector.file} + ${pack.embedder.file}), ${iterations} interleaved runs per side after 1 warm-up, ` +
      `facematch as ${mode === 'pool' ? `the service's inference pool (${os.availableParallelism()} workers)` : 'one FaceAnalyzer'}, ` +
      `BENCH_THREADS ${threads}\n` +
      `  facematch: Node ${process.version}, onnxruntime-node ${machineInfo(cpus).onnxruntime}, detector input ${pack.detector.inputSize.join('x')} ` +
      `(longest side; the other side follows the photo's aspect), score ${config.inference.detScore}, NMS ${config.inference.nmsIou}, decode max side ${config.decode.maxSide}; ` +
      `sessions: detector ${describeSession(fmSessions.detector)}; embedder ${describeSession(fmSessions.embedder)}\n` +
      `  python:    insightface ${rd.insightface}, onnxruntime ${rd.onnxruntime}, OpenCV ${rd.opencv} (${rd.cv2_threads} threads), numpy ${rd.numpy}, Python ${rd.python}; ` +
      `sessions: detector ${describeSession(pySessions.detector)}; embedder ${describeSession(pySessions.embedder)}; det_size ${rd.det_size.join('x')}, det_thresh ${rd.det_thresh}, NMS ${rd.nms}, embedder mean/std ${rd.rec_mean_std.join('/')} ` +
      `(insightface's own guess ${rd.rec_guessed_mean_std.join('/')}), full-resolution cv2.imdecode\n` +
      `  reference setup ${setup.seconds.toFixed(1)} s; other processes used ${pct(otherShare, 'an unknown share')} of the CPUs\n`,
  );
  if (busy(otherShare)) console.log('warning: the machine was busy with other work during this run; the timings are noisy\n');
  console.log(
    table(
      ['photo', 'MP', 'faces fm', 'faces py', 'both', 'cos min / median', 'ms facematch', 'ms python', 'python/facematch'],
      rows,
    ),
  );
  console.log(
    `\ngroup photos: total ratio ${(totalPy / totalFm).toFixed(2)} (sum of medians), median ratio ${medianRatio.toFixed(2)} ` +
      `(min ${Math.min(...groups.map((r) => r.ratio)).toFixed(2)}, max ${Math.max(...groups.map((r) => r.ratio)).toFixed(2)}); ` +
      `a ratio above 1: facematch is faster. 'both': faces found by both sides (IoU >= ${SAME_FACE_IOU}); 'cos': the cosine ` +
      `similarity between the two sides' embeddings of those faces (1: the same vector).`,
  );

  // --- JSON
  const report = {
    date: new Date().toISOString(),
    pack: pack.name,
    facematch_side: mode,
    iterations,
    bench_threads: threads,
    sessions: { facematch: fmSessions, python: pySessions },
    decode_max_side: config.decode.maxSide,
    machine: { ...machineInfo(cpus), other_processes_cpu_share: roundShare(otherShare) },
    python: rd,
    setup_s: round(setup.seconds, 1),
    summary_groups: {
      photos: groups.length,
      facematch_total_ms: round(totalFm),
      python_total_ms: round(totalPy),
      total_ratio: round(totalPy / totalFm, 3),
      median_ratio: round(medianRatio, 3),
    },
    photos: results.map((r) => ({
      ...r,
      megapixels: round(r.megapixels, 2),
      embedding_cosine: { min: round(r.embedding_cosine.min, 4), median: round(r.embedding_cosine.median, 4) },
      median_ms: Object.fromEntries(Object.entries(r.median_ms).map(([k, v]) => [k, round(v, 2)])),
      ratio: round(r.ratio, 3),
    })),
    wall_s: round((performance.now() - started) / 1000),
  };
  const written = await writeReport(mode === 'pool' ? 'reference-pool.json' : 'reference.json', report);
  console.log(`\nwrote ${written} in ${report.wall_s} s`);
}

await main();
