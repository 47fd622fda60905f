/**
 * Image references as they may be logged, stored or put in an error message: a URL loses its
 * credentials (`user:password@`), its query string (presigned URLs carry their signature there) and
 * its fragment. Anything else is returned as it is (a local path, a URL with nothing secret).
 */

/** Userinfo after `scheme:` and any slashes: up to the last `@` before the path, query or fragment. */
const USERINFO = /^([a-z][a-z0-9+.-]*:[/\\]*)[^/\\?#]*@/i;

/** `ref` without the credentials, query string and fragment of a URL; other strings unchanged. */
export function redactUrl(ref: string): string {
  let url: URL;
  try {
    url = new URL(ref);
  } catch {
    // Not a URL that parses: a local path stays as it is; a would-be URL still loses what might be secret.
    if (!/^[a-z][a-z0-9+.-]+:/i.test(ref)) return ref;
    return ref.replace(USERINFO, '$1').replace(/[?#][\s\S]*$/, '');
  }
  if (!url.username && !url.password && !/[?#]/.test(ref)) return ref;
  url.username = '';
  url.password = '';
  url.search = '';
  url.hash = '';
  return url.href;
}
