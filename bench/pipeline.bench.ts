/**
 * Pipeline benchmark (`npm run bench`): times FaceAnalyzer.analyze() stage by stage on every group
 * photo in ../shared/testdata/groups plus a 24-megapixel JPEG made here from a group photo, compares
 * it with bare onnxruntime run() calls on the very tensors the pipeline fed, and measures
 * shrink-on-load for the 24 MP photo. Prints a table and writes bench/out/pipeline.json.
 *
 * Environment: BENCH_ITERATIONS (default 5, after one warm-up) and the usual FACEMATCH_* variables;
 * the model pack defaults to `test` and the models directory to ../shared/models.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { parseConfig } from '../src/config/config.js';
import { stageMs } from '../src/domain/face.js';
import { FaceAnalyzer } from '../src/inference/face-analyzer.js';
import { sampleToTensor, type RgbImage } from '../src/inference/geometry.js';
import { decodeImage, jpegScales } from '../src/inference/image-decoder.js';
import { decodeScrfd, makeView, nms, type ScrfdLevel } from '../src/inference/scrfd.js';
import { createLogger } from '../src/telemetry/logger.js';
import {
  GROUPS_DIR,
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
  recordRuns,
  replay,
  round,
  roundShare,
  roundValues,
  sum,
  table,
  writeReport,
} from './support.js';

const BIG_SOURCE = 'insightface_t1.jpg';
const BIG_SIZE = [6000, 4000] as const;
const MICRO_REPS = 20;

const iterations = positiveEnv('BENCH_ITERATIONS', 5);

const config = parseConfig({
  ...process.env,
  FACEMATCH_MODEL_PACK: process.env.FACEMATCH_MODEL_PACK ?? 'test',
  FACEMATCH_MODELS_DIR: process.env.FACEMATCH_MODELS_DIR ?? path.join(SHARED, 'models'),
});
const log = createLogger('warn');

// ---------------------------------------------------------------------------------------------
// Small helpers

async function timeAsync(fn: () => Promise<unknown>, reps: number): Promise<number> {
  await fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

function timeSync(fn: () => unknown, reps: number): number {
  fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

// ---------------------------------------------------------------------------------------------
// Inputs

interface Input {
  name: string;
  bytes: Uint8Array;
  group: boolean;
}

async function loadInputs(): Promise<Input[]> {
  const files = await groupPhotos();
  const inputs: Input[] = [];
  for (const f of files) inputs.push({ name: f, bytes: await readFile(path.join(GROUPS_DIR, f)), group: true });
  // Kept in memory only: a camera-original-sized JPEG, never written into the repository.
  const big = await sharp(await readFile(path.join(GROUPS_DIR, BIG_SOURCE)))
    .resize(BIG_SIZE[0], BIG_SIZE[1], { fit: 'fill' })
    .jpeg({ quality: 90 })
    .toBuffer();
  inputs.push({ name: `${path.parse(BIG_SOURCE).name}@${BIG_SIZE[0]}x${BIG_SIZE[1]}.jpg`, bytes: big, group: false });
  return inputs;
}

// ---------------------------------------------------------------------------------------------
// Per-photo measurement

interface PhotoResult {
  photo: string;
  group: boolean;
  bytes: number;
  width: number;
  height: number;
  megapixels: number;
  decoded: [number, number];
  faces: number;
  runs: { detector: number; embedder: number; detectorInputs: string[] };
  median_ms: { decode: number; detect: number; align: number; embed: number; total: number; totalWithoutDecode: number };
  faces_per_s: number;
  /** onnxruntime run() time inside analyze() (the runMs counters), median per photo. */
  pipeline_run_ms: { detector: number; embedder: number; total: number };
  /** The same calls replayed bare, median per photo. */
  bare_run_ms: { detector: number; embedder: number; total: number };
  overhead_ratio: number;
  /** Where the time outside run() goes, medians per photo (ms). */
  outside_run_ms: { detectorJs: number; align: number; embedderJs: number; rest: number };
}

/**
 * The bare baseline is the pipeline's own run() calls, recorded during the warm-up analyze() only
 * and replayed (recordRuns and replay in ./support.ts, which says why); the timed iterations run
 * unwrapped.
 */
