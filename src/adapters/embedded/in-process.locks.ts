/**
 * KeyedLocks within one process: enough for the embedded stores, which one process at a time may
 * open (pglite.database.ts refuses a second). A FIFO queue per key; a key with no holder and no
 * waiter is forgotten, so memory follows the requests in flight, not the ids ever seen.
 */
import { BackendUnavailableError, CancelledError } from '../../domain/errors.js';
import type { HeldLocks, KeyedLocks } from '../../ports/locks.js';

interface Waiter {
  grant: () => void;
}

export class InProcessLocks implements KeyedLocks {
  /** Per key: the holder is the head of the queue; the others wait in order. */
  private readonly queues = new Map<string, Waiter[]>();

  constructor(private readonly waitMs = 120_000) {}

  async withLocks<T>(keys: readonly string[], fn: (held: HeldLocks) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const taken: string[] = [];
    const lost = new AbortController();
    try {
      for (const key of sorted) {
        await this.acquire(key, signal);
        taken.push(key);
      }
      return await fn({ lost: lost.signal });
    } finally {
      for (const key of taken.reverse()) this.release(key);
    }
  }

  async close(): Promise<void> {
    // Nothing to release: holders release in their finally blocks.
  }

  private acquire(key: string, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(new CancelledError(`the request was cancelled before it could lock ${key}`));
    let queue = this.queues.get(key);
    if (!queue) {
      queue = [];
      this.queues.set(key, queue);
    }
    if (queue.length === 0) {
      queue.push({ grant: () => undefined });
      return Promise.resolve();
    }
    const q = queue;
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const leave = (error: Error): void => {
        const i = q.indexOf(waiter);
        if (i > 0) q.splice(i, 1);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(error);
      };
      const onAbort = (): void => leave(new CancelledError(`the request was cancelled while waiting for ${key}`));
      const timer = setTimeout(
        () => leave(new BackendUnavailableError(`${key} is held by another request for over ${this.waitMs} ms; retry later`)),
        this.waitMs,
      );
      q.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private release(key: string): void {
    const q = this.queues.get(key);
    if (!q) return;
    q.shift();
    const next = q[0];
    if (next) next.grant();
    else this.queues.delete(key);
  }
}
