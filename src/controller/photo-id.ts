/**
 * Photo ids of a PhotoBatch derive from its source, so applying the same batch twice processes the
 * same ids again (ProcessPhoto is idempotent on them) and never records a photo twice.
 *
 * The mapping is an escape into the id grammar (src/domain/ids.ts): letters, digits, '.' and '-'
 * stay; every other byte of the UTF-8 reference, '_' included, becomes `_XX` (two upper-case hex
 * digits). It is injective, so two references never share an id silently. A reference whose
 * escape is longer than MAX_ID_LENGTH keeps the first whole escapes that fit and ends with `_h` and
 * 24 hex digits of its SHA-256: `_h` is not an escape, so such an id never equals an escaped one,
 * and two long references share an id only if they share 96 bits of SHA-256.
 *
 *   s3://bucket/key         -> escape("bucket/key")     e.g. "shoots/a 1.jpg" -> "shoots_2Fa_201.jpg"
 *   https://host/path?query -> escape("host/path")      (a presigned URL keeps its id when re-signed)
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../domain/errors.js';
import { MAX_ID_LENGTH, quote } from '../domain/ids.js';
import { redactUrl } from '../domain/redact.js';

const KEEP = /[A-Za-z0-9.-]/;
const HASH_HEX = 24;

function escapeRef(ref: string): string[] {
  const parts: string[] = [];
  for (const char of ref) {
    if (KEEP.test(char)) {
      parts.push(char);
      continue;
    }
    for (const byte of Buffer.from(char, 'utf8')) parts.push(`_${byte.toString(16).toUpperCase().padStart(2, '0')}`);
  }
  return parts;
}

/** The photo id of a source reference; the reference must start with a letter or digit. */
export function photoIdFor(ref: string): string {
  if (!/^[A-Za-z0-9]/.test(ref)) throw new InvalidArgumentError(`photo reference ${quote(ref)} must start with a letter or digit`);
  const parts = escapeRef(ref);
  const escaped = parts.join('');
  if (escaped.length <= MAX_ID_LENGTH) return escaped;
  const room = MAX_ID_LENGTH - 2 - HASH_HEX;
  let head = '';
  for (const part of parts) {
    if (head.length + part.length > room) break;
    head += part;
  }
  const digest = createHash('sha256').update(ref, 'utf8').digest('hex').slice(0, HASH_HEX);
  return `${head}_h${digest}`;
}

/** The photo id of an object of an s3 source. */
export const s3PhotoId = (bucket: string, key: string): string => photoIdFor(`${bucket}/${key}`);

/**
 * The photo id of a URL of a urls source: its host and path (no scheme, credentials, query or
 * fragment); `s3://bucket/key` gets the id an s3 source gives the same object.
 */
export function urlPhotoId(url: string): string {
  // The service reads `s3://bucket/key` as written (composite.image-source.ts): the key is the raw
  // text, which URL parsing would percent-encode ("a 1.jpg" -> "a%201.jpg").
  const s3 = /^s3:\/\/([^/?#]+)\/(.+)$/i.exec(url);
  if (s3) return s3PhotoId(s3[1]!, s3[2]!);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new InvalidArgumentError(`photo URL ${quote(redactUrl(url))} does not parse`, { cause: error });
  }
  return photoIdFor(`${parsed.host}${parsed.pathname}`);
}

/**
 * The ids of a urls source, in order; throws InvalidArgumentError naming the first two URLs that
 * map to one id (the same host and path with different queries) by index, and the URL without its
 * credentials or query.
 */
export function urlPhotoIds(urls: readonly string[]): string[] {
  const seen = new Map<string, number>();
  return urls.map((url, i) => {
    const id = urlPhotoId(url);
    const before = seen.get(id);
    if (before !== undefined) {
      throw new InvalidArgumentError(
        `urls[${before}] and urls[${i}] are the same photo ${quote(id)}: ${quote(redactUrl(url))} (only their queries differ)`,
      );
    }
    seen.set(id, i);
    return id;
  });
}
