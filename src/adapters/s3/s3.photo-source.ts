/**
 * The `s3` source of a PhotoBatch: every object under `s3://bucket/prefix`, one ListObjectsV2
 * request per page, in key order (UTF-8 byte order, S3's). A photo's position is its object key and
 * a page token is a key: the next request lists from StartAfter = token, so a batch resumes after
 * the key in its cursor and nothing is kept between pages. Photo ids are `photoIdFor("bucket/key")`
 * (s3PhotoId). A `urls` source gives `s3://bucket/key` the same id only for keys that URL parsing
 * leaves alone: `new URL` percent-encodes spaces and non-ASCII ("a 1.jpg" -> "a%201.jpg").
 *
 * "Folder" placeholders (keys ending in '/', made by consoles) are skipped; nothing else is: a
 * non-image goes to the service and is recorded as failed, as the user expects to see it.
 *
 * Why a hand-built ListObjectsV2 request and not minio's listObjectsV2Query: that call asks for
 * `encoding-type=url` and then URL-decodes every key whether or not the server encoded it, and reads
 * the XML with number parsing on. versitygw (the test server) ignores encoding-type, so a key with
 * '%' throws URIError, 'a+b.jpg' comes back as 'a b.jpg', and '0001' as '1' — and a wrong key used
 * as StartAfter skips photos without a word. Here the request is signed and sent by the same client
 * (makeRequestAsync), the keys are read as text and decoded only when the answer says
 * `<EncodingType>url</EncodingType>` (AWS, MinIO).
 *
 * Failures: a missing bucket is a SourceNotFoundError; a server that cannot be reached (refused,
 * reset, no answer within `timeoutMs`), refuses the credentials or answers 5xx gives a
 * BackendUnavailableError naming it; an aborted signal a CancelledError at once (the request is
 * dropped, its socket closed when the answer comes).
 */
import type { IncomingMessage } from 'node:http';
import type { Client } from 'minio';
import type { S3Config } from '../../config/config.js';
import { s3Client } from './s3.client.js';
import { s3PhotoId } from '../../controller/photo-id.js';
import {
  BackendUnavailableError,
  CancelledError,
  FacematchError,
  InternalError,
  InvalidArgumentError,
  SourceNotFoundError,
} from '../../domain/errors.js';
import type { PhotoSource, SourcePage, SourcePhoto } from '../../ports/photo-source.js';

/** The part of the minio client the source uses (a unit test hands it a fake). */
export type S3ListClient = Pick<Client, 'makeRequestAsync'>;

export interface S3PhotoSourceOptions {
  client: S3ListClient;
  bucket: string;
  /** Keys start with it; '' lists the whole bucket. */
  prefix: string;
  /** Keys per request, 1..1000 (S3's MaxKeys); default 1000. */
  pageSize?: number;
  /** Names the server in messages, e.g. `S3 at http://127.0.0.1:9000`. */
  where: string;
  /** Deadline of one page (request and body); default 15 s. */
  timeoutMs?: number;
}

export const MAX_PAGE_SIZE = 1000;
const DEFAULT_TIMEOUT_MS = 15_000;
/** A page of 1000 keys of at most 1024 bytes is about 1.5 MB of XML; more is not a listing. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MISSING = new Set(['NoSuchBucket', 'NotFound']);
/** Answers that mean the store cannot serve us now (credentials, server trouble), not a bug of ours. */
const UNAVAILABLE = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'InternalError',
  'ServiceUnavailable',
  'SlowDown',
  'RequestTimeout',
  'RequestTimeTooSkewed',
]);
/** A keep-alive connection the server closed as we reused it: the request never ran, retry once. */
const STALE_CONNECTION = new Set(['ECONNRESET', 'EPIPE']);

export class S3PhotoSource implements PhotoSource {
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3ListClient;
  private readonly pageSize: number;
  private readonly where: string;
  private readonly timeoutMs: number;

  constructor(options: S3PhotoSourceOptions) {
    const pageSize = options.pageSize ?? MAX_PAGE_SIZE;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) {
      throw new InvalidArgumentError(`page size ${pageSize} is not an integer in 1..${MAX_PAGE_SIZE}`);
    }
    this.client = options.client;
    this.bucket = options.bucket;
    this.prefix = options.prefix;
    this.pageSize = pageSize;
    this.where = `${options.where}, bucket ${options.bucket}`;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** A source on a minio client of `config.endpoint` (no request is made before the first list). */
  static open(config: S3Config, bucket: string, prefix: string, options: { pageSize?: number; timeoutMs?: number } = {}): S3PhotoSource {
    const { client, origin } = s3Client(config);
    return new S3PhotoSource({ client, bucket, prefix, where: `S3 at ${origin}`, ...options });
  }

  async list(pageToken: string | undefined, signal: AbortSignal): Promise<SourcePage> {
    const startAfter = pageToken || undefined;
    const query = [`list-type=2`, `encoding-type=url`, `max-keys=${this.pageSize}`, `prefix=${rfc3986(this.prefix)}`];
    if (startAfter !== undefined) query.push(`start-after=${rfc3986(startAfter)}`);
    const xml = await this.call(signal, async (stop) => {
      const response = await this.client.makeRequestAsync({ method: 'GET', bucketName: this.bucket, query: query.join('&') });
      return readText(response, stop);
    });
    const listing = this.parse(xml);
    const photos: SourcePhoto[] = [];
    for (const key of listing.keys) {
      if (key.endsWith('/')) continue;
      photos.push({ position: key, photoId: s3PhotoId(this.bucket, key), imageUrl: `s3://${this.bucket}/${key}` });
    }
    const page: SourcePage = { photos };
    if (listing.truncated) {
      // A page of placeholders only still moves on: the token is the last key listed, not the last photo.
      const last = listing.keys.at(-1);
      if (last === undefined || (startAfter !== undefined && compareKeys(last, startAfter) <= 0)) {
        throw new InternalError(`${this.where}: the listing after ${JSON.stringify(startAfter ?? '')} says there is more but does not move on`);
      }
      page.next = last;
    }
    return page;
  }

