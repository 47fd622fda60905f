/**
 * An inference worker thread: loads the face models once and analyses photos sent to it.
 * onnxruntime-node runs a session synchronously on the thread that calls it, so inference lives
 * here, off the main thread's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import sharp from 'sharp';
import { toFacematchError } from '../../domain/errors.js';
import { createLogger } from '../../telemetry/logger.js';
import { FaceAnalyzer } from '../face-analyzer.js';
import type { Picture } from '../../domain/face.js';
import type { AnalyzeRequest, HelpDone, HelpRequest, ShareOffer, WorkerData, WorkerFailed, WorkerReady, WorkerReply } from './protocol.js';

const { inference, decode, logLevel, pictureMaxSide, tuning, shareFaces, spare } = workerData as WorkerData;
const port = parentPort!;

/**
 * The picture as the main thread gets it: shrunk to the size it is drawn at (its pixels count as
 * the main thread's memory there, and large ones bring on full garbage collections that stall its
 * event loop), in a buffer of its own that moves across without a copy (sharp's buffers live outside
 * the V8 heap and cannot be detached, so posting one would copy it on the main thread).
 */
async function handOver(picture: Picture): Promise<Picture> {
  const scale = pictureMaxSide > 0 ? Math.min(1, pictureMaxSide / Math.max(picture.width, picture.height)) : 1;
  if (scale === 1) return { ...picture, data: new Uint8Array(picture.data) };
  const width = Math.max(1, Math.round(picture.width * scale));
  const height = Math.max(1, Math.round(picture.height * scale));
  const { data } = await sharp(picture.data, { raw: { width: picture.width, height: picture.height, channels: 3 } })
    .resize(width, height, { fit: 'fill' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width, height };
}

try {
  const log = createLogger(logLevel);
  const analyzer = await FaceAnalyzer.load(inference, decode, log, tuning, spare);
  // Warm-up: the first run of a session allocates and optimises; do it before reporting ready. A
  // grey picture's analysis runs the detector, not the embedder (no face); the wide sessions
  // (../spare-cores.ts) and the embedder get their own.
  await analyzer.analyze(await sharp({ create: { width: 96, height: 64, channels: 3, background: '#808080' } }).png().toBuffer());
  await analyzer.detector.warmUpWide();
  await analyzer.embedder.warmUp();
  if (shareFaces) analyzer.embedder.offer = (task) => port.postMessage({ kind: 'share', task } satisfies ShareOffer);
  port.on('message', (req: AnalyzeRequest | HelpRequest) => {
    if ('help' in req) {
      const failed = (error: unknown): void =>
        log.warn({ err: toFacematchError(error).toJSON() }, 'embedding faces of another worker failed; that worker embeds them itself');
      void analyzer.embedder.help(req.help, failed).then(
        (faces) => port.postMessage({ kind: 'helped', faces } satisfies HelpDone),
        (error: unknown) => {
          failed(error);
          port.postMessage({ kind: 'helped', faces: 0 } satisfies HelpDone);
        },
      );
      return;
    }
    analyzer
      .analyze(req.bytes, req.what, { keepPicture: req.keepPicture ?? false })
      .then(async (analysis) => {
        const transfer = analysis.faces.map((f) => f.embedding.buffer as ArrayBuffer);
        if (analysis.picture) {
          analysis.picture = await handOver(analysis.picture);
          transfer.push(analysis.picture.data.buffer as ArrayBuffer);
        }
        port.postMessage({ id: req.id, ok: true, analysis } satisfies WorkerReply, transfer);
      })
      .catch((error: unknown) => {
        port.postMessage({ id: req.id, ok: false, error: toFacematchError(error).toJSON() } satisfies WorkerReply);
      });
  });
  port.postMessage({
    ready: true,
    pack: { name: analyzer.pack.name },
    threshold: analyzer.threshold,
    dimension: analyzer.embedder.dimension,
    provider: analyzer.detector.provider,
    tuning: analyzer.tuning,
  } satisfies WorkerReady);
} catch (error) {
  port.postMessage({ ready: false, error: toFacematchError(error).toJSON() } satisfies WorkerFailed);
}
