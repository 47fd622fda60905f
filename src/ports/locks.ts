/**
 * Mutual exclusion by key across every process that shares the stores: one writer of a photo (and
 * of a user's enrolment) at a time. Envoy retries and hedges, so the same photo id can reach two
 * replicas at once; the write phase of a request (vectors, annotated copy, records) runs under its
 * keys, and the one that takes them last writes last and wins.
 */
export interface HeldLocks {
  /** Aborted if the locks are lost while held (the connection that holds them broke). */
  readonly lost: AbortSignal;
}

export interface KeyedLocks {
  /**
   * Runs `fn` while holding exclusive locks on every key. Keys are taken in sorted order, so two
   * callers cannot deadlock. Waits while another holder has one, until `signal` aborts (then
   * CancelledError) or the store's wait bound passes (BackendUnavailableError naming the key).
   */
  withLocks<T>(keys: readonly string[], fn: (held: HeldLocks) => Promise<T>, signal?: AbortSignal): Promise<T>;
  close(): Promise<void>;
}

/** The lock keys of a photo and of a user: one namespace each. */
export const photoLock = (photoId: string): string => `photo:${photoId}`;
export const userLock = (userId: string): string => `user:${userId}`;
