/**
 * A pool of inference worker threads, each with its own onnxruntime sessions. Photos wait in one
 * queue on the main thread and go to the first idle worker, one photo per worker at a time; the
 * main thread only moves bytes and results. With N workers on C cores each session gets C/N
 * intra-op threads unless configured, so concurrent requests do not oversubscribe.
 *
 * A photo with several faces is embedded by every idle worker at once: its worker offers the aligned
 * faces, the pool passes the offer to the idle ones, and each claims faces until none is left or a
 * new photo arrives for it (./shared-embedding.ts). Its detector runs (and a lone face's embedder run)
 * take every core while another worker is idle and no photo waits: the pool keeps that count where
 * the workers read it (./spare-cores.ts).
 *
 * Cancellation: a photo whose caller's signal aborts while it is queued is dropped from the queue;
 * one already running in a worker finishes there (onnxruntime cannot stop a run), but its caller is
 * answered at once and the result is dropped.
 */
import { Worker } from 'node:worker_threads';
import type { DecodeConfig, InferenceConfig } from '../config/config.js';
import { CancelledError, errorFromJSON, InternalError } from '../domain/errors.js';
import type { FaceAnalysis } from '../domain/face.js';
import type { AnalyzeOptions } from '../ports/face-model.js';
import type { Logger } from '../telemetry/logger.js';
import { describeChoice, mayMeasure, workerThreads, type Tuning } from './session-choice.js';
import { workerUrl } from './worker/entry.js';
import { abandon, stopHelpers, unclaimed, type SharedFaces } from './shared-embedding.js';
import type { AnalyzeRequest, HelpRequest, WorkerData, WorkerFailed, WorkerMessage, WorkerReady } from './worker/protocol.js';

interface Job {
  id: number;
  bytes: Uint8Array<ArrayBuffer>;
  what?: string;
  keepPicture: boolean;
  /** Settles the caller's promise once (later calls do nothing). */
  resolve: (a: FaceAnalysis) => void;
  reject: (e: Error) => void;
  /** Stops listening to the caller's signal. */
  detach: () => void;
}

interface Slot {
  worker: Worker;
  /** The photo the worker is analysing. */
  running?: Job;
  /** The faces of another worker's photo this idle worker is embedding (../shared-embedding.ts). */
  helping?: SharedFaces;
  /** The worker died: it takes no more photos. */
  dead?: boolean;
}

export class AnalyzerPool {
  private nextId = 1;
  private closed = false;
  private readonly queue: Job[] = [];
  /** Idle workers while no photo waits, for the workers to read (WorkerData.spare). */
  private readonly spare: Int32Array;

