/** The ArcFace-layout embedder: 5-point alignment to the 112x112 template, batched runs, L2 norm. */
import * as ort from 'onnxruntime-node';
import type { Landmarks, Point } from '../domain/face.js';
import { ModelMismatchError } from '../domain/errors.js';
import { estimateSimilarity, invertAffine, sampleToTensor, type Affine, type RgbImage } from './geometry.js';
import type { EmbedderSpec } from './model-pack.js';
import { collectShare, createSharedFaces, takeShare, type EmbedRun, type SharedFaces } from './shared-embedding.js';
import { inputsOf, isFixed, outputsOf, type LoadedSession } from './onnx-session.js';
import type { WideSession } from './spare-cores.js';

/** InsightFace's ArcFace destination landmarks for a 112x112 crop. */
export const ARCFACE_TEMPLATE_112: readonly Point[] = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

/** The transform from aligned-crop pixels to image pixels for a face with these landmarks. */
export function alignmentToImage(landmarks: Landmarks, size: readonly [number, number]): Affine {
  const [w, h] = size;
  const dst = ARCFACE_TEMPLATE_112.map(([x, y]): Point => [(x * w) / 112, (y * h) / 112]);
  return invertAffine(estimateSimilarity(landmarks, dst));
}

/**
 * Most faces per run of a dynamic-batch model. Larger batches showed no clear gain per face on 2
 * CPU cores (npm run bench:embed), while onnxruntime's memory grows with the batch and stays held:
 * the test embedder's peak RSS rose by 60 MB at 8 faces a run, 115 MB at 16, 225 MB at 32 and
 * 600 MB with a 114-face crowd in one run. So a crowd goes through in runs of this many.
 */
export const MAX_BATCH = 16;
/**
 * On a GPU, larger runs keep the device busy (one host-to-device copy and one launch sequence per
 * run); 64 faces of 112x112 hold a few hundred MB of activations with an R50, well inside any
 * datacenter GPU. A projection: no GPU is measured here (docs/gpu-plan.md).
 */
export const MAX_BATCH_CUDA = 64;
/**
 * Photos with at least this many faces are offered to the pool's idle workers (./shared-embedding.ts).
 * The offer costs a message through the main thread and back (~1 ms); a face costs 13-33 ms at one
 * thread (EPYC, Xeon). It was 4; at 2, with one photo in flight, a 2-3-face photo's analysis took
 * 104 -> 90, 108 -> 105, 138 -> 112 and 226 -> 210 ms (Xeon, 2 workers of 1 thread, medians of 12).
 */
export const MIN_SHARED_FACES = 2;

export class ArcFaceEmbedder {
  readonly provider: 'cpu' | 'cuda';
  readonly dimension: number;
  /** Whether several faces go through one run (the model has a dynamic batch axis). */
  readonly batched: boolean;
  private readonly inputName: string;
  private readonly outputName: string;
  runMs = 0;
  runs = 0;
  /**
   * A second session with a thread per core, for runs of a photo's own faces that are not shared
   * (one face, or no pool) while other workers idle (./spare-cores.ts).
   */
  wide?: WideSession;

  constructor(
    private readonly loaded: LoadedSession,
    private readonly spec: EmbedderSpec,
    file: string,
  ) {
    this.provider = loaded.provider;
    const fail = (why: string): never => {
      throw new ModelMismatchError(`embedder ${file}: ${why}`);
    };
    const inputs = inputsOf(loaded.session);
    const outputs = outputsOf(loaded.session);
    const input = inputs[0];
    const output = outputs[0];
    if (inputs.length !== 1 || !input) fail(`expected 1 input, found ${inputs.length}`);
    if (outputs.length < 1 || !output) fail('the model has no output');
    const [w, h] = spec.inputSize;
    const s = input!.shape;
    if (s.length !== 4 || (isFixed(s[1]) && s[1] !== 3) || (isFixed(s[2]) && s[2] !== h) || (isFixed(s[3]) && s[3] !== w)) {
      fail(`input "${input!.name}" is [${s.join(',')}], the manifest says [N,3,${h},${w}]`);
    }
    const o = output!.shape;
    const dim = o[o.length - 1];
    if (o.length !== 2 || (isFixed(dim) && dim !== spec.embeddingSize)) {
      fail(`output "${output!.name}" is [${o.join(',')}], the manifest says [N,${spec.embeddingSize}]`);
    }
    this.inputName = input!.name;
    this.outputName = output!.name;
    this.dimension = spec.embeddingSize;
    this.batched = !isFixed(s[0]);
  }

