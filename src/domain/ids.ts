/**
 * The grammar of the ids a caller gives (photo, user and event ids) and the bounds of the other
 * request fields, checked before any work: a request that passes never fails later because of an
 * id. Every store key built from ids must therefore be valid wherever it goes:
 *
 *   annotated copy   object key `annotated/<event>/<photo>.jpg`: both object stores take keys of
 *                    [A-Za-z0-9._/-] only, whose segments are at most 200 characters and never
 *                    start with '.' (checkObjectKey: the local store's temporary files, room for
 *                    them within a file system's 255-byte names; the S3 gateway keeps objects as
 *                    files too); a key is at most 1024 bytes (S3).
 *   vectors          Milvus VarChar primary key `<photo>/<face>` or `<user>/<photo>`, event_id (the
 *                    partition key), photo_id, user_id: at most 1024 bytes each (max_length).
 *   match records    PostgreSQL text: no limit that an id reaches.
 *
 * Hence: a letter or digit, then letters, digits, '.', '_' and '-', at most 128 characters. The
 * longest key is 10 + 128 + 1 + 128 + 4 = 271 bytes, the longest vector id 257. (':' and '@', which
 * were allowed before, are refused: no object key may hold them, and a photo or event id becomes
 * one after the photo was fetched, analysed and its vectors written.)
 *
 * Error messages quote at most ECHO_CHARS characters of what the caller sent (`quote`): a message
 * travels back in a gRPC trailer, and an echoed megabyte breaks the connection it travels on.
 */
import { InvalidArgumentError } from './errors.js';

/** Longest photo, user or event id. */
export const MAX_ID_LENGTH = 128;
/** Longest image URL (an S3 presigned URL with a session token is about 1.5-2 KB). */
export const MAX_URL_LENGTH = 4096;
/** SearchFaces answers at most this many matches (a larger limit is lowered to it). */
export const MAX_SEARCH_LIMIT = 100;
/** At most this many characters of a caller's value appear in an error message. */
export const ECHO_CHARS = 64;

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const ID_RULE = `1-${MAX_ID_LENGTH} characters of letters, digits and . _ - (starting with a letter or digit)`;

/** A caller's value as an error message may show it: JSON-quoted, cut to ECHO_CHARS characters. */
export function quote(value: string): string {
  if (value.length <= ECHO_CHARS) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, ECHO_CHARS))}… (${value.length} characters)`;
}

/** Returns `value` when it is a valid id; throws InvalidArgumentError naming `what` otherwise. */
export function checkId(what: string, value: string | undefined): string {
  if (!value) throw new InvalidArgumentError(`${what} is required`);
  if (value.length > MAX_ID_LENGTH || !ID.test(value)) {
    throw new InvalidArgumentError(`${what} ${quote(value)} must be ${ID_RULE}`);
  }
  return value;
}

