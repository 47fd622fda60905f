/** The SCRFD detector session: input preparation, one run per view, output grouping by stride. */
import * as ort from 'onnxruntime-node';
import { ModelMismatchError } from '../domain/errors.js';
import { sampleToTensor, type RgbImage } from './geometry.js';
import type { DetectorSpec } from './model-pack.js';
import { inputsOf, isFixed, outputsOf, type LoadedSession } from './onnx-session.js';
import type { WideSession } from './spare-cores.js';
import {
  candidateToImage,
  decodeScrfd,
  makeView,
  type Candidate,
  type QuarterTurns,
  type Region,
  type ScrfdLevel,
} from './scrfd.js';

/** The detector runs of one photo, and of them those on the wide session. */
export interface DetectorTally {
  runs: number;
  wide: number;
}

export class ScrfdDetector {
  readonly provider: 'cpu' | 'cuda';
  private readonly inputName: string;
  private readonly dynamicInput: boolean;
  private readonly outputNames: { scores: string[]; boxes: string[]; kps: string[] };
  /** Time spent in onnxruntime's run() since construction (for overhead accounting). */
  runMs = 0;
  runs = 0;
  /** A second session with a thread per core, for runs while other workers idle (./spare-cores.ts). */
  wide?: WideSession;

  constructor(
    private readonly loaded: LoadedSession,
    private readonly spec: DetectorSpec,
    file: string,
  ) {
    this.provider = loaded.provider;
    const inputs = inputsOf(loaded.session);
    const input = inputs[0];
    const fail = (why: string): never => {
      throw new ModelMismatchError(`detector ${file}: ${why}`);
    };
    if (inputs.length !== 1 || !input) fail(`expected 1 input, found ${inputs.length}`);
    const shape = input!.shape;
    if (shape.length !== 4 || (isFixed(shape[1]) && shape[1] !== 3)) {
      fail(`input "${input!.name}" must be [N,3,H,W], found [${shape.join(',')}]`);
    }
    const [w, h] = spec.inputSize;
    if (isFixed(shape[2]) && isFixed(shape[3]) && (shape[2] !== h || shape[3] !== w)) {
      fail(`input "${input!.name}" is ${shape[3]}x${shape[2]}, the manifest says ${w}x${h}`);
    }
    this.inputName = input!.name;
    this.dynamicInput = !isFixed(shape[2]) && !isFixed(shape[3]);
    const outputs = outputsOf(loaded.session);
    const levels = spec.strides.length;
    if (outputs.length !== levels * 3) {
      fail(`expected ${levels * 3} outputs (scores, boxes, 5 landmarks for ${levels} strides), found ${outputs.length}; is this an SCRFD model with keypoints?`);
    }
    const byLast = (n: number): string[] => outputs.filter((o) => o.shape[o.shape.length - 1] === n).map((o) => o.name);
    this.outputNames = { scores: byLast(1), boxes: byLast(4), kps: byLast(10) };
    for (const [kind, names] of Object.entries(this.outputNames)) {
      if (names.length !== levels) fail(`expected ${levels} ${kind} outputs, found ${names.length}`);
    }
  }

  /** The wide session's first run (it allocates), on a blank input of the pack's size; counts nothing. */
  async warmUpWide(): Promise<void> {
    if (!this.wide) return;
    const [w, h] = this.spec.inputSize;
    const input = new ort.Tensor('float32', new Float32Array(3 * w * h), [1, 3, h, w]);
    const result = await this.wide.loaded.session.run({ [this.inputName]: input });
    input.dispose();
    for (const t of Object.values(result)) t.dispose();
  }

  /** Detects faces in one view of the image; results in image coordinates, not yet NMS-ed. */
  async detect(image: RgbImage, region: Region, turns: QuarterTurns, scoreThreshold: number, tally?: DetectorTally): Promise<Candidate[]> {
    const view = makeView(region, turns, this.spec.inputSize, this.dynamicInput);
    const { inputWidth: w, inputHeight: h } = view;
    const data = new Float32Array(3 * w * h);
    sampleToTensor(
      image,
      view.toSample,
      { width: w, height: h, mean: this.spec.mean, std: this.spec.std, bgr: this.spec.colorOrder === 'BGR' },
      data,
    );
    const input = new ort.Tensor('float32', data, [1, 3, h, w]);
    const wide = this.wide?.when() === true;
    const session = wide ? this.wide!.loaded.session : this.loaded.session;
    const t0 = performance.now();
    const result = await session.run({ [this.inputName]: input });
    this.runMs += performance.now() - t0;
    this.runs++;
    if (tally) {
      tally.runs++;
      if (wide) tally.wide++;
    }
    const take = (names: string[]): Float32Array[] =>
      names
        .map((n) => result[n]!.data as Float32Array)
        // Largest level first = smallest stride first.
        .sort((p, q) => q.length - p.length);
    const scores = take(this.outputNames.scores);
    const boxes = take(this.outputNames.boxes);
    const kps = take(this.outputNames.kps);
    const strides = [...this.spec.strides].sort((p, q) => p - q);
    const levels: ScrfdLevel[] = strides.map((stride, i) => ({
      stride,
      scores: scores[i]!,
      boxes: boxes[i]!,
      kps: kps[i]!,
    }));
    const found = decodeScrfd(levels, w, h, this.spec.anchorsPerCell, scoreThreshold);
    input.dispose();
    for (const t of Object.values(result)) t.dispose();
    return found.map((c) => candidateToImage(c, view));
  }
}
