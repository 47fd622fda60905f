import { CancelledError, OverloadedError } from '../domain/errors.js';

/**
 * A bound on requests being processed at once. Beyond it a request is refused at once
 * (RESOURCE_EXHAUSTED / 429) rather than queued forever; Envoy retries it on another replica.
 *
 * A request whose caller goes away (a disconnect, a deadline) gives its slot back at once, without
 * waiting for its work to notice: the work has the same signal and stops at its next step, but a
 * source that never answers must not hold a slot for the length of the fetch timeout.
 */
export class InFlightLimiter {
  private current = 0;

  constructor(readonly max: number) {}

  get inFlight(): number {
    return this.current;
  }

  /** Runs `fn` in a slot; with `signal`, rejects with CancelledError and frees the slot as soon as it aborts. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw new CancelledError('the caller went away or its deadline passed');
    if (this.current >= this.max) {
      throw new OverloadedError(`${this.current} requests in flight (limit ${this.max}); retry later`);
    }
    this.current++;
    let held = true;
    const release = () => {
      if (held) this.current--;
      held = false;
    };
    let onAbort: (() => void) | undefined;
    try {
      const work = fn();
      if (!signal) return await work;
      const abandoned = new Promise<never>((_, reject) => {
        onAbort = () => {
          release();
          reject(new CancelledError('the caller went away or its deadline passed'));
        };
        signal.addEventListener('abort', onAbort, { once: true });
      });
      // The work may still fail after the caller left: nobody is waiting for it any more.
      work.catch(() => undefined);
      return await Promise.race([work, abandoned]);
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      release();
    }
  }
}
