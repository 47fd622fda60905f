/**
 * A work queue keyed by object key, with client-go's workqueue semantics (the shape of
 * kubernetes/sample-controller):
 *
 * - dedup: a key added while it waits is queued once;
 * - a key added while a worker processes it is not handed to a second worker: it is queued again
 *   when the first calls done(), so its latest state is reconciled after;
 * - addRateLimited waits the key's exponential backoff (base * 2^failures, capped) before adding;
 *   forget() resets it after a successful reconcile;
 * - shutDown() wakes every waiting get() with `shutdown: true` and ignores later adds.
 */
import { backoffDelay, systemClock, type Clock } from './clock.js';

export interface WorkQueueOptions {
  /** First retry delay of a key; 5 ms in client-go. */
  baseDelayMs?: number;
  /** Longest retry delay; client-go's is 1000 s, a batch wants to hear back sooner. */
  maxDelayMs?: number;
  clock?: Clock;
}

export type QueueItem = { key: string; shutdown: false } | { key?: undefined; shutdown: true };

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly waiters: ((item: QueueItem) => void)[] = [];
  private readonly stop = new AbortController();
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly clock: Clock;

  constructor(options: WorkQueueOptions = {}) {
    this.baseDelayMs = options.baseDelayMs ?? 5;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    this.clock = options.clock ?? systemClock;
  }

  get shuttingDown(): boolean {
    return this.stop.signal.aborted;
  }

  /** Keys waiting for a worker (not those being processed). */
  get length(): number {
    return this.queue.length;
  }

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.dirty.delete(key);
      this.processing.add(key);
      waiter({ key, shutdown: false });
      return;
    }
    this.queue.push(key);
  }

  /** Adds `key` after `delayMs` (unless the queue shuts down first). */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) return this.add(key);
    void this.clock.sleep(delayMs, this.stop.signal).then(() => this.add(key));
  }

  /** Adds `key` after its backoff, and counts one more failure for it. */
  addRateLimited(key: string): void {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.addAfter(key, backoffDelay(n, this.baseDelayMs, this.maxDelayMs));
  }

  /** The key's reconcile succeeded: its next failure starts from the base delay again. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** The next key to process; waits for one. The caller must call done(key) when it finishes. */
  get(): Promise<QueueItem> {
    const key = this.queue.shift();
    if (key !== undefined) {
      this.dirty.delete(key);
      this.processing.add(key);
      return Promise.resolve({ key, shutdown: false });
    }
    if (this.shuttingDown) return Promise.resolve({ shutdown: true });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(key: string): void {
    this.processing.delete(key);
    if (!this.dirty.has(key)) return;
    this.dirty.delete(key);
    this.add(key);
  }

  shutDown(): void {
    this.stop.abort();
    for (const waiter of this.waiters.splice(0)) waiter({ shutdown: true });
  }
}