async function benchPhoto(analyzer: FaceAnalyzer, input: Input): Promise<PhotoResult> {
  const { detector, embedder } = analyzer;
  // Warm-up, recorded.
  const { value: first, runs: recorded } = await recordRuns(() => analyzer.analyze(input.bytes, input.name));
  const detSession = recorded[0]?.session;
  if (!detSession) throw new Error(`${input.name}: the pipeline made no run() call`);
  const detRuns = recorded.filter((r) => r.session === detSession);
  const decoded = await analyzer.decode(input.bytes, input.name);

  // Pipeline iterations and bare replays alternate, so that any drift in machine load (other
  // processes, thermal state) hits both sides of the ratio alike.
  await replay(recorded, detSession);
  const t = { decode: [] as number[], detect: [] as number[], align: [] as number[], embed: [] as number[], total: [] as number[] };
  const inRun = { det: [] as number[], emb: [] as number[] };
  const bare = { det: [] as number[], emb: [] as number[], total: [] as number[] };
  for (let i = 0; i < iterations; i++) {
    const d0 = detector.runMs;
    const e0 = embedder.runMs;
    const dn = detector.runs;
    const en = embedder.runs;
    const t0 = performance.now();
    const r = await analyzer.analyze(input.bytes, input.name);
    t.total.push(performance.now() - t0);
    t.decode.push(stageMs(r.stages, 'decode'));
    t.detect.push(stageMs(r.stages, 'detect'));
    t.align.push(stageMs(r.stages, 'align'));
    t.embed.push(stageMs(r.stages, 'embed'));
    inRun.det.push(detector.runMs - d0);
    inRun.emb.push(embedder.runMs - e0);
    if (detector.runs - dn + embedder.runs - en !== recorded.length || r.faces.length !== first.faces.length) {
      throw new Error(`${input.name}: the pipeline is not deterministic across iterations`);
    }
    const b = await replay(recorded, detSession);
    bare.det.push(b.det);
    bare.emb.push(b.emb);
    bare.total.push(b.total);
  }

  const med = {
    decode: median(t.decode),
    detect: median(t.detect),
    align: median(t.align),
    embed: median(t.embed),
    total: median(t.total),
    totalWithoutDecode: median(t.total.map((x, i) => x - t.decode[i]!)),
  };
  const bareTotal = median(bare.total);
  const detIn = median(inRun.det);
  const embIn = median(inRun.emb);
  return {
    photo: input.name,
    group: input.group,
    bytes: input.bytes.length,
    width: first.width,
    height: first.height,
    megapixels: (first.width * first.height) / 1e6,
    decoded: [decoded.image.width, decoded.image.height],
    faces: first.faces.length,
    runs: {
      detector: detRuns.length,
      embedder: recorded.length - detRuns.length,
      detectorInputs: detRuns.map((r) => `${r.dims[3]}x${r.dims[2]}`),
    },
    median_ms: med,
    faces_per_s: first.faces.length / (med.total / 1000),
    pipeline_run_ms: { detector: detIn, embedder: embIn, total: median(inRun.det.map((x, i) => x + inRun.emb[i]!)) },
    bare_run_ms: { detector: median(bare.det), embedder: median(bare.emb), total: bareTotal },
    overhead_ratio: med.totalWithoutDecode / bareTotal,
    outside_run_ms: {
      detectorJs: median(t.detect.map((x, i) => x - inRun.det[i]!)),
      align: med.align,
      embedderJs: median(t.embed.map((x, i) => x - inRun.emb[i]!)),
      rest: median(t.total.map((x, i) => x - t.decode[i]! - t.detect[i]! - t.align[i]! - t.embed[i]!)),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Micro-measurements of the JavaScript the pipeline runs around run()

interface Micro {
  /** sampleToTensor for a full-image 640x640 letterbox of insightface_t1 (fixed-size input). */
  sampleToTensor_640x640_ms: number;
  /** The same for the view the dynamic-input detector really gets for that photo. */
  sampleToTensor_main_view_ms: number;
  main_view: string;
  /** One 112x112 aligned crop. */
  sampleToTensor_112x112_ms: number;
  /** decodeScrfd + NMS on the detector's real outputs for that view. */
  decode_nms_ms: number;
  /** Allocating the zero-filled Float32Array for a 640x640 input. */
  alloc_640x640_ms: number;
  /** One setImmediate hop (onnxruntime-node defers every run() by one). */
  set_immediate_ms: number;
}

async function micro(analyzer: FaceAnalyzer, bytes: Uint8Array): Promise<Micro> {
  const { pack } = analyzer;
  const spec = pack.detector;
  const decoded = await analyzer.decode(bytes);
  const image: RgbImage = decoded.image;
  const region = { x: 0, y: 0, width: image.width, height: image.height };
  const layout = (w: number, h: number, s: { mean: number; std: number; colorOrder: 'RGB' | 'BGR' }) => ({
    width: w,
    height: h,
    mean: s.mean,
    std: s.std,
    bgr: s.colorOrder === 'BGR',
  });

  const fixed = makeView(region, 0, spec.inputSize, false);
  const fixedOut = new Float32Array(3 * fixed.inputWidth * fixed.inputHeight);
  const sample640 = timeSync(
    () => sampleToTensor(image, fixed.toSample, layout(fixed.inputWidth, fixed.inputHeight, spec), fixedOut),
    MICRO_REPS,
  );

  // The pipeline's first detector feed tells whether the detector input is dynamic.
  const { runs } = await recordRuns(() => analyzer.detectDecoded(decoded));
  const first = runs[0]!;
  const dynamic = first.dims[2] !== spec.inputSize[1] || first.dims[3] !== spec.inputSize[0];
  const view = makeView(region, 0, spec.inputSize, dynamic);
  const viewOut = new Float32Array(3 * view.inputWidth * view.inputHeight);
  const sampleView = timeSync(
    () => sampleToTensor(image, view.toSample, layout(view.inputWidth, view.inputHeight, spec), viewOut),
    MICRO_REPS,
  );

  const emb = pack.embedder;
  const crop = new Float32Array(3 * emb.inputSize[0] * emb.inputSize[1]);
  const inside = { a: 1, b: 0, c: image.width / 3, d: 0, e: 1, f: image.height / 3 };
  const sample112 = timeSync(
    () => sampleToTensor(image, inside, layout(emb.inputSize[0], emb.inputSize[1], emb), crop),
    MICRO_REPS * 10,
  );

  // decodeScrfd + NMS on real outputs of the first detector feed.
  const out = await first.session.run(first.feeds);
  const byLast = (n: number): Float32Array[] =>
    Object.values(out)
      .filter((t) => t.dims[t.dims.length - 1] === n)
      .map((t) => t.data as Float32Array)
      .sort((p, q) => q.length - p.length);
  const strides = [...spec.strides].sort((p, q) => p - q);
  const [scores, boxes, kps] = [byLast(1), byLast(4), byLast(10)];
  const levels: ScrfdLevel[] = strides.map((stride, i) => ({ stride, scores: scores[i]!, boxes: boxes[i]!, kps: kps[i]! }));
  const w = first.dims[3]!;
  const h = first.dims[2]!;
  const decodeNms = timeSync(
    () => nms(decodeScrfd(levels, w, h, spec.anchorsPerCell, config.inference.detScore), config.inference.nmsIou),
    MICRO_REPS,
  );
  for (const t of Object.values(out)) t.dispose();

  const alloc = timeSync(() => new Float32Array(3 * 640 * 640), MICRO_REPS);
  const hop = await timeAsync(() => new Promise<void>((resolve) => setImmediate(resolve)), MICRO_REPS * 10);

  return {
    sampleToTensor_640x640_ms: sample640,
    sampleToTensor_main_view_ms: sampleView,
    main_view: `${view.inputWidth}x${view.inputHeight}`,
    sampleToTensor_112x112_ms: sample112,
    decode_nms_ms: decodeNms,
    alloc_640x640_ms: alloc,
    set_immediate_ms: hop,
  };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  // Other processes on the machine skew every number here; their CPU share is reported with them.
  const cpuStart = await cpuSnapshot();
  const analyzer = await FaceAnalyzer.load(config.inference, config.decode, log);
  const inputs = await loadInputs();
  const big = inputs.find((i) => !i.group)!;

  const results: PhotoResult[] = [];
  for (const input of inputs) results.push(await benchPhoto(analyzer, input));

  // Shrink-on-load: the 24 MP JPEG decoded at full resolution, by sharp alone (a whole decode, then
  // the resize: what sharp does for shrinks in [2, 3)) and by decodeImage at the configured longest
  // side, with the libjpeg scale each used. Interleaved, wall and CPU time (libvips' threads count in
  // the process's CPU time, which other processes on the machine disturb less than wall time).
  const decodes = await (async () => {
    const ours = { maxPixels: config.decode.maxPixels, maxSide: config.decode.maxSide };
    const first = await decodeImage(big.bytes, ours);
    const [tw, th] = [first.image.width, first.image.height];
    const scales = jpegScales(Math.min(BIG_SIZE[0] / tw, BIG_SIZE[1] / th));
    const variants = [
      { name: 'full resolution (max side 0)', size: `${BIG_SIZE[0]}x${BIG_SIZE[1]}`, scale: '1/1', run: () => decodeImage(big.bytes, { ...ours, maxSide: 0 }) },
      {
        name: `sharp alone (whole decode + resize)`,
        size: `${tw}x${th}`,
        scale: `1/${scales.sharp}`,
        run: () => sharp(big.bytes).resize(tw, th, { fit: 'fill', kernel: 'linear' }).raw().toBuffer(),
      },
      { name: `ours (max side ${config.decode.maxSide})`, size: `${tw}x${th}`, scale: `1/${scales.possible}`, run: () => decodeImage(big.bytes, ours) },
    ];
    const wall = variants.map(() => [] as number[]);
    const cpu = variants.map(() => [] as number[]);
    for (const v of variants) await v.run();
    for (let i = 0; i < Math.max(iterations, 11); i++) {
      for (const j of i % 2 === 0 ? [0, 1, 2] : [2, 1, 0]) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await variants[j]!.run();
        wall[j]!.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpu[j]!.push((c.user + c.system) / 1000);
      }
    }
    return variants.map((v, j) => ({ name: v.name, size: v.size, scale: v.scale, ms: median(wall[j]!), cpuMs: median(cpu[j]!) }));
  })();
  const [full, alone, shrunk] = decodes as [(typeof decodes)[0], (typeof decodes)[0], (typeof decodes)[0]];

  const m = await micro(analyzer, inputs.find((i) => i.name === BIG_SOURCE)!.bytes);

  // --- Table
  const rows = results.map((r) => [
    r.photo,
    r.megapixels.toFixed(2),
    String(r.faces),
    f1(r.median_ms.decode),
    f1(r.median_ms.detect),
    f1(r.median_ms.align),
    f1(r.median_ms.embed),
    f1(r.median_ms.total),
    f1(r.faces_per_s),
    `${f1(r.bare_run_ms.total)} (${r.runs.detector}+${r.runs.embedder})`,
    r.overhead_ratio.toFixed(2),
  ]);
  const groups = results.filter((r) => r.group);
  const overheadRatio = median(groups.map((r) => r.overhead_ratio));
  const groupFaces = sum(groups.map((r) => r.faces));
  const groupTotal = sum(groups.map((r) => r.median_ms.total));

  const provider = analyzer.detector.provider;
  const cpus = os.cpus();
  const otherShare = cpuShares(cpuStart, await cpuSnapshot())?.other ?? null;
  console.log(
    `facematch pipeline bench: pack ${analyzer.pack.name}, provider ${provider}, ${cpuDescription(cpus)}, ` +
      `${iterations} iterations after 1 warm-up, decode max side ${config.decode.maxSide}, ` +
      `other processes used ${pct(otherShare, 'an unknown share')} of the CPUs\n`,
  );
  if (busy(otherShare)) {
    console.log('warning: the machine was busy with other work during this run; the timings are noisy\n');
  }
  console.log(
    table(
      ['photo', 'MP', 'faces', 'decode', 'detect', 'align', 'embed', 'total', 'faces/s', 'bare run ms (det+emb runs)', 'overhead'],
      rows,
    ),
  );
  console.log(
    `\ngroup photos (${groups.length}): ${groupFaces} faces in ${f1(groupTotal)} ms of medians = ${f1(groupFaces / (groupTotal / 1000))} faces/s; ` +
      `median total ${f1(median(groups.map((r) => r.median_ms.total)))} ms; overhead ratio median ${overheadRatio.toFixed(2)} ` +
      `(min ${Math.min(...groups.map((r) => r.overhead_ratio)).toFixed(2)}, max ${Math.max(...groups.map((r) => r.overhead_ratio)).toFixed(2)})`,
  );
  console.log(
    `\n24 MP decode (${BIG_SIZE[0]}x${BIG_SIZE[1]}, ${(big.bytes.length / 1e6).toFixed(1)} MB JPEG), medians of ${Math.max(iterations, 11)} interleaved runs:\n`,
  );
  console.log(table(['decode', 'decoded', 'libjpeg scale', 'wall ms', 'CPU ms'], decodes.map((d) => [d.name, d.size, d.scale, f1(d.ms), f1(d.cpuMs)])));

  console.log('\nwhere the time outside run() goes (medians, ms):\n');
  console.log(
    table(
      ['photo', 'det run in pipe', 'det run bare', 'det JS', 'align', 'emb run in pipe', 'emb run bare', 'emb JS', 'rest', 'det inputs'],
      results.map((r) => [
        r.photo,
        f1(r.pipeline_run_ms.detector),
        f1(r.bare_run_ms.detector),
        f1(r.outside_run_ms.detectorJs),
        f1(r.outside_run_ms.align),
        f1(r.pipeline_run_ms.embedder),
        f1(r.bare_run_ms.embedder),
        f1(r.outside_run_ms.embedderJs),
        f1(r.outside_run_ms.rest),
        r.runs.detectorInputs.join(' '),
      ]),
    ),
  );
  console.log(
    `\nmicro (${BIG_SOURCE}, medians): sampleToTensor 640x640 ${m.sampleToTensor_640x640_ms.toFixed(2)} ms, ` +
      `main view ${m.main_view} ${m.sampleToTensor_main_view_ms.toFixed(2)} ms, 112x112 crop ${m.sampleToTensor_112x112_ms.toFixed(3)} ms, ` +
      `decodeScrfd+NMS ${m.decode_nms_ms.toFixed(2)} ms, Float32Array(3x640x640) ${m.alloc_640x640_ms.toFixed(2)} ms, ` +
      `setImmediate hop ${m.set_immediate_ms.toFixed(3)} ms`,
  );

  // --- JSON
  const report = {
    date: new Date().toISOString(),
    pack: analyzer.pack.name,
    provider,
    iterations,
    decode_max_side: config.decode.maxSide,
    machine: { ...machineInfo(cpus), other_processes_cpu_share: roundShare(otherShare) },
    overhead_ratio: round(overheadRatio, 3),
    decode_24mp_ms: round(shrunk.ms),
    decode_24mp_size: shrunk.size,
    decode_24mp_full_ms: round(full.ms),
    decode_24mp_full_size: full.size,
    decode_24mp_libjpeg_scale: shrunk.scale,
    decode_24mp_cpu_ms: round(shrunk.cpuMs),
    decode_24mp_full_cpu_ms: round(full.cpuMs),
    decode_24mp_sharp_alone_ms: round(alone.ms),
    decode_24mp_sharp_alone_cpu_ms: round(alone.cpuMs),
    summary_groups: {
      photos: groups.length,
      faces: groupFaces,
      total_ms: round(groupTotal),
      faces_per_s: round(groupFaces / (groupTotal / 1000)),
      median_total_ms: round(median(groups.map((r) => r.median_ms.total))),
    },
    photos: results.map((r) => ({
      ...r,
      megapixels: round(r.megapixels, 2),
      median_ms: roundValues(r.median_ms),
      faces_per_s: round(r.faces_per_s),
      pipeline_run_ms: roundValues(r.pipeline_run_ms),
      bare_run_ms: roundValues(r.bare_run_ms),
      overhead_ratio: round(r.overhead_ratio, 3),
      outside_run_ms: roundValues(r.outside_run_ms),
    })),
    micro: m,
    wall_s: round((performance.now() - started) / 1000),
  };
  const written = await writeReport('pipeline.json', report);
  console.log(`\nwrote ${written} (overhead_ratio ${overheadRatio.toFixed(2)}) in ${report.wall_s} s`);
}

await main();
