/**
 * A pool of inference worker threads, each with its own onnxruntime sessions. Photos go to the
 * least busy worker; the main thread only moves bytes and results. With N workers on C cores each
 * session gets C/N intra-op threads unless configured, so concurrent requests do not oversubscribe.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { DecodeConfig, InferenceConfig } from '../config/config.js';
import { errorFromJSON, InternalError } from '../domain/errors.js';
import type { FaceAnalysis } from '../domain/face.js';
import type { Logger } from '../telemetry/logger.js';
import { workerUrl } from './worker/entry.js';
import type { AnalyzeRequest, WorkerData, WorkerFailed, WorkerReady, WorkerReply } from './worker/protocol.js';

interface Slot {
  worker: Worker;
  busy: number;
  pending: Map<number, { resolve: (a: FaceAnalysis) => void; reject: (e: Error) => void }>;
}

export class AnalyzerPool {
  private nextId = 1;
  private closed = false;

  private constructor(
    private readonly slots: Slot[],
    readonly pack: { name: string },
    readonly threshold: number,
    readonly dimension: number,
    readonly provider: 'cpu' | 'cuda',
  ) {}

  /**
   * `pictureMaxSide`: pictures handed back are shrunk in the worker to fit this (0: as decoded),
   * the size the annotated copy is drawn at, so the main thread never holds more pixels than it draws.
   */
  static async start(
    inference: InferenceConfig,
    decode: DecodeConfig,
    workers: number,
    log: Logger,
    logLevel = 'warn',
    pictureMaxSide = 0,
  ): Promise<AnalyzerPool> {
    const n = Math.max(1, workers);
    const threads = inference.intraOpThreads || Math.max(1, Math.floor(availableParallelism() / n));
    const perWorker: InferenceConfig = { ...inference, intraOpThreads: threads, interOpThreads: inference.interOpThreads || 1 };
    const started = await Promise.allSettled(
      Array.from({ length: n }, () => AnalyzerPool.spawn(perWorker, decode, logLevel, pictureMaxSide)),
    );
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    const slots = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value.slot] : []));
    if (failed) {
      await Promise.all(slots.map((s) => s.worker.terminate()));
      throw failed.reason;
    }
    const ready = (started[0] as PromiseFulfilledResult<{ slot: Slot; ready: WorkerReady }>).value.ready;
    log.info({ workers: n, intraOpThreads: threads, pack: ready.pack.name, provider: ready.provider }, 'inference workers ready');
    const pool = new AnalyzerPool(slots, ready.pack, ready.threshold, ready.dimension, ready.provider);
    for (const slot of slots) pool.listen(slot);
    return pool;
  }

  private static spawn(
    inference: InferenceConfig,
    decode: DecodeConfig,
    logLevel: string,
    pictureMaxSide: number,
  ): Promise<{ slot: Slot; ready: WorkerReady }> {
    const worker = new Worker(workerUrl('analyzer.worker'), {
      workerData: { entry: 'analyzer.worker', inference, decode, logLevel, pictureMaxSide } satisfies WorkerData,
    });
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(new InternalError(`inference worker failed to start: ${e.message}`, { cause: e }));
      worker.once('error', onError);
      worker.once('message', (m: WorkerReady | WorkerFailed) => {
        worker.off('error', onError);
        if (m.ready) resolve({ slot: { worker, busy: 0, pending: new Map() }, ready: m });
        else {
          void worker.terminate();
          reject(errorFromJSON(m.error));
        }
      });
    });
  }

  private listen(slot: Slot): void {
    slot.worker.on('message', (m: WorkerReply) => {
      const p = slot.pending.get(m.id);
      if (!p) return;
      slot.pending.delete(m.id);
      slot.busy--;
      if (m.ok) p.resolve(m.analysis);
      else p.reject(errorFromJSON(m.error));
    });
    slot.worker.on('error', (e) => this.failAll(slot, e));
    slot.worker.on('exit', (code) => {
      if (!this.closed) this.failAll(slot, new Error(`inference worker exited with code ${code}`));
    });
  }

  private failAll(slot: Slot, e: Error): void {
    for (const p of slot.pending.values()) p.reject(new InternalError(`inference worker failed: ${e.message}`, { cause: e }));
    slot.pending.clear();
    slot.busy = 0;
  }

  /**
   * Decodes and analyses a photo in a worker. The bytes are copied once into the message; with
   * `keepPicture` the decoded pixels come back (transferred, not copied), to draw the annotated copy on.
   */
  analyze(bytes: Uint8Array, what?: string, options: { keepPicture?: boolean } = {}): Promise<FaceAnalysis> {
    if (this.closed) return Promise.reject(new InternalError('the inference pool is closed'));
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    const copy = new Uint8Array(bytes);
    slot.busy++;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage(
        { id, bytes: copy, keepPicture: options.keepPicture ?? false, ...(what ? { what } : {}) } satisfies AnalyzeRequest,
        [copy.buffer],
      );
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