  private constructor(
    private readonly slots: Slot[],
    readonly pack: { name: string },
    readonly threshold: number,
    readonly dimension: number,
    readonly provider: 'cpu' | 'cuda',
    /** The session settings every worker runs with, chosen once by the first (./session-tuner.ts). */
    readonly tuning: Tuning,
    spare: SharedArrayBuffer,
  ) {
    this.spare = new Int32Array(spare);
    this.countSpare();
  }

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
    const threads = workerThreads(inference.intraOpThreads, n);
    const perWorker: InferenceConfig = { ...inference, intraOpThreads: threads, interOpThreads: inference.interOpThreads || 1 };
    // When the session settings may be measured, the first worker chooses them alone (no other
    // worker's loading disturbs its timings) and the others get its choice; otherwise (tuning off,
    // CUDA, levels pinned) every worker comes to the same choice without measuring, all at once.
    const spare = new SharedArrayBuffer(4);
    const spawn = (tuning?: Tuning): Promise<{ slot: Slot; ready: WorkerReady }> =>
      AnalyzerPool.spawn(perWorker, decode, logLevel, pictureMaxSide, n > 1, tuning, n > 1 && inference.spareCores ? spare : undefined);
    const alone = mayMeasure(perWorker);
    const first = alone ? await spawn() : undefined;
    const started = await Promise.allSettled(Array.from({ length: alone ? n - 1 : n }, () => spawn(first?.ready.tuning)));
    if (first) started.unshift({ status: 'fulfilled', value: first });
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    const slots = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value.slot] : []));
    if (failed) {
      await Promise.all(slots.map((s) => s.worker.terminate()));
      throw failed.reason;
    }
    const ready = (started[0] as PromiseFulfilledResult<{ slot: Slot; ready: WorkerReady }>).value.ready;
    log.info(
      {
        workers: n,
        intraOpThreads: threads,
        pack: ready.pack.name,
        provider: ready.provider,
        sessions: { detector: describeChoice(ready.tuning.detector.choice), embedder: describeChoice(ready.tuning.embedder.choice) },
        tuning: ready.tuning.detector.source,
      },
      'inference workers ready',
    );
    const pool = new AnalyzerPool(slots, ready.pack, ready.threshold, ready.dimension, ready.provider, ready.tuning, spare);
    for (const slot of slots) pool.listen(slot);
    return pool;
  }

  private static spawn(
    inference: InferenceConfig,
    decode: DecodeConfig,
    logLevel: string,
    pictureMaxSide: number,
    shareFaces: boolean,
    tuning?: Tuning,
    spare?: SharedArrayBuffer,
  ): Promise<{ slot: Slot; ready: WorkerReady }> {
    const worker = new Worker(workerUrl('analyzer.worker'), {
      workerData: {
        entry: 'analyzer.worker',
        inference,
        decode,
        logLevel,
        pictureMaxSide,
        shareFaces,
        ...(tuning ? { tuning } : {}),
        ...(spare ? { spare } : {}),
      } satisfies WorkerData,
    });
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(new InternalError(`inference worker failed to start: ${e.message}`, { cause: e }));
      worker.once('error', onError);
      worker.once('message', (m: WorkerReady | WorkerFailed) => {
        worker.off('error', onError);
        if (m.ready) resolve({ slot: { worker }, ready: m });
        else {
          void worker.terminate();
          reject(errorFromJSON(m.error));
        }
      });
    });
  }

  private listen(slot: Slot): void {
    slot.worker.on('message', (m: WorkerMessage) => {
      if ('kind' in m) {
        // Both publish the spare count (countSpare).
        if (m.kind === 'share') this.share(slot, m.task);
        else {
          slot.helping = undefined;
          this.dispatch();
        }
        return;
      }
      const job = slot.running;
      if (!job || job.id !== m.id) return;
      slot.running = undefined;
      if (m.ok) job.resolve(m.analysis);
      else job.reject(errorFromJSON(m.error));
      this.dispatch();
    });
    slot.worker.on('error', (e) => this.fail(slot, e));
    slot.worker.on('exit', (code) => {
      if (!this.closed) this.fail(slot, new Error(`inference worker exited with code ${code}`));
    });
  }

  /**
   * A worker offers its photo's faces: every idle worker helps embed them, unless a photo is waiting
   * (it would have taken that worker already) or none is left to take.
   */
  private share(owner: Slot, task: SharedFaces): void {
    if (!owner.running) return;
    for (const slot of this.slots) {
      if (slot.dead || slot.running || slot.helping || this.queue.length > 0 || unclaimed(task) === 0) continue;
      slot.helping = task;
      slot.worker.postMessage({ help: task } satisfies HelpRequest);
    }
    this.countSpare();
  }

  private fail(slot: Slot, e: Error): void {
    // A helper that dies leaves its claimed faces unwritten: the owner embeds them itself.
    if (slot.helping) abandon(slot.helping);
    slot.helping = undefined;
    slot.dead = true;
    slot.running?.reject(new InternalError(`inference worker failed: ${e.message}`, { cause: e }));
    slot.running = undefined;
    if (this.slots.every((s) => s.dead)) {
      for (const job of this.queue.splice(0)) job.reject(new InternalError('every inference worker has failed'));
    }
    this.countSpare();
  }

  /** Idle workers while no photo waits: the cores a running detector may take (WorkerData.spare). */
  private countSpare(): void {
    const idle = this.queue.length > 0 ? 0 : this.slots.filter((s) => !s.dead && !s.running && !s.helping).length;
    Atomics.store(this.spare, 0, idle);
  }

  /** Photos waiting for a worker. */
  get queued(): number {
    return this.queue.length;
  }

  /** Hands queued photos to idle workers; helpers are asked to come back when photos wait. */
  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.dead || slot.running || slot.helping) continue;
      const job = this.queue.shift();
      if (!job) break;
      slot.running = job;
      const copy = job.bytes;
      slot.worker.postMessage(
        { id: job.id, bytes: copy, keepPicture: job.keepPicture, ...(job.what ? { what: job.what } : {}) } satisfies AnalyzeRequest,
        [copy.buffer],
      );
    }
    this.countSpare();
  }

  /**
   * Decodes and analyses a photo in a worker. The bytes are copied once into the message, unless
   * they are handed over (`handOver`) and fill a buffer of their own: then that buffer moves to the
   * worker as it is and the caller's array is left empty (a 24 MP JPEG is 5-10 MB: one copy and one
   * allocation less on the main thread, where large allocations bring on garbage collections). With
   * `keepPicture` the decoded pixels come back (transferred, not copied), to draw the annotated copy
   * on. With `signal`, the call rejects with CancelledError as soon as it aborts.
   */
  analyze(bytes: Uint8Array, what?: string, options: AnalyzeOptions = {}): Promise<FaceAnalysis> {
    if (this.closed) return Promise.reject(new InternalError('the inference pool is closed'));
    if (this.slots.every((s) => s.dead)) return Promise.reject(new InternalError('every inference worker has failed'));
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new CancelledError('the request was cancelled before its analysis'));
    return new Promise<FaceAnalysis>((resolve, reject) => {
      let settled = false;
      const onAbort = (): void => {
        const i = this.queue.indexOf(job);
        if (i >= 0) {
          this.queue.splice(i, 1);
          this.countSpare();
        }
        job.reject(new CancelledError(i >= 0 ? 'the request was cancelled while its photo waited for a worker' : 'the request was cancelled during its analysis'));
      };
      const job: Job = {
        id: this.nextId++,
        bytes: options.handOver && ownsBuffer(bytes) ? bytes : new Uint8Array(bytes),
        keepPicture: options.keepPicture ?? false,
        ...(what ? { what } : {}),
        resolve: (a) => {
          if (settled) return;
          settled = true;
          job.detach();
          resolve(a);
        },
        reject: (e) => {
          if (settled) return;
          settled = true;
          job.detach();
          reject(e);
        },
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(job);
      this.dispatch();
      // Still waiting: workers helping with another photo take no more of its faces, and come here.
      if (this.queue.length > 0) {
        for (const slot of this.slots) if (slot.helping) stopHelpers(slot.helping);
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new InternalError('the inference pool is closed'));
    for (const slot of this.slots) slot.running?.reject(new InternalError('the inference pool is closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/** The array is its buffer's only view, whole: the buffer can move to a worker without taking anything else with it. */
function ownsBuffer(bytes: Uint8Array): bytes is Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.byteLength > 0;
}
