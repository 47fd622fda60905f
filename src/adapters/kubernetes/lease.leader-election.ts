/**
 * Leader election over a `coordination.k8s.io/v1` Lease: of the controller replicas, one works and
 * the others wait to take over. @kubernetes/client-node ships no leader election for JavaScript;
 * this follows the semantics of client-go's tools/leaderelection with its Lease lock:
 *
 * - A candidate reads the Lease (creating it when missing) and takes it when nobody holds it, or
 *   when its record has not changed for `leaseDurationSeconds` as measured by the candidate's OWN
 *   clock since it first saw that record. The times written inside the Lease come from other
 *   machines and are never compared with ours, so clock skew between replicas does not matter
 *   (a difference in clock *speed* does: keep leaseDuration / renewDeadline above the worst ratio).
 * - Every write is a replace that carries the resourceVersion that was read: of two candidates that
 *   race for an expired Lease, one gets 409 Conflict and goes back to waiting.
 * - The leader renews every `retryPeriod`. Its authority lasts `renewDeadline` from the moment it
 *   SENT its last successful renewal; when that passes without another success it stops at once:
 *   `isLeader` turns false and the leadership signal aborts even while a renewal hangs (the hanging
 *   request is aborted too). A follower's wait starts no earlier than that write, and
 *   renewDeadline < leaseDuration, so the old leader has stopped before a follower may start.
 * - On shutdown (the run signal aborts) the leader aborts the leadership signal, waits for the work
 *   it started to return, then releases the Lease (holder cleared, leaseDurationSeconds 1), so a
 *   follower takes over at its next try instead of waiting the lease out. It releases only when the
 *   work has returned within its authority; otherwise the Lease is left to expire.
 *
 * Like client-go this is not fencing: it keeps two replicas from working at once as long as clocks
 * run at about the same speed and the leader's process is not frozen past its deadline.
 *
 * Deliberate differences from client-go: a leader that reads another holder in the Lease stops at
 * once (client-go keeps retrying until renewDeadline); onStoppedLeading is called only after
 * leading (client-go calls it on every exit); run() resolves with why it ended, and on 'lost' the
 * caller is expected to exit, as client-go's users do.
 *
 * client-node 1.x facts this relies on (checked against kube-apiserver 1.35): the API server refuses
 * a Lease whose MicroTime fields are plain Dates (`parsing time "…123Z" as "…000000Z07:00"`, 400),
 * so times are written as V1MicroTime (RFC 3339 with microseconds); read back, the same fields are
 * strings, not Dates, whatever the typings say.
 */
import {
  ApiException,
  Observable,
  V1MicroTime,
  type CoordinationV1Api,
  type ObservableMiddleware,
  type V1Lease,
  type V1LeaseSpec,
} from '@kubernetes/client-node';
import { ConfigError, InternalError } from '../../domain/errors.js';
import type { Logger } from '../../telemetry/logger.js';
import { systemClock, type Clock } from '../../controller/clock.js';

/** The part of the Coordination API the election uses (a test hands in a fake). */
export type LeaseApi = Pick<CoordinationV1Api, 'readNamespacedLease' | 'createNamespacedLease' | 'replaceNamespacedLease'>;

export type ElectionLog = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

export interface LeaderCallbacks {
  /**
   * This replica leads from now on; do the work until `leadership` aborts (leadership lost, or
   * shutdown). On shutdown the Lease is released only after this returns (or its promise settles),
   * so the next leader never overlaps with this one's work. When leadership is lost, run() does not
   * wait for it: the signal has aborted and the caller is expected to exit.
   */
  onStartedLeading(leadership: AbortSignal): void | Promise<void>;
  /** Called once after leading ended (lost or shut down); never when this replica did not lead. */
  onStoppedLeading(): void;
  /** Called when the observed holder changes (this replica included); not for an empty holder. */
  onNewLeader?(identity: string): void;
}

/** Why run() ended: 'stopped' after the run signal aborted, 'lost' when leadership was lost (exit). */
export type RunOutcome = 'stopped' | 'lost';

