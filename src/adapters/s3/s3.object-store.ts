/**
 * ObjectStore on S3 (MinIO, versitygw, AWS S3 ...) with the `minio` client: one bucket, created by
 * init() when missing; objects written with their Content-Type; a location's `url` is a presigned
 * GET URL that expires after `presignSeconds`.
 *
 * Keys follow the port's rules (checkObjectKey in ports/object-store.ts), so a key valid in one store is valid in
 * the other. An S3 PUT replaces an object atomically: a reader gets the old bytes or the new ones.
 *
 * Failures: a server that cannot be reached (refused, reset, no answer within `timeoutMs`), refuses
 * the credentials, lost the bucket or answers 5xx gives a BackendUnavailableError naming it
 * (`S3 at http://host:port, bucket b`); a missing object on get() a SourceNotFoundError. The client
 * keeps no state about the server, so the same store works again as soon as the server is back.
 */
import type { Readable } from 'node:stream';
import type { Client } from 'minio';
import type { S3Config } from '../../config/config.js';
import { s3Client } from './s3.client.js';
import {
  BackendUnavailableError,
  FacematchError,
  InternalError,
  InvalidArgumentError,
  SourceNotFoundError,
} from '../../domain/errors.js';
import { checkObjectKey, checkReadableKey, type ObjectLocation, type ObjectStore } from '../../ports/object-store.js';

/** The part of the minio client the store uses (a unit test hands it a fake). */
export type S3Client = Pick<Client, 'bucketExists' | 'makeBucket' | 'putObject' | 'getObject' | 'statObject' | 'removeObject' | 'presignedGetObject'>;

export interface S3ObjectStoreOptions {
  client: S3Client;
  bucket: string;
  region: string;
  /** Lifetime of the presigned GET URLs of locations. */
  presignSeconds: number;
  /** Names the server in messages, e.g. `S3 at http://127.0.0.1:9000`. */
  where: string;
  /** Deadline of one request (a whole object for get and put); default 15 s. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 15_000;
/** Answers that mean the store cannot serve us (credentials, bucket, server trouble), not a bug of ours. */
const UNAVAILABLE = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'NoSuchBucket',
  'InternalError',
  'ServiceUnavailable',
  'SlowDown',
  'RequestTimeout',
  'RequestTimeTooSkewed',
]);
const MISSING = new Set(['NoSuchKey', 'NotFound']);
/** A keep-alive connection the server closed as we reused it: the request never ran, retry once. */
const STALE_CONNECTION = new Set(['ECONNRESET', 'EPIPE']);

export class S3ObjectStore implements ObjectStore {
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly region: string;
  private readonly presignSeconds: number;
  private readonly where: string;
  private readonly timeoutMs: number;

