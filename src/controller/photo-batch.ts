/**
 * The PhotoBatch resource (k8s/crds/photobatches.facematch.io.yaml) and the status it should have.
 *
 * Status follows the API conventions: four conditions (Progressing, Complete, Failed, Suspended),
 * exactly one of them True, each with a reason, a message and the generation it describes, plus
 * `observedGeneration`; no bare phase. `batchStatus` is pure: the reconciler gives it what it saw
 * and writes what it returns through the status subresource.
 */
import type { PhotoKind } from '../ports/photo-processor.js';

export const GROUP = 'facematch.io';
export const VERSION = 'v1alpha1';
export const PLURAL = 'photobatches';
export const KIND = 'PhotoBatch';

export const DEFAULT_CONCURRENCY = 4;
export const MAX_CONCURRENCY = 64;
/** status.lastFailures keeps this many (the CRD's maxItems). */
export const MAX_LAST_FAILURES = 10;

export interface PhotoBatchSource {
  s3?: { bucket: string; prefix?: string };
  urls?: string[];
  /** Every photo already recorded for the event. */
  event?: Record<string, never>;
}

export interface PhotoBatchSpec {
  eventId: string;
  source: PhotoBatchSource;
  kind?: PhotoKind;
  userId?: string;
  concurrency?: number;
  suspend?: boolean;
  serviceAddress?: string;
}

export type ConditionType = 'Progressing' | 'Complete' | 'Failed' | 'Suspended';
export const CONDITION_TYPES: readonly ConditionType[] = ['Progressing', 'Complete', 'Failed', 'Suspended'];

/** metav1.Condition. */
export interface Condition {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration: number;
}

export interface PhotoFailure {
  photoId: string;
  code: string;
  message: string;
}

export interface PhotoBatchStatus {
  observedGeneration?: number;
  total?: number;
  processed?: number;
  matched?: number;
  failed?: number;
  progress?: string;
  /** The source position below which every photo is done: where a restart resumes. */
  cursor?: string;
  startedAt?: string;
  completedAt?: string;
  lastFailures?: PhotoFailure[];
  conditions?: Condition[];
}

export type BatchState = 'Suspended' | 'Progressing' | 'Complete' | 'Failed';

/** What the reconciler saw of the batch's work since the last status. */
export interface BatchObservation {
  /** Counts and cursor of the work (the runner's latest progress); absent: unchanged. */
  progress?: {
    processed: number;
    matched: number;
    failed: number;
    lastFailures: readonly PhotoFailure[];
    cursor?: string;
    /** Known once the listing reached its end. */
    total?: number;
  };
  /** Every photo is done. */
  done?: boolean;
  /** The batch cannot go on (a bucket that does not exist, URLs that share an id). */
  fatal?: { reason: string; message: string };
  /** Work is waiting on something that should come back (the service is down): still Progressing. */
  stalled?: { reason: string; message: string };
  /** The reconcile itself failed: the generation is not recorded as observed. */
  reconcileError?: { reason: string; message: string };
}

export interface BatchDecision {
  state: BatchState;
  status: PhotoBatchStatus;
}

function progressText(processed: number, total: number | undefined): string {
  return `${processed}/${total ?? '?'}`;
}

/**
 * Sets one condition as meta.SetStatusCondition does: lastTransitionTime moves only when the
 * status changes.
 */
function setCondition(conditions: Condition[], next: Omit<Condition, 'lastTransitionTime'>, now: string): Condition[] {
  const current = conditions.find((c) => c.type === next.type);
  const lastTransitionTime = current && current.status === next.status ? current.lastTransitionTime : now;
  const condition: Condition = { ...next, lastTransitionTime };
  return current ? conditions.map((c) => (c.type === next.type ? condition : c)) : [...conditions, condition];
}

/**
 * The batch's state and the status to write, from its spec, its current status, its generation
 * and what the reconciler observed. Complete and Failed are final: a later edit of the spec is
 * observed but starts nothing. A failed reconcile keeps observedGeneration (of the status and of
 * every condition) as it was: the generation was not acted on.
 */
export function batchStatus(
  spec: PhotoBatchSpec,
  current: PhotoBatchStatus,
  generation: number,
  observation: BatchObservation,
  now: Date,
): BatchDecision {
  const at = now.toISOString();
  const status: PhotoBatchStatus = { ...current };
  const p = observation.progress;
  if (p) {
    status.processed = p.processed;
    status.matched = p.matched;
    status.failed = p.failed;
    status.lastFailures = p.lastFailures.slice(-MAX_LAST_FAILURES);
    if (p.cursor !== undefined) status.cursor = p.cursor;
    if (p.total !== undefined) status.total = p.total;
  }
  status.processed ??= 0;
  status.matched ??= 0;
  status.failed ??= 0;
  status.progress = progressText(status.processed, status.total);

  const wasFinal = CONDITION_TYPES.find(
    (t) => (t === 'Complete' || t === 'Failed') && current.conditions?.some((c) => c.type === t && c.status === 'True'),
  );
  const observed = observation.reconcileError ? (current.observedGeneration ?? 0) : generation;

  let state: BatchState;
  let reason: string;
  let message: string;
  if (wasFinal === 'Complete' || wasFinal === 'Failed') {
    state = wasFinal;
    const c = current.conditions!.find((x) => x.type === wasFinal)!;
    reason = c.reason;
    message = c.message;
  } else if (observation.fatal) {
    state = 'Failed';
    ({ reason, message } = observation.fatal);
  } else if (observation.done) {
    state = 'Complete';
    reason = status.failed > 0 ? 'CompletedWithFailures' : 'Completed';
    message = `${status.processed} photos processed: ${status.matched} with a match, ${status.failed} failed`;
  } else if (spec.suspend) {
    state = 'Suspended';
    reason = 'Suspended';
    message = `suspended at ${status.progress}; set spec.suspend to false to resume`;
  } else {
    state = 'Progressing';
    const why = observation.reconcileError ?? observation.stalled;
    reason = why?.reason ?? (status.total === undefined ? 'Listing' : 'Processing');
    message = why?.message ?? `${status.progress} photos processed`;
  }

  if (state !== 'Suspended' && !wasFinal) status.startedAt ??= at;
  if ((state === 'Complete' || state === 'Failed') && !wasFinal) status.completedAt ??= at;

  let conditions = current.conditions ?? [];
  for (const type of CONDITION_TYPES) {
    const prior = conditions.find((c) => c.type === type);
    const keepGeneration = observation.reconcileError ? (prior?.observedGeneration ?? observed) : observed;
    conditions = setCondition(
      conditions,
      type === state
        ? { type, status: 'True', reason, message, observedGeneration: keepGeneration }
        : { type, status: 'False', reason: `Not${type}`, message: `the batch is ${state}`, observedGeneration: keepGeneration },
      at,
    );
  }
  status.conditions = conditions;
  status.observedGeneration = observed;
  if (status.observedGeneration === 0 && current.observedGeneration === undefined) delete status.observedGeneration;
  return { state, status };
}

/** The concurrency to run at: the spec's, defaulted and bounded as the CRD bounds it. */
export function concurrencyOf(spec: PhotoBatchSpec): number {
  const n = spec.concurrency ?? DEFAULT_CONCURRENCY;
  return Math.min(MAX_CONCURRENCY, Math.max(1, Math.trunc(n)));
}