export interface LeaseLeaderElectorOptions {
  api: LeaseApi;
  namespace: string;
  /** The Lease's name (one per elected component). */
  name: string;
  /** This replica (its pod name): unique among the candidates. */
  identity: string;
  /** How long followers wait without seeing a renewal before taking over. Whole seconds; default 15 s. */
  leaseDurationMs?: number;
  /** How long the leader keeps leading without a successful renewal. Default 10 s. */
  renewDeadlineMs?: number;
  /** How often the leader renews and followers try. Default 2 s. */
  retryPeriodMs?: number;
  /** Release the Lease on shutdown (default true). False leaves it to expire, as a crash would. */
  releaseOnCancel?: boolean;
  log?: ElectionLog;
  clock?: Clock;
  /** In [0, 1): spreads the followers' tries (client-go's jitter). Default Math.random. */
  random?: () => number;
}

/** client-go's JitterFactor: a follower waits retryPeriod × [1, 2.2) between tries. */
const JITTER_FACTOR = 1.2;

const SILENT: ElectionLog = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

interface Observed {
  lease: V1Lease;
  /** The election record (holder, duration, times, transitions): what "changed" means. */
  record: string;
  /** Our clock when we first saw this record. */
  at: number;
}

type Attempt = { ok: true; sentAt: number } | { ok: false; heldBy?: string };

export class LeaseLeaderElector {
  readonly identity: string;
  private readonly api: LeaseApi;
  private readonly namespace: string;
  private readonly name: string;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly releaseOnCancel: boolean;
  private readonly log: ElectionLog;
  private readonly clock: Clock;
  private readonly random: () => number;
  private observed: Observed | undefined;
  private leading = false;
  private reportedLeader = '';
  private running = false;

  constructor(o: LeaseLeaderElectorOptions) {
    this.api = o.api;
    this.namespace = o.namespace;
    this.name = o.name;
    this.identity = o.identity;
    this.leaseDurationMs = o.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = o.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = o.retryPeriodMs ?? 2_000;
    this.releaseOnCancel = o.releaseOnCancel ?? true;
    this.log = o.log ?? SILENT;
    this.clock = o.clock ?? systemClock;
    this.random = o.random ?? Math.random;
    if (!this.identity) throw new ConfigError('leader election: the identity is empty');
    if (!this.name || !this.namespace) throw new ConfigError('leader election: the Lease needs a name and a namespace');
    if (!(this.retryPeriodMs > 0)) throw new ConfigError('leader election: retryPeriod must be greater than zero');
    if (!(this.leaseDurationMs >= 1000) || this.leaseDurationMs % 1000 !== 0) {
      throw new ConfigError(`leader election: leaseDuration must be a whole number of seconds (the Lease stores seconds), got ${this.leaseDurationMs} ms`);
    }
    if (!(this.leaseDurationMs > this.renewDeadlineMs)) throw new ConfigError('leader election: leaseDuration must be greater than renewDeadline');
    if (!(this.renewDeadlineMs > JITTER_FACTOR * this.retryPeriodMs)) {
      throw new ConfigError(`leader election: renewDeadline must be greater than retryPeriod × ${JITTER_FACTOR}`);
    }
  }

  /** True while this replica leads (false again the moment it stops: lost, or shutting down). */
  get isLeader(): boolean {
    return this.leading;
  }

  /** The holder last observed in the Lease (this replica included); undefined when none. */
  get leader(): string | undefined {
    return this.observed?.lease.spec?.holderIdentity || undefined;
  }

  /**
   * Tries to acquire the Lease until it does or `signal` aborts; then leads until leadership is lost
   * or `signal` aborts (then releases). Resolves once everything has stopped.
   */
  async run(signal: AbortSignal, callbacks: LeaderCallbacks): Promise<RunOutcome> {
    if (this.running) throw new InternalError(`leader election for ${this.describe()} is already running`);
    this.running = true;
    try {
      this.log.info({ lease: this.describe(), identity: this.identity }, 'leader election: trying to acquire the lease');
      const acquired = await this.acquire(signal, callbacks);
      if (acquired === undefined) return 'stopped';
      return await this.lead(signal, callbacks, acquired);
    } finally {
      this.running = false;
    }
  }

