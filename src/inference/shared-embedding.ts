/**
 * One photo's faces embedded by several inference workers at once.
 *
 * Each worker of the pool runs its own sessions with C/N intra-op threads, one photo at a time; a
 * crowd photo alone in the service therefore ran on one worker's share of the CPU while the others
 * idled (a 114-face crowd: ~2 s of embedder runs on one core of two). Now the worker that analyses a
 * photo aligns its faces into shared memory and offers the work; the pool hands the offer to its
 * idle workers, and every taker (the owner first among them) claims the next faces with an atomic
 * counter and writes their embeddings back in place. Nothing is split in advance: a helper that
 * arrives late, or never, only takes fewer faces, and the owner never waits for one that has not
 * started. A helper stops claiming when a photo is waiting for a worker (`stop`), so sharing never
 * delays another request by more than one run.
 *
 * The embeddings do not depend on who computed them: every worker runs the same model with the same
 * session settings (chosen once for the pool: ./session-tuner.ts), one face per run when shared (a
 * batched model alone runs several: its results are the same, tested in onnx-batch-axis.spec.ts).
 *
 * Failures: a helper whose run fails marks its faces done without writing them; a helper that dies
 * is reported by the pool (`abandon`). Either way the owner embeds every face still missing itself.
 */

/**
 * Atomics.waitAsync (ES2024; in Node since 16). The project's `lib` is ES2023, which keeps out other
 * ES2024 library calls that Node 20 lacks, so this one is typed here.
 */
const waitAsync = (Atomics as unknown as {
  waitAsync(this: void, array: Int32Array, index: number, value: number, timeoutMs: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

/** Control words (Int32) at the start of `control`, then one state word per face. */
const NEXT = 0;
const DONE = 1;
const STOP = 2;
const ABANDONED = 3;
const HEADER = 4;
/** A face's state: its embedding is written. */
const WRITTEN = 1;

/** Where the shared work of one photo is; posted between threads (the buffers are shared, not copied). */
export interface SharedFaces {
  /** Aligned faces: `faces` tensors of `per` float32 values each ([3, h, w]). */
  input: SharedArrayBuffer;
  /** Embeddings: `faces` x `dimension` float32, L2-normalised. */
  output: SharedArrayBuffer;
  /** Int32 words: next face to claim, faces finished, stop, abandoned; then a state per face. */
  control: SharedArrayBuffer;
  faces: number;
  per: number;
  dimension: number;
  /** Faces claimed at a time. */
  chunk: number;
}

export function createSharedFaces(faces: number, per: number, dimension: number, chunk: number): SharedFaces {
  return {
    input: new SharedArrayBuffer(4 * faces * per),
    output: new SharedArrayBuffer(4 * faces * dimension),
    control: new SharedArrayBuffer(4 * (HEADER + faces)),
    faces,
    per,
    dimension,
    chunk,
  };
}

/** Runs the model on `count` aligned faces (a private copy of their tensors) and returns their embeddings, L2-normalised. */
export type EmbedRun = (tensors: Float32Array<ArrayBuffer>, count: number) => Promise<Float32Array[]>;

/**
 * Claims and embeds faces until none is left (or, for a helper, until `stop`); returns how many this
 * thread embedded. onnxruntime-node refuses tensors over shared memory, so each chunk is copied out.
 */
export async function takeShare(task: SharedFaces, run: EmbedRun, helper: boolean, onError?: (e: unknown) => void): Promise<number> {
  const control = new Int32Array(task.control);
  const input = new Float32Array(task.input);
  const output = new Float32Array(task.output);
  let mine = 0;
  for (;;) {
    if (helper && (Atomics.load(control, STOP) !== 0 || Atomics.load(control, ABANDONED) !== 0)) break;
    const start = Atomics.add(control, NEXT, task.chunk);
    if (start >= task.faces) break;
    const count = Math.min(task.chunk, task.faces - start);
    try {
      const embeddings = await run(input.slice(start * task.per, (start + count) * task.per), count);
      embeddings.forEach((e, i) => {
        output.set(e, (start + i) * task.dimension);
        Atomics.store(control, HEADER + start + i, WRITTEN);
      });
      mine += count;
    } catch (error) {
      // The owner embeds these itself (they stay unwritten); its own failure is its caller's.
      if (!helper) throw error;
      onError?.(error);
    } finally {
      Atomics.add(control, DONE, count);
      Atomics.notify(control, DONE);
    }
  }
  return mine;
}

/**
 * The owner's side after its own claims: waits for the helpers' chunks in flight, embeds any face a
 * helper failed or abandoned, and returns every embedding in face order.
 */
export async function collectShare(task: SharedFaces, run: EmbedRun): Promise<Float32Array[]> {
  const control = new Int32Array(task.control);
  for (;;) {
    const done = Atomics.load(control, DONE);
    if (done >= task.faces || Atomics.load(control, ABANDONED) !== 0) break;
    // The timeout only bounds a wait that a missed wake-up would make endless.
    const wait = waitAsync(control, DONE, done, 1000);
    if (wait.async) await wait.value;
  }
  const input = new Float32Array(task.input);
  const output = new Float32Array(task.output);
  const embeddings: Float32Array[] = [];
  for (let i = 0; i < task.faces; i++) {
    if (Atomics.load(control, HEADER + i) !== WRITTEN) {
      const [again] = await run(input.slice(i * task.per, (i + 1) * task.per), 1);
      output.set(again!, i * task.dimension);
      Atomics.store(control, HEADER + i, WRITTEN);
    }
    embeddings.push(output.slice(i * task.dimension, (i + 1) * task.dimension));
  }
  return embeddings;
}

/** Helpers take no more faces once their current chunk is done (a photo is waiting for a worker). */
export function stopHelpers(task: SharedFaces): void {
  Atomics.store(new Int32Array(task.control), STOP, 1);
}

/** A helper died: the owner stops waiting for it and embeds what is missing. */
export function abandon(task: SharedFaces): void {
  const control = new Int32Array(task.control);
  Atomics.store(control, ABANDONED, 1);
  Atomics.notify(control, DONE);
}

/** Faces of the photo not yet claimed by anyone (the pool offers help only while some are). */
export function unclaimed(task: SharedFaces): number {
  return Math.max(0, task.faces - Atomics.load(new Int32Array(task.control), NEXT));
}
