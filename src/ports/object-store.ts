import { InvalidArgumentError } from '../domain/errors.js';

/** Blob storage for annotated images (and, in production, the uploaded originals): S3-shaped. */
export interface ObjectLocation {
  bucket: string;
  key: string;
  /** A URL a client can GET (presigned for S3, file:// for the embedded store). */
  url: string;
}

export interface ObjectStore {
  init(): Promise<void>;
  /** Writes atomically: a reader sees the old object or the new one, never half of one. */
  put(key: string, bytes: Uint8Array, contentType: string): Promise<ObjectLocation>;
  /** Throws SourceNotFoundError when missing. With `signal`, stops reading the object when it aborts. */
  get(key: string, signal?: AbortSignal): Promise<Uint8Array>;
  exists(key: string): Promise<boolean>;
  /** Idempotent: deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  location(key: string): Promise<ObjectLocation>;
  ping(): Promise<void>;
}

const KEY_CHARS = /^[A-Za-z0-9._/-]+$/;
/** S3's limit. */
const MAX_KEY_BYTES = 1024;
/** Leaves room for the temporary name within a file system's 255-byte name limit. */
const MAX_SEGMENT_BYTES = 200;

/**
 * The keys get() reads: the photos a photographer uploaded (`s3://bucket/day 1/IMG 0001.jpg`,
 * `été/photo.jpg`), which facematch did not name. Any UTF-8 key of at most 1024 bytes without
 * control characters or a backslash, not absolute, with no empty, `.` or `..` segment (the local
 * store maps segments to folders), no segment starting with `.` (its temporary files) and none
 * longer than 255 bytes (a file name's limit). What facematch writes keeps checkObjectKey's rules.
 */
export function checkReadableKey(key: string): void {
  const bad = (why: string): never => {
    throw new InvalidArgumentError(`invalid object key ${JSON.stringify(key.slice(0, 200))}: ${why}`);
  };
  if (typeof key !== 'string' || key.length === 0) bad('empty');
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) bad(`longer than ${MAX_KEY_BYTES} bytes`);
  if (/[\u0000-\u001f\u007f\\]/.test(key)) bad('control characters and backslashes are not allowed');
  if (key.startsWith('/')) bad('absolute');
  for (const segment of key.split('/')) {
    if (segment.length === 0) bad('empty path segment');
    if (segment === '.' || segment === '..') bad('relative path segment');
    if (segment.startsWith('.')) bad('a segment may not start with "."');
    if (Buffer.byteLength(segment, 'utf8') > 255) bad('a segment is longer than 255 bytes');
  }
}

/** The keys every ObjectStore accepts (the local folder's rules; any S3 takes them too). */
export function checkObjectKey(key: string): void {
  const bad = (why: string): never => {
    throw new InvalidArgumentError(`invalid object key ${JSON.stringify(key)}: ${why}`);
  };
  if (typeof key !== 'string' || key.length === 0) bad('empty');
  if (key.length > MAX_KEY_BYTES) bad(`longer than ${MAX_KEY_BYTES} characters`);
  if (!KEY_CHARS.test(key)) bad('only A-Z a-z 0-9 . _ / - are allowed');
  if (key.startsWith('/')) bad('absolute');
  for (const segment of key.split('/')) {
    if (segment.length === 0) bad('empty path segment');
    if (segment === '.' || segment === '..') bad('relative path segment');
    if (segment.startsWith('.')) bad('a segment may not start with "."');
    if (segment.length > MAX_SEGMENT_BYTES) bad(`a segment is longer than ${MAX_SEGMENT_BYTES} characters`);
  }
}
