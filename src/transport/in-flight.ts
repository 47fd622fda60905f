import { OverloadedError } from '../domain/errors.js';

/**
 * A bound on requests being processed at once. Beyond it a request is refused at once
 * (RESOURCE_EXHAUSTED / 429) rather than queued forever; Envoy retries it on another replica.
 */
export class InFlightLimiter {
  private current = 0;

  constructor(readonly max: number) {}

  get inFlight(): number {
    return this.current;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.current >= this.max) {
      throw new OverloadedError(`${this.current} requests in flight (limit ${this.max}); retry later`);
    }
    this.current++;
    try {
      return await fn();
    } finally {
      this.current--;
    }
  }
}
