/**
 * The face pipeline: decode → detect (with close-up and sideways-face fallbacks) → align → embed.
 * One instance holds the two onnxruntime sessions and is shared by every request.
 */
import type { InferenceConfig, DecodeConfig } from '../config/config.js';
import type { DetectedFace, Face, FaceAnalysis, Landmarks, Point } from '../domain/face.js';
import { ATTR } from '../telemetry/attributes.js';
import type { Logger } from '../telemetry/logger.js';
import { ArcFaceEmbedder } from './arcface.embedder.js';
import { decodeImage, type DecodedImage } from './image-decoder.js';
import { checkModelFile, readModelPack, type ModelPack } from './model-pack.js';
import { createSession } from './onnx-session.js';
import { describeChoice, sessionOptionsFor, type SessionChoice, type Tuning } from './session-choice.js';
import { tuneSessions } from './session-tuner.js';
import { spareCores, wideThreads } from './spare-cores.js';
import { iou, nms, uprightTurns, type Candidate, type QuarterTurns, type Region } from './scrfd.js';
import { ScrfdDetector, type DetectorTally } from './scrfd.detector.js';

/** A face filling more than this share of the frame triggers the padded retry. */
const FILLS_FRAME = 0.5;
/** Padding around the image, as a share of its longer side, for the close-up retries. */
const CLOSE_UP_PADDING = [0.5, 1] as const;
/** Side of the crop around a sideways face that is re-detected upright, in face sizes. */
const SIDEWAYS_CROP = 2.5;
/**
 * Upright faces mostly score above this with SCRFD; when no face in a photo does, the photo may be
 * turned, and the other three orientations are tried (three more detector runs).
 */
const CONFIDENT = 0.8;
/**
 * Below CONFIDENT, a photo whose faces all have upright landmarks and whose best face scores at least
 * this is taken to be upright or upside down, and only the half turn is tried (one run, not three).
 * Landmarks tell a sideways face, not an upside-down one: SCRFD puts the eyes above the mouth of an
 * upside-down face too. Over testdata's 112 photos turned a quarter either way (224 views), faces
 * whose landmarks all looked upright all the same scored at most 0.725 with SCRFD-500MF (0.61 with
 * SCRFD-2.5GF), while 29 of the 34 upright photos with no confident face score 0.75 or more (32 of 43).
 */
const LIKELY_UPRIGHT = 0.75;

interface ViewCandidate extends Candidate {
  /** Quarter turns of the view it was found in. */
  turns: QuarterTurns;
}

export interface DetectOptions {
  scoreThreshold: number;
  nmsIou: number;
  /** Shorter box side in original pixels below which a face is dropped. */
  minFaceSize: number;
}

export class FaceAnalyzer {
  private constructor(
    readonly pack: ModelPack,
    readonly detector: ScrfdDetector,
    readonly embedder: ArcFaceEmbedder,
    private readonly detectOptions: DetectOptions,
    private readonly decodeConfig: DecodeConfig,
    /** The match threshold in force: configuration, else the pack's recommendation. */
    readonly threshold: number,
    /** The session settings of each model, and how they were chosen (./session-tuner.ts). */
    readonly tuning: Tuning,
  ) {}