  /** Tries every retryPeriod (with jitter); resolves with the send time of the winning write. */
  private async acquire(signal: AbortSignal, callbacks: LeaderCallbacks): Promise<number | undefined> {
    while (!signal.aborted) {
      const attempt = await this.tryAcquireOrRenew(signal);
      this.reportLeader(callbacks);
      if (attempt.ok) return attempt.sentAt;
      await this.clock.sleep(this.retryPeriodMs * (1 + this.random() * JITTER_FACTOR), signal);
    }
    return undefined;
  }

  private async lead(signal: AbortSignal, callbacks: LeaderCallbacks, acquiredAt: number): Promise<RunOutcome> {
    this.leading = true;
    this.log.info({ lease: this.describe(), identity: this.identity }, 'leader election: acquired the lease, leading');
    let authorityUntil = acquiredAt + this.renewDeadlineMs;
    let lost: string | undefined;
    const leadership = new AbortController();
    const authority = new AbortController();
    const stopWatchdog = new AbortController();
    const stopLeading = (reason: string): void => {
      this.leading = false;
      if (!leadership.signal.aborted) leadership.abort(new Error(reason));
    };

    // Stops the leadership the moment the deadline passes, whatever a renewal request is doing.
    const watchdog = (async () => {
      while (!stopWatchdog.signal.aborted) {
        const left = authorityUntil - this.clock.now();
        if (left <= 0) {
          lost ??= `no successful renewal for ${this.renewDeadlineMs} ms`;
          authority.abort();
          stopLeading(lost);
          return;
        }
        await this.clock.sleep(left, stopWatchdog.signal);
      }
    })();

    const work = (async () => callbacks.onStartedLeading(leadership.signal))().catch((error: unknown) =>
      this.log.error({ lease: this.describe(), error: describe(error) }, 'leader election: the leader work failed'),
    );

    // Shutdown stops the work at once; a renewal in flight is left to finish (only the deadline cuts
    // it short), so the release that follows writes over the latest resourceVersion.
    const onShutdown = (): void => stopLeading('shutting down');
    signal.addEventListener('abort', onShutdown, { once: true });
    if (signal.aborted) onShutdown();
    while (!leadership.signal.aborted) {
      await this.clock.sleep(this.retryPeriodMs, leadership.signal);
      if (leadership.signal.aborted) break;
      const attempt = await this.tryAcquireOrRenew(authority.signal);
      this.reportLeader(callbacks);
      if (attempt.ok) {
        if (!leadership.signal.aborted) authorityUntil = Math.max(authorityUntil, attempt.sentAt + this.renewDeadlineMs);
      } else if (attempt.heldBy !== undefined) {
        lost ??= `the lease is held by ${attempt.heldBy}`;
        stopLeading(lost);
      }
    }

    let outcome: RunOutcome;
    if (lost !== undefined) {
      outcome = 'lost';
      stopLeading(lost);
      this.log.error({ lease: this.describe(), identity: this.identity, reason: lost }, 'leader election: leadership lost');
    } else {
      outcome = 'stopped';
      stopLeading('shutting down');
      // The work stops before the Lease is handed on; if it outlasts our authority, let the Lease expire.
      const drained = await Promise.race([work.then(() => true), aborted(authority.signal).then(() => false)]);
      if (!drained) {
        this.log.warn({ lease: this.describe() }, 'leader election: the work did not stop within the renew deadline; the lease is left to expire');
      } else if (this.releaseOnCancel) {
        await this.release(authority.signal);
      }
    }
    signal.removeEventListener('abort', onShutdown);
    stopWatchdog.abort();
    await watchdog;
    try {
      callbacks.onStoppedLeading();
    } catch (error) {
      this.log.error({ lease: this.describe(), error: describe(error) }, 'leader election: onStoppedLeading failed');
    }
    return outcome;
  }