  private parse(xml: string): { keys: string[]; truncated: boolean } {
    try {
      return parseListing(xml);
    } catch (error) {
      throw new InternalError(`${this.where}: list: the answer is not a ListBucketResult: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
  }

  /**
   * Runs one request until the deadline or the caller's signal, retrying once on a stale
   * keep-alive connection; typed errors out. `fn` gets a signal that aborts on either.
   */
  private async call<T>(signal: AbortSignal, fn: (stop: AbortSignal) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) throw this.cancelled(signal);
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(new Error(`no answer to list within ${this.timeoutMs} ms`)), this.timeoutMs);
      const onAbort = () => controller.abort(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      const stopped = new Promise<never>((_, reject) => {
        controller.signal.addEventListener('abort', () => reject(controller.signal.reason as Error), { once: true });
      });
      try {
        return await Promise.race([fn(controller.signal), stopped]);
      } catch (error) {
        if (signal.aborted) throw this.cancelled(signal);
        if (attempt === 1 && STALE_CONNECTION.has(errorCode(error) ?? '')) continue;
        throw this.failure(error);
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        // A request still out gets its answer thrown away (readText closes it).
        controller.abort(new Error('done'));
      }
    }
  }

  private cancelled(signal: AbortSignal): CancelledError {
    return new CancelledError(`listing ${this.where} cancelled`, { cause: signal.reason });
  }

  private failure(error: unknown): FacematchError {
    if (error instanceof FacematchError) return error;
    const code = s3Code(error);
    const message = error instanceof Error ? error.message || code || error.name : String(error);
    if (code !== undefined && MISSING.has(code)) {
      return new SourceNotFoundError(`bucket ${this.bucket} does not exist (${this.where})`, { cause: error });
    }
    if (code !== undefined && UNAVAILABLE.has(code)) {
      return new BackendUnavailableError(`${this.where}: list: ${code}: ${message}`, { cause: error });
    }
    if (code !== undefined) return new InternalError(`${this.where}: list: ${code}: ${message}`, { cause: error });
    // The client's own argument checks (a bucket name S3 would refuse).
    if (error instanceof Error && /^Invalid/.test(error.name)) return new InvalidArgumentError(`${this.where}: ${message}`, { cause: error });
    // Network (refused, reset, unreachable, no answer in time) or a 5xx without an S3 error body.
    return new BackendUnavailableError(`${this.where}: list: ${describe(error)}`, { cause: error });
  }
}

/**
 * The keys of a ListObjectsV2 answer, in its order, and whether more follow. Keys are XML text
 * (entities decoded, nothing trimmed), URL-decoded only if the server says it encoded them.
 */
export function parseListing(xml: string): { keys: string[]; truncated: boolean } {
  if (!/<ListBucketResult[\s>]/.test(xml)) throw new Error('no ListBucketResult element');
  const encoding = /<EncodingType>([^<]*)<\/EncodingType>/.exec(xml)?.[1]?.trim();
  const truncated = /<IsTruncated>\s*([^<]*?)\s*<\/IsTruncated>/.exec(xml)?.[1];
  if (truncated !== 'true' && truncated !== 'false') throw new Error(`IsTruncated is ${JSON.stringify(truncated ?? null)}`);
  const keys: string[] = [];
  for (const contents of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
    const text = /<Key>([^<]*)<\/Key>/.exec(contents[1]!)?.[1];
    if (text === undefined) throw new Error('an object without a Key');
    const key = unescapeXml(text);
    keys.push(encoding === 'url' ? decodeURIComponent(key.replace(/\+/g, ' ')) : key);
  }
  return { keys, truncated: truncated === 'true' };
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function unescapeXml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);|&/g, (whole, name: string | undefined) => {
    if (name === undefined) throw new Error(`a bare '&' in ${JSON.stringify(text)}`);
    if (name.startsWith('#x')) return String.fromCodePoint(Number.parseInt(name.slice(2), 16));
    if (name.startsWith('#')) return String.fromCodePoint(Number.parseInt(name.slice(1), 10));
    const char = ENTITIES[name];
    if (char === undefined) throw new Error(`unknown entity ${whole}`);
    return char;
  });
}

/** A query value as SigV4 wants it (RFC 3986: encodeURIComponent leaves !'()* as they are). */
function rfc3986(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** S3's key order: UTF-8 bytes. */
function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** The body of an answer as text; closes it when `stop` aborts or the body grows past the limit. */
async function readText(response: IncomingMessage, stop: AbortSignal): Promise<string> {
  const onStop = () => response.destroy(stop.reason instanceof Error ? stop.reason : new Error('stopped'));
  if (stop.aborted) onStop();
  stop.addEventListener('abort', onStop, { once: true });
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response) {
      const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      size += buffer.length;
      if (size > MAX_BODY_BYTES) throw new Error(`the listing is larger than ${MAX_BODY_BYTES} bytes`);
      chunks.push(buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    stop.removeEventListener('abort', onStop);
  }
}

/** The S3 error code of an answer from the server (`NoSuchBucket`, `AccessDenied` ...), if it is one. */
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