  /**
   * Where a photo's faces can be offered to other workers (./shared-embedding.ts): set by an
   * inference worker of a pool of several, on the CPU. Called with the aligned faces of a photo of at
   * least MIN_SHARED_FACES faces, before this thread starts on them.
   */
  offer?: (task: SharedFaces) => void;

  /** Aligns and embeds every face; returns L2-normalised embeddings in the same order. */
  async embed(
    image: RgbImage,
    faces: readonly Landmarks[],
  ): Promise<{ embeddings: Float32Array[]; alignMs: number; shared: number; wideRuns: number }> {
    const [w, h] = this.spec.inputSize;
    const per = 3 * w * h;
    const layout = { width: w, height: h, mean: this.spec.mean, std: this.spec.std, bgr: this.spec.colorOrder === 'BGR' };
    const cap = this.provider === 'cuda' ? MAX_BATCH_CUDA : MAX_BATCH;
    // Offered to the pool's idle workers, the aligned faces go to shared memory, a face per claim
    // (batched model or not: a helper answers a waiting photo after its current run, and on the CPU,
    // one thread per worker, several faces a run gained nothing: 17.4 ms a face alone, 18.5 in runs
    // of 4, 22.6 of 16, the test embedder on the 2-core EPYC of 2026-12-02).
    const task =
      this.offer && this.provider === 'cpu' && faces.length >= MIN_SHARED_FACES ? createSharedFaces(faces.length, per, this.dimension, 1) : undefined;
    const t0 = performance.now();
    const batch = task ? new Float32Array(task.input) : new Float32Array(per * faces.length);
    faces.forEach((l, i) => sampleToTensor(image, alignmentToImage(l, this.spec.inputSize), layout, batch, i * per));
    const alignMs = performance.now() - t0;
    if (task) {
      this.offer!(task);
      const run: EmbedRun = (t, n) => this.run(t, n);
      const mine = await takeShare(task, run, false);
      return { embeddings: await collectShare(task, run), alignMs, shared: faces.length - mine, wideRuns: 0 };
    }
    const embeddings: Float32Array[] = [];
    const size = this.batched ? Math.min(cap, Math.max(1, faces.length)) : 1;
    let wideRuns = 0;
    for (let start = 0; start < faces.length; start += size) {
      const n = Math.min(size, faces.length - start);
      const wide = this.wide?.when() === true;
      if (wide) wideRuns++;
      embeddings.push(...(await this.run(batch.subarray(start * per, (start + n) * per), n, wide)));
    }
    return { embeddings, alignMs, shared: 0, wideRuns };
  }

  /** One run of each session on a blank face (the first run of a session allocates); counts nothing. */
  async warmUp(): Promise<void> {
    const [w, h] = this.spec.inputSize;
    const counters = [this.runs, this.runMs] as const;
    const blank = (): Float32Array => new Float32Array(3 * w * h);
    await this.run(blank(), 1);
    if (this.wide) await this.run(blank(), 1, true);
    [this.runs, this.runMs] = counters;
  }

  /** Embeds faces offered by another worker of the pool, as long as some are left; returns how many it did. */
  help(task: SharedFaces, onError: (e: unknown) => void): Promise<number> {
    return takeShare(task, (t, n) => this.run(t, n), true, onError);
  }

  /** One run over `n` aligned faces (on the wide session if `wide`); L2-normalised embeddings. */
  private async run(tensors: Float32Array, n: number, wide = false): Promise<Float32Array[]> {
    const [w, h] = this.spec.inputSize;
    const tensor = new ort.Tensor('float32', tensors, [n, 3, h, w]);
    const session = wide && this.wide ? this.wide.loaded.session : this.loaded.session;
    const t1 = performance.now();
    const result = await session.run({ [this.inputName]: tensor });
    this.runMs += performance.now() - t1;
    this.runs++;
    try {
      const data = result[this.outputName]!.data as Float32Array;
      const dim = data.length / n;
      if (dim !== this.dimension) {
        throw new ModelMismatchError(`embedder returned ${dim} values per face, the manifest says ${this.dimension}`);
      }
      return Array.from({ length: n }, (_, i) => l2normalise(data.slice(i * dim, (i + 1) * dim)));
    } finally {
      tensor.dispose();
      for (const t of Object.values(result)) t.dispose();
    }
  }
}

export function l2normalise(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const n = Math.sqrt(s) || 1;
  for (let i = 0; i < v.length; i++) v[i] = v[i]! / n;
  return v;
}