  /** Clears the holder (and shortens the lease to 1 s) so a follower takes over at its next try. */
  private async release(signal: AbortSignal): Promise<void> {
    let lease = this.observed?.lease;
    // A second try after 409 Conflict, over what the Lease holds now, if it is still ours.
    for (let attempt = 0; attempt < 2 && lease?.spec?.holderIdentity === this.identity; attempt++) {
      const now = new V1MicroTime(this.clock.now());
      const spec: V1LeaseSpec = { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now };
      const body: V1Lease = { ...lease, spec };
      try {
        const released = await this.replace(body, signal);
        this.observe(released, now.getTime());
        this.log.info({ lease: this.describe(), identity: this.identity }, 'leader election: released the lease');
        return;
      } catch (error) {
        if (!isStatus(error, 409) || attempt > 0) {
          this.log.warn({ lease: this.describe(), error: describe(error) }, 'leader election: could not release the lease; it expires by itself');
          return;
        }
      }
      try {
        lease = await this.call(signal, (options) => this.api.readNamespacedLease({ name: this.name, namespace: this.namespace }, options));
        this.observe(lease, this.clock.now());
      } catch (error) {
        this.log.warn({ lease: this.describe(), error: describe(error) }, 'leader election: could not release the lease; it expires by itself');
        return;
      }
    }
  }

