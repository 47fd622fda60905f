/**
 * Test doubles for the controller's ports and clock (used by src/controller/*.spec.ts). Strict: a
 * call nobody set up is an error the test sees.
 */
import type { Clock } from '../../src/controller/clock.js';
import type { PhotoOutcome, PhotoProcessor, PhotoRequest } from '../../src/ports/photo-processor.js';
import type { PhotoSource, SourcePage, SourcePhoto } from '../../src/ports/photo-source.js';

/** Time that moves only when the test says so. */
export class ManualClock implements Clock {
  private t = 0;
  private sleepers: { at: number; resolve: () => void }[] = [];

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (ms <= 0 || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const onAbort = (): void => {
        this.sleepers = this.sleepers.filter((s) => s !== sleeper);
        resolve();
      };
      const sleeper = {
        at: this.t + ms,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      this.sleepers.push(sleeper);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Moves time on and wakes every sleeper that is due, then lets the woken work run. */
  async advance(ms: number): Promise<void> {
    this.t += ms;
    const due = this.sleepers.filter((s) => s.at <= this.t);
    this.sleepers = this.sleepers.filter((s) => s.at > this.t);
    for (const s of due) s.resolve();
    await settle();
  }

  get pending(): number {
    return this.sleepers.length;
  }
}

/** Lets every promise chain that can move, move (a few turns of the event loop; no timers). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** The photos `p000`, `p001`, ... in listing order, served `pageSize` at a time. */
export class ListedSource implements PhotoSource {
  readonly calls: (string | undefined)[] = [];
  readonly photos: SourcePhoto[];

  constructor(
    count: number,
    private readonly pageSize: number,
  ) {
    this.photos = Array.from({ length: count }, (_, i) => {
      const key = `p${String(i).padStart(3, '0')}`;
      return { position: key, photoId: key, imageUrl: `s3://bucket/${key}.jpg` };
    });
  }

  list(pageToken: string | undefined): Promise<SourcePage> {
    this.calls.push(pageToken);
    const rest = pageToken === undefined ? this.photos : this.photos.filter((p) => p.position > pageToken);
    const photos = rest.slice(0, this.pageSize);
    const page: SourcePage = { photos };
    if (rest.length > this.pageSize) page.next = photos.at(-1)!.position;
    return Promise.resolve(page);
  }
}

interface Call {
  request: PhotoRequest;
  signal: AbortSignal;
  resolve: (outcome: PhotoOutcome) => void;
  reject: (error: Error) => void;
}

/**
 * A processor whose calls wait until the test answers them (or answers at once through `auto`).
 * Tracks how many calls are in flight at most, and fails a call the test did not expect.
 */
export class GatedProcessor implements PhotoProcessor {
  readonly pending: Call[] = [];
  readonly requests: PhotoRequest[] = [];
  inFlight = 0;
  maxInFlight = 0;

  constructor(private readonly auto?: (request: PhotoRequest, attempt: number) => Promise<PhotoOutcome>) {}

  process(request: PhotoRequest, signal: AbortSignal): Promise<PhotoOutcome> {
    const attempt = this.requests.filter((r) => r.photoId === request.photoId).length;
    this.requests.push(request);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const done = <T>(p: Promise<T>): Promise<T> =>
      p.finally(() => {
        this.inFlight -= 1;
      });
    if (this.auto) return done(this.auto(request, attempt));
    return done(
      new Promise<PhotoOutcome>((resolve, reject) => {
        const onAbort = (): void => reject(new Error('aborted'));
        const settled = (): void => signal.removeEventListener('abort', onAbort);
        const call: Call = {
          request,
          signal,
          resolve: (outcome) => (settled(), resolve(outcome)),
          reject: (error) => (settled(), reject(error)),
        };
        this.pending.push(call);
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    );
  }

  /** Answers the pending call of `photoId` (the oldest when no id is given). */
  answer(photoId?: string, outcome: PhotoOutcome = { faces: 1, matched: 0 }): void {
    const i = photoId === undefined ? 0 : this.pending.findIndex((c) => c.request.photoId === photoId);
    const call = this.pending[i];
    if (!call) throw new Error(`no pending call${photoId ? ` for ${photoId}` : ''}`);
    this.pending.splice(i, 1);
    call.resolve(outcome);
  }

  /** How many times each photo was sent. */
  counts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const r of this.requests) counts.set(r.photoId, (counts.get(r.photoId) ?? 0) + 1);
    return counts;
  }
}