  constructor(options: S3ObjectStoreOptions) {
    this.client = options.client;
    this.bucket = options.bucket;
    this.region = options.region;
    this.presignSeconds = options.presignSeconds;
    this.where = `${options.where}, bucket ${options.bucket}`;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** A store on a minio client of `config.endpoint` (no request is made before the first call). */
  static open(config: S3Config, bucket: string, options: { timeoutMs?: number } = {}): S3ObjectStore {
    const { client, origin } = s3Client(config);
    return new S3ObjectStore({
      client,
      bucket,
      region: config.region,
      presignSeconds: config.presignSeconds,
      where: `S3 at ${origin}`,
      ...options,
    });
  }

  async init(): Promise<void> {
    if (await this.call('bucketExists', () => this.client.bucketExists(this.bucket))) return;
    try {
      await this.call('makeBucket', () => this.client.makeBucket(this.bucket, this.region));
    } catch (error) {
      // Another replica made it meanwhile. Servers do not agree on how they say so: S3 answers
      // BucketAlreadyOwnedByYou, versitygw 1.7 sometimes answers 500 to the losing one of two
      // concurrent creates. Whatever the answer, a bucket that now exists is what init wants.
      if (!(await this.call('bucketExists', () => this.client.bucketExists(this.bucket)))) throw error;
    }
  }

  async put(key: string, bytes: Uint8Array, contentType: string): Promise<ObjectLocation> {
    checkObjectKey(key);
    const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    await this.call('put', () => this.client.putObject(this.bucket, key, body, body.length, { 'Content-Type': contentType }), key);
    return this.location(key);
  }

  async get(key: string, signal?: AbortSignal): Promise<Uint8Array> {
    checkReadableKey(key);
    return this.call(
      'get',
      async (deadline) => {
        const stream = await this.client.getObject(this.bucket, key);
        // The body stops streaming at the deadline, or as soon as the caller goes away.
        return readAll(stream, signal ? AbortSignal.any([deadline, signal]) : deadline);
      },
      key,
    );
  }

  async exists(key: string): Promise<boolean> {
    checkObjectKey(key);
    try {
      await this.call('stat', () => this.client.statObject(this.bucket, key), key);
      return true;
    } catch (error) {
      if (error instanceof SourceNotFoundError) return false;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    checkObjectKey(key);
    try {
      // S3 answers 204 for a missing key too; some servers answer NoSuchKey.
      await this.call('delete', () => this.client.removeObject(this.bucket, key), key);
    } catch (error) {
      if (error instanceof SourceNotFoundError) return;
      throw error;
    }
  }

  async location(key: string): Promise<ObjectLocation> {
    checkObjectKey(key);
    const url = await this.call('presign', () => this.client.presignedGetObject(this.bucket, key, this.presignSeconds), key);
    return { bucket: this.bucket, key, url };
  }

  async ping(): Promise<void> {
    if (!(await this.call('bucketExists', () => this.client.bucketExists(this.bucket)))) {
      throw new BackendUnavailableError(`${this.where}: the bucket does not exist`);
    }
  }

  /**
   * Runs one request with a deadline, retrying once on a stale keep-alive connection; typed errors
   * out. `fn` gets a signal that aborts when the deadline passes (to stop reading a body).
   */
  private async call<T>(what: string, fn: (signal: AbortSignal) => Promise<T>, key?: string): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const controller = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const error = new Error(`no answer to ${what} within ${this.timeoutMs} ms`);
          controller.abort(error);
          reject(error);
        }, this.timeoutMs);
      });
      try {
        return await Promise.race([fn(controller.signal), deadline]);
      } catch (error) {
        if (attempt === 1 && STALE_CONNECTION.has(errorCode(error) ?? '')) continue;
        throw this.failure(error, what, key);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  private failure(error: unknown, what: string, key: string | undefined): FacematchError {
    if (error instanceof FacematchError) return error;
    const code = s3Code(error);
    const message = error instanceof Error ? error.message || code || error.name : String(error);
    if (code !== undefined && MISSING.has(code) && key !== undefined) {
      return new SourceNotFoundError(`object ${key} not found in ${this.bucket}`, { cause: error });
    }
    if (code !== undefined && UNAVAILABLE.has(code)) {
      return new BackendUnavailableError(`${this.where}: ${what}${key === undefined ? '' : ` ${key}`}: ${code}: ${message}`, { cause: error });
    }
    if (code !== undefined) {
      return new InternalError(`${this.where}: ${what}${key === undefined ? '' : ` ${key}`}: ${code}: ${message}`, { cause: error });
    }
    // The client's own argument checks (keys are checked before, so rare).
    if (error instanceof Error && /^Invalid/.test(error.name)) return new InvalidArgumentError(`${this.where}: ${message}`, { cause: error });
    // Network: refused, reset, unreachable, no answer in time.
    return new BackendUnavailableError(`${this.where}: ${what}: ${describe(error)}`, { cause: error });
  }
}

/** The S3 error code of an answer from the server (`NoSuchKey`, `AccessDenied` ...), if it is one. */
function s3Code(error: unknown): string | undefined {
  if (error instanceof Error && error.name === 'S3Error' && 'code' in error && typeof error.code === 'string' && error.code) return error.code;
  return undefined;
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

/** A message for any error; a failed connect to several addresses is an AggregateError with none. */
function describe(error: unknown): string {
  if (error instanceof AggregateError && !error.message) return error.errors.map(describe).join('; ') || 'connection failed';
  if (error instanceof Error) return error.message || errorCode(error) || error.name;
  return String(error);
}

async function readAll(stream: Readable, signal: AbortSignal): Promise<Uint8Array> {
  const onAbort = () => stream.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return new Uint8Array(Buffer.concat(chunks));
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