  /** One try, as client-go's tryAcquireOrRenew: the leader's fast path, else read (or create), check, write. */
  private async tryAcquireOrRenew(signal: AbortSignal): Promise<Attempt> {
    const observed = this.observed;
    // 1. The leader writes over the record it wrote last (its resourceVersion): no read needed.
    if (this.leading && observed?.lease.spec?.holderIdentity === this.identity) {
      const sentAt = this.clock.now();
      try {
        const renewed = await this.replace(this.renewed(observed.lease, sentAt), signal);
        this.observe(renewed, sentAt);
        return { ok: true, sentAt };
      } catch (error) {
        if (!isStatus(error, 409)) return this.failed('renewing', error, signal);
        this.log.debug({ lease: this.describe() }, 'leader election: the lease changed since our last renewal; reading it');
      }
    }

    // 2. Read it; create it when missing (a 409 there means another candidate created it first).
    let lease: V1Lease;
    try {
      lease = await this.call(signal, (options) => this.api.readNamespacedLease({ name: this.name, namespace: this.namespace }, options));
    } catch (error) {
      if (!isStatus(error, 404)) return this.failed('reading', error, signal);
      const sentAt = this.clock.now();
      try {
        const body: V1Lease = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.name, namespace: this.namespace }, spec: this.taken(undefined, sentAt) };
        const created = await this.call(signal, (options) => this.api.createNamespacedLease({ namespace: this.namespace, body }, options));
        this.observe(created, sentAt);
        return { ok: true, sentAt };
      } catch (createError) {
        if (isStatus(createError, 409)) return { ok: false };
        return this.failed('creating', createError, signal);
      }
    }

    // 3. Held by another and not expired by our clock: wait. Seen by a leader: leadership is gone.
    const now = this.clock.now();
    const seen = this.observe(lease, now);
    const holder = lease.spec?.holderIdentity ?? '';
    if (holder !== '' && holder !== this.identity) {
      if (this.leading) return { ok: false, heldBy: holder };
      const expiresAt = seen.at + (lease.spec?.leaseDurationSeconds ?? 0) * 1000;
      if (now < expiresAt) return { ok: false };
      this.log.info({ lease: this.describe(), holder, unchangedForMs: now - seen.at }, 'leader election: the lease expired; taking it');
    }

    // 4. Take it (or renew it: it is ours, e.g. written by this replica before a restart).
    const sentAt = this.clock.now();
    const body: V1Lease = { ...lease, spec: holder === this.identity ? this.renewed(lease, sentAt).spec : this.taken(lease.spec, sentAt) };
    try {
      const written = await this.replace(body, signal);
      this.observe(written, sentAt);
      return { ok: true, sentAt };
    } catch (error) {
      if (isStatus(error, 409)) return { ok: false }; // another candidate wrote first
      return this.failed('updating', error, signal);
    }
  }

  private replace(body: V1Lease, signal: AbortSignal): Promise<V1Lease> {
    return this.call(signal, (options) => this.api.replaceNamespacedLease({ name: this.name, namespace: this.namespace, body }, options));
  }

  /** Our record on a lease we hold: a new renewTime, the rest (acquireTime, transitions) kept. */
  private renewed(lease: V1Lease, at: number): V1Lease {
    const spec = lease.spec ?? {};
    return {
      ...lease,
      spec: { ...spec, holderIdentity: this.identity, leaseDurationSeconds: this.leaseDurationMs / 1000, renewTime: new V1MicroTime(at) },
    };
  }

  /** Our record on a lease that changes hands: acquired now, one more transition. */
  private taken(spec: V1LeaseSpec | undefined, at: number): V1LeaseSpec {
    const now = new V1MicroTime(at);
    return {
      ...spec,
      holderIdentity: this.identity,
      leaseDurationSeconds: this.leaseDurationMs / 1000,
      acquireTime: now,
      renewTime: now,
      leaseTransitions: spec === undefined ? 0 : (spec.leaseTransitions ?? 0) + 1,
    };
  }

  /** Records what the Lease holds; the time is kept while the record does not change. */
  private observe(lease: V1Lease, at: number): Observed {
    const record = recordOf(lease.spec);
    if (this.observed?.record === record) {
      this.observed.lease = lease; // a newer resourceVersion for the next write
    } else {
      this.observed = { lease, record, at };
    }
    return this.observed;
  }

  private reportLeader(callbacks: LeaderCallbacks): void {
    const holder = this.leader;
    if (holder === undefined || holder === this.reportedLeader) return;
    this.reportedLeader = holder;
    this.log.info({ lease: this.describe(), leader: holder }, 'leader election: new leader');
    try {
      callbacks.onNewLeader?.(holder);
    } catch (error) {
      this.log.error({ lease: this.describe(), error: describe(error) }, 'leader election: onNewLeader failed');
    }
  }

  private failed(what: string, error: unknown, signal: AbortSignal): Attempt {
    const fields = { lease: this.describe(), identity: this.identity, error: describe(error) };
    // Stopped on purpose (shutdown, or the deadline passed): not worth a warning.
    if (signal.aborted) this.log.debug(fields, `leader election: ${what} the lease stopped`);
    else this.log.warn(fields, `leader election: ${what} the lease failed`);
    return { ok: false };
  }

  /**
   * A request that stops when `signal` aborts: the signal goes to the HTTP request (so a renewal that
   * hangs past the deadline cannot land later), and the promise rejects at once whatever the client does.
   */
  private call<T>(signal: AbortSignal, request: (options: RequestOptions) => Promise<T>): Promise<T> {
    if (signal.aborted) return Promise.reject(abortError(signal));
    const pending = request(abortable(signal));
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(abortError(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      pending.then(
        (value) => (signal.removeEventListener('abort', onAbort), resolve(value)),
        (error: unknown) => (signal.removeEventListener('abort', onAbort), reject(error instanceof Error ? error : new Error(String(error)))),
      );
    });
  }

  private describe(): string {
    return `${this.namespace}/${this.name}`;
  }
}

type RequestOptions = NonNullable<Parameters<LeaseApi['readNamespacedLease']>[1]>;

/** client-node's per-call middleware (as its setHeaderOptions does) that hands the signal to fetch. */
function abortable(signal: AbortSignal): RequestOptions {
  const middleware: ObservableMiddleware = {
    pre: (context) => {
      context.setSignal(signal);
      return new Observable(Promise.resolve(context));
    },
    post: (response) => new Observable(Promise.resolve(response)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

function recordOf(spec: V1LeaseSpec | undefined): string {
  const time = (t: unknown): string => (t instanceof Date ? t.toISOString() : typeof t === 'string' ? t : '');
  return JSON.stringify([spec?.holderIdentity ?? '', spec?.leaseDurationSeconds ?? 0, time(spec?.acquireTime), time(spec?.renewTime), spec?.leaseTransitions ?? 0]);
}

function isStatus(error: unknown, code: number): boolean {
  return error instanceof ApiException && error.code === code;
}

function describe(error: unknown): string {
  if (error instanceof ApiException) return `HTTP ${error.code}`;
  return error instanceof Error ? error.message : String(error);
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
