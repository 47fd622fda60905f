/**
 * An inference worker thread: loads the face models once and analyses photos sent to it.
 * onnxruntime-node runs a session synchronously on the thread that calls it, so inference lives
 * here, off the main thread's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import sharp from 'sharp';
import type { DecodeConfig, InferenceConfig } from '../../config/config.js';
import { toFacematchError } from '../../domain/errors.js';
import { createLogger } from '../../telemetry/logger.js';
import { FaceAnalyzer } from '../face-analyzer.js';
import type { AnalyzeRequest, WorkerFailed, WorkerReady, WorkerReply } from './protocol.js';

const { inference, decode, logLevel } = workerData as { inference: InferenceConfig; decode: DecodeConfig; logLevel: string };
const port = parentPort!;

try {
  const analyzer = await FaceAnalyzer.load(inference, decode, createLogger(logLevel));
  // Warm-up: the first run of a session allocates and optimises; do it before reporting ready.
  await analyzer.analyze(await sharp({ create: { width: 96, height: 64, channels: 3, background: '#808080' } }).png().toBuffer());
  port.on('message', (req: AnalyzeRequest) => {
    analyzer
      .analyze(req.bytes, req.what, { keepPicture: req.keepPicture ?? false })
      .then((analysis) => {
        const transfer = analysis.faces.map((f) => f.embedding.buffer as ArrayBuffer);
        if (analysis.picture) {
          // sharp's buffers live outside the V8 heap and cannot be detached, so posting one would
          // copy it on the main thread too; copied here once, the copy moves across for free.
          const data = new Uint8Array(analysis.picture.data);
          analysis.picture = { ...analysis.picture, data };
          transfer.push(data.buffer);
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
  } satisfies WorkerReady);
} catch (error) {
  port.postMessage({ ready: false, error: toFacematchError(error).toJSON() } satisfies WorkerFailed);
}
