/**
 * Draws annotated copies in a worker thread (src/inference/worker/draw.worker.ts), so that blending
 * overlays and encoding never hold the main thread's event loop. The pixels move to the worker
 * without a copy (transferred); a worker that dies fails the drawings it had and is replaced.
 */
import { Worker } from 'node:worker_threads';
import { errorFromJSON, InternalError } from '../domain/errors.js';
import type { DrawnFace, Picture } from '../domain/face.js';
import type { AnnotateOptions } from './annotate.js';
import { workerUrl } from './worker/entry.js';
import type { DrawReply, DrawRequest } from './worker/protocol.js';

interface Pending {
  resolve: (jpeg: Uint8Array) => void;
  reject: (e: Error) => void;
}

export class DrawWorker {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  /**
   * The photo with its faces drawn, as JPEG (see `annotate`). A picture's pixels are handed to the
   * worker (the caller's buffer is detached); encoded bytes are copied.
   */
  draw(source: Uint8Array | Picture, faces: readonly DrawnFace[], options: AnnotateOptions): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new InternalError('the drawing worker is closed'));
    const worker = this.spawned();
    const id = this.nextId++;
    const moved: Uint8Array | Picture = source instanceof Uint8Array ? new Uint8Array(source) : source;
    const buffer = (moved instanceof Uint8Array ? moved : moved.data).buffer as ArrayBuffer;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, source: moved, faces, options } satisfies DrawRequest, [buffer]);
    });
  }

  /** Starts the worker now rather than at the first drawing. */
  start(): this {
    this.spawned();
    return this;
  }

  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  private spawned(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(workerUrl('draw.worker'), { workerData: { entry: 'draw.worker' } });
    worker.on('message', (m: DrawReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.jpeg);
      else p.reject(errorFromJSON(m.error));
    });
    const fail = (e: Error): void => {
      if (this.worker === worker) this.worker = undefined;
      for (const p of this.pending.values()) p.reject(new InternalError(`drawing worker failed: ${e.message}`, { cause: e }));
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`drawing worker exited with code ${code}`));
    });
    // Idle, it must not keep the process alive.
    worker.unref();
    this.worker = worker;
    return worker;
  }
}
