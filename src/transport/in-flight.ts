import { CancelledError, FacematchError, OverloadedError } from '../domain/errors.js';

/** The error a caller gets when its signal aborted: the reason given to abort() when it is one of ours. */
const abortError = (signal: AbortSignal): FacematchError =>
  signal.reason instanceof FacematchError ? signal.reason : new CancelledError('the caller went away or its deadline passed');

/**
 * A bound on requests being processed at once. Beyond it a request is refused at once
 * (RESOURCE_EXHAUSTED / 429) rather than queued forever; Envoy retries it on another replica.
 * The refusal comes before the request's work starts, so on gRPC it is a trailers-only response
 * (the status in the one HEADERS frame, with END_STREAM): the form Envoy's retry policy acts on.
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

  /**
   * Runs `fn` in a slot; with `signal`, rejects as soon as it aborts and frees the slot: with the
   * abort's reason when that is a FacematchError (a replica shutting down), else CancelledError.
   */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw abortError(signal);
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
          reject(abortError(signal));
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

/**
 * Every call being served, of any method (within the in-flight bound or not), and the gate that a
 * replica shutting down closes. `admit` gives each call its AbortController; after `refuse`, a new
 * call is refused at once with the error given (before any work, so a gRPC caller gets a
 * trailers-only UNAVAILABLE that Envoy retries elsewhere); `idle` resolves when the calls admitted
 * before have all ended; `abortAll` ends the ones still running, with a reason their transport
 * answers at once.
 */
export class CallTracker {
  private readonly calls = new Set<AbortController>();
  private refusal: (() => FacematchError) | undefined;
  private waiters: (() => void)[] = [];

  get active(): number {
    return this.calls.size;
  }

  get refusing(): boolean {
    return this.refusal !== undefined;
  }

  /** A new call's controller; throws the refusal once the gate is closed. Pair with `done`. */
  admit(): AbortController {
    if (this.refusal) throw this.refusal();
    const controller = new AbortController();
    this.calls.add(controller);
    return controller;
  }

  /** The call has been answered (or its caller is gone). Idempotent. */
  done(controller: AbortController): void {
    if (!this.calls.delete(controller) || this.calls.size > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Closes the gate: from now on every new call gets `error()`. */
  refuse(error: () => FacematchError): void {
    this.refusal ??= error;
  }

  /** Resolves once no admitted call is left. */
  idle(): Promise<void> {
    if (this.calls.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Aborts every call still running with `reason`; returns how many there were. */
  abortAll(reason: () => FacematchError): number {
    const left = [...this.calls];
    for (const controller of left) controller.abort(reason());
    return left.length;
  }
}
