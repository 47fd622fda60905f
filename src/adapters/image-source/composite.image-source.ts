/**
 * One entry point for every image reference: http(s) URLs (HttpImageSource), `s3://bucket/key`
 * (the object store), and local files when allowed (the CLI; never the network service).
 * An abort signal ends every kind of read at once with CancelledError: the http download's socket
 * is closed, a file read is aborted, and an object store read (whose port takes no signal) is left
 * to finish on its own while the caller gets its answer now.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { SourceConfig } from '../../config/config.js';
import {
  CancelledError,
  FacematchError,
  InvalidArgumentError,
  SourceNotFoundError,
  SourceTooLargeError,
} from '../../domain/errors.js';
import { redactUrl } from '../../domain/redact.js';
import type { ImageSource } from '../../ports/image-source.js';
import type { ObjectStore } from '../../ports/object-store.js';

export interface CompositeOptions {
  http: ImageSource;
  /** Reads `s3://bucket/key`; the bucket must be the store's. */
  objects?: { store: ObjectStore; bucket: string };
  /** Accept plain paths (CLI only). */
  localFiles: boolean;
  config: SourceConfig;
}

export class CompositeImageSource implements ImageSource {
  constructor(private readonly o: CompositeOptions) {}

  async read(ref: string, signal?: AbortSignal): Promise<Uint8Array> {
    if (ref.trim() === '') throw new InvalidArgumentError('no image given: pass an http(s) URL or s3://bucket/key');
    if (signal?.aborted) throw cancelled(ref, signal);
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(ref)?.[1]?.toLowerCase();
    if (scheme === 'http' || scheme === 'https') return this.o.http.read(ref, signal);
    if (scheme === 's3') return this.readObject(ref, signal);
    if (scheme && scheme.length > 1) throw new InvalidArgumentError(`unsupported URL scheme "${scheme}:" in ${redactUrl(ref)}`);
    if (!this.o.localFiles) throw new InvalidArgumentError(`"${redactUrl(ref)}" is not a URL; use http(s) or s3://bucket/key`);
    return this.readLocal(ref, signal);
  }

  private async readObject(ref: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const m = /^s3:\/\/([^/]+)\/(.+)$/i.exec(ref);
    if (!m) throw new InvalidArgumentError(`"${redactUrl(ref)}" is not of the form s3://bucket/key`);
    const [, bucket, key] = m;
    if (!this.o.objects) throw new InvalidArgumentError('s3:// sources are not configured');
    if (bucket !== this.o.objects.bucket) {
      throw new InvalidArgumentError(`bucket "${bucket}" is not the configured bucket "${this.o.objects.bucket}"`);
    }
    return untilAborted(this.o.objects.store.get(key!, signal), ref, signal);
  }

  private async readLocal(file: string, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const full = path.resolve(file);
    try {
      const s = await stat(full);
      if (!s.isFile()) throw new SourceNotFoundError(`${full} is not a file`);
      if (s.size > this.o.config.maxBytes) {
        throw new SourceTooLargeError(`${full} is ${s.size} bytes; the limit is ${this.o.config.maxBytes}`);
      }
      return await readFile(full, signal ? { signal } : {});
    } catch (error) {
      if (error instanceof FacematchError) throw error;
      if (signal?.aborted) throw cancelled(full, signal);
      throw new SourceNotFoundError(`cannot read ${full}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
        cause: error,
      });
    }
  }
}

function cancelled(ref: string, signal: AbortSignal): CancelledError {
  return new CancelledError(`reading ${redactUrl(ref)} cancelled`, { cause: signal.reason });
}

/** `work`'s outcome, or CancelledError as soon as `signal` aborts (the work itself is not stopped). */
function untilAborted<T>(work: Promise<T>, ref: string, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(cancelled(ref, signal));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  // A read that fails after the caller left must not become an unhandled rejection.
  work.catch(() => undefined);
  return Promise.race([work, aborted]).finally(() => signal.removeEventListener('abort', onAbort!));
}