  /**
   * `tuning`: session settings chosen before (by the first inference worker, for the others);
   * without it they are chosen now (measured on this CPU, or from the tuning cache).
   */
  static async load(
    inference: InferenceConfig,
    decode: DecodeConfig,
    log: Logger,
    tuning?: Tuning,
    /** The pool's spare-worker count (./spare-cores.ts): with it, wide sessions too. */
    spare?: SharedArrayBuffer,
  ): Promise<FaceAnalyzer> {
    const pack = await readModelPack(inference.modelPack);
    const [detFile, embFile] = await Promise.all([
      checkModelFile(inference.modelsDir, pack.detector, inference.verifyModels),
      checkModelFile(inference.modelsDir, pack.embedder, inference.verifyModels),
    ]);
    const tuned =
      tuning ??
      (await tuneSessions(inference, { detector: { file: detFile, inputSize: pack.detector.inputSize }, embedder: { file: embFile, inputSize: pack.embedder.inputSize } }, log));
    const [det, emb] = await Promise.all([
      createSession(detFile, sessionOptionsFor(inference, tuned.detector.choice), log),
      createSession(embFile, sessionOptionsFor(inference, tuned.embedder.choice), log),
    ]);
    const detector = new ScrfdDetector(det, pack.detector, detFile);
    const embedder = new ArcFaceEmbedder(emb, pack.embedder, embFile);
    // Wide sessions (./spare-cores.ts): the tuned level, a thread per core, no spinning.
    const wideOf = (role: 'detector' | 'embedder'): SessionChoice | undefined => {
      const threads = spare && det.provider === 'cpu' ? wideThreads(tuned[role].choice.threads) : 0;
      return threads > 0 ? { ...tuned[role].choice, threads, spinning: false } : undefined;
    };
    const [wideDet, wideEmb] = [wideOf('detector'), wideOf('embedder')];
    if (spare && (wideDet || wideEmb)) {
      const when = spareCores(spare);
      const [d, e] = await Promise.all([
        wideDet && createSession(detFile, sessionOptionsFor(inference, wideDet), log),
        wideEmb && createSession(embFile, sessionOptionsFor(inference, wideEmb), log),
      ]);
      if (d) detector.wide = { loaded: d, when };
      if (e) embedder.wide = { loaded: e, when };
    }
    const analyzer = new FaceAnalyzer(
      pack,
      detector,
      embedder,
      { scoreThreshold: inference.detScore, nmsIou: inference.nmsIou, minFaceSize: inference.minFaceSize },
      decode,
      inference.matchThreshold ?? pack.threshold,
      tuned,
    );
    log.info(
      {
        pack: pack.name,
        provider: det.provider,
        threshold: analyzer.threshold,
        batchedEmbedder: analyzer.embedder.batched,
        sessions: {
          detector: describeChoice(tuned.detector.choice),
          ...(wideDet ? { wideDetector: describeChoice(wideDet) } : {}),
          ...(wideEmb ? { wideEmbedder: describeChoice(wideEmb) } : {}),
          embedder: describeChoice(tuned.embedder.choice),
        },
      },
      'face models ready',
    );
    return analyzer;
  }

  decode(bytes: Uint8Array, what?: string): Promise<DecodedImage> {
    return decodeImage(bytes, this.decodeConfig, what);
  }

  /**
   * Decodes and analyses one photo: every face, largest first, with its embedding. With
   * `keepPicture` the decoded pixels come back too (to draw on without decoding again).
   */
  async analyze(bytes: Uint8Array, what?: string, options: { keepPicture?: boolean } = {}): Promise<FaceAnalysis> {
    const t0 = performance.now();
    const decoded = await this.decode(bytes, what);
    const t1 = performance.now();
    const result = await this.analyzeDecoded(decoded);
    const origin = performance.timeOrigin;
    result.stages.unshift({ stage: 'decode', start: origin + t0, end: origin + t1 });
    if (options.keepPicture) result.picture = decoded.image;
    return result;
  }

  async analyzeDecoded(decoded: DecodedImage): Promise<FaceAnalysis> {
    const origin = performance.timeOrigin;
    const t0 = performance.now();
    const tally: DetectorTally = { runs: 0, wide: 0 };
    const detected = await this.detectDecoded(decoded, tally);
    const t1 = performance.now();
    const detectorRuns = { [ATTR.detectorRuns]: tally.runs, [ATTR.wideDetectorRuns]: tally.wide };
    const { embeddings, alignMs, shared, wideRuns } = await this.embedder.embed(
      decoded.image,
      detected.map((d) => d.landmarks),
    );
    const t2 = performance.now();
    const embedAttributes = {
      ...(shared > 0 ? { [ATTR.sharedFaces]: shared } : {}),
      ...(wideRuns > 0 ? { [ATTR.wideEmbedderRuns]: wideRuns } : {}),
    };
    const faces: Face[] = detected.map((d, i) => toOriginal(d, decoded, embeddings[i]!));
    return {
      width: decoded.width,
      height: decoded.height,
      faces,
      stages: [
        { stage: 'detect', start: origin + t0, end: origin + t1, attributes: detectorRuns },
        { stage: 'align', start: origin + t1, end: origin + t1 + alignMs },
        {
          stage: 'embed',
          start: origin + t1 + alignMs,
          end: origin + t2,
          ...(Object.keys(embedAttributes).length > 0 ? { attributes: embedAttributes } : {}),
        },
      ],
    };
  }

  /** Faces in decoded-image coordinates, largest first. */
  async detectDecoded(decoded: DecodedImage, tally?: DetectorTally): Promise<DetectedFace[]> {
    const { image } = decoded;
    const { scoreThreshold, nmsIou } = this.detectOptions;
    const W = image.width;
    const H = image.height;
    const whole: Region = { x: 0, y: 0, width: W, height: H };
    const padded = (pad: number): Region => {
      const p = pad * Math.max(W, H);
      return { x: -p, y: -p, width: W + 2 * p, height: H + 2 * p };
    };
    const detect = async (region: Region, turns: QuarterTurns): Promise<ViewCandidate[]> =>
      (await this.detector.detect(image, region, turns, scoreThreshold, tally)).map((c) => ({ ...c, turns }));

    let faces = nms(await detect(whole, 0), nmsIou);

    // Close-ups: a face that fills the frame is often missed or cut; retry with padding around it.
    const fills = (f: Candidate): boolean => Math.max(f.box.width / W, f.box.height / H) > FILLS_FRAME;
    let closeUp = false;
    if (faces.length === 0 || faces.some(fills)) {
      closeUp = true;
      for (const pad of CLOSE_UP_PADDING) {
        const more = await detect(padded(pad), 0);
        if (more.length > 0) {
          faces = nms([...more, ...faces], nmsIou);
          break;
        }
      }
    }

    // A photo turned sideways or upside down (no EXIF tag): SCRFD finds no confident face, or none
    // at all. Try the other orientations and keep the view whose best face scores highest. A face
    // upside down in a view can still score well, so close-ups are tried both whole and padded.
    // Faces that look upright and score nearly CONFIDENT rule out the quarter turns (LIKELY_UPRIGHT).
    if (!faces.some((f) => f.score >= CONFIDENT)) {
      const best = (c: readonly Candidate[]): number => Math.max(0, ...c.map((f) => f.score));
      const regions = closeUp ? [whole, padded(CLOSE_UP_PADDING[0])] : [whole];
      const likelyUpright = best(faces) >= LIKELY_UPRIGHT && faces.every((f) => uprightTurns(f.landmarks) === 0);
      for (const turns of likelyUpright ? ([2] as const) : ([1, 3, 2] as const)) {
        for (const region of regions) {
          const more = nms(await detect(region, turns), nmsIou);
          if (best(more) > best(faces)) faces = more;
        }
      }
    }

    // A sideways face among upright ones: its landmarks tell its roll; re-detect it upright in a crop
    // around it, so that its landmarks (and so its alignment) are reliable.
    faces = await Promise.all(
      faces.map(async (face) => {
        const turns = uprightTurns(face.landmarks);
        if (turns === 0 || face.turns !== 0) return face;
        const side = SIDEWAYS_CROP * Math.max(face.box.width, face.box.height);
        const cx = face.box.x + face.box.width / 2;
        const cy = face.box.y + face.box.height / 2;
        const again = await detect({ x: cx - side / 2, y: cy - side / 2, width: side, height: side }, turns);
        const best = again.filter((c) => iou(c.box, face.box) > 0.3).sort((p, q) => q.score - p.score)[0];
        return best ?? face;
      }),
    );

    const minSide = this.detectOptions.minFaceSize;
    return faces
      .filter((f) => Math.min(f.box.width / decoded.scaleX, f.box.height / decoded.scaleY) >= minSide)
      .sort((p, q) => q.box.width * q.box.height - p.box.width * p.box.height)
      .map(({ box, score, landmarks }) => ({ box, score, landmarks }));
  }

  /** Faces of an already decoded image, in original coordinates, without embeddings. */
  async detectFaces(decoded: DecodedImage): Promise<DetectedFace[]> {
    const found = await this.detectDecoded(decoded);
    return found.map((d) => {
      const { embedding: _unused, ...rest } = toOriginal(d, decoded, new Float32Array(0));
      return rest;
    });
  }
}

function toOriginal(d: DetectedFace, decoded: DecodedImage, embedding: Float32Array): Face {
  const sx = 1 / decoded.scaleX;
  const sy = 1 / decoded.scaleY;
  const pt = (p: Point): Point => [p[0] * sx, p[1] * sy];
  const l = d.landmarks;
  const landmarks: Landmarks = [pt(l[0]), pt(l[1]), pt(l[2]), pt(l[3]), pt(l[4])];
  return {
    box: { x: d.box.x * sx, y: d.box.y * sy, width: d.box.width * sx, height: d.box.height * sy },
    score: d.score,
    landmarks,
    embedding,
  };
}
