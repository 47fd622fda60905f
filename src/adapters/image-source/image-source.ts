/**
 * Reads an image from a local file or an http(s) URL with a byte limit, a timeout and a bounded
 * number of redirects. Failures are typed: not found, unreachable, too large.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { SourceConfig } from '../../config/config.js';
import {
  FacematchError,
  InvalidArgumentError,
  SourceNotFoundError,
  SourceTooLargeError,
  SourceUnreachableError,
} from '../../domain/errors.js';

const MAX_REDIRECTS = 5;

export function isUrl(ref: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(ref);
}

export async function readImageSource(ref: string, config: SourceConfig): Promise<Uint8Array> {
  if (ref.trim() === '') throw new InvalidArgumentError('no image given: pass a file path or an http(s) URL');
  if (!isUrl(ref)) return readLocal(ref, config);
  const url = new URL(ref);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`unsupported URL scheme "${url.protocol}" in ${ref}; use http(s) or a file path`);
  }
  return fetchUrl(url, config);
}

async function readLocal(file: string, config: SourceConfig): Promise<Uint8Array> {
  const full = path.resolve(file);
  try {
    const s = await stat(full);
    if (!s.isFile()) throw new SourceNotFoundError(`${full} is not a file`);
    if (s.size > config.maxBytes) {
      throw new SourceTooLargeError(`${full} is ${s.size} bytes; the limit is ${config.maxBytes}`);
    }
    return await readFile(full);
  } catch (error) {
    if (error instanceof FacematchError) throw error;
    throw new SourceNotFoundError(`cannot read ${full}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      cause: error,
    });
  }
}

async function fetchUrl(start: URL, config: SourceConfig): Promise<Uint8Array> {
  const signal = AbortSignal.timeout(config.timeoutMs);
  let url = start;
  for (let hop = 0; ; hop++) {
    let response: Response;
    try {
      response = await fetch(url, { redirect: 'manual', signal });
    } catch (error) {
      const reason = signal.aborted ? `no answer within ${config.timeoutMs} ms` : describe(error);
      throw new SourceUnreachableError(`cannot download ${url.href}: ${reason}`, { cause: error });
    }
    if (response.status >= 300 && response.status < 400 && response.headers.has('location')) {
      await response.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new SourceUnreachableError(`${start.href}: more than ${MAX_REDIRECTS} redirects`);
      url = new URL(response.headers.get('location')!, url);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new InvalidArgumentError(`${start.href} redirects to unsupported scheme ${url.protocol}`);
      }
      continue;
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      throw new SourceNotFoundError(`${url.href} answered ${response.status}`);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new SourceUnreachableError(`${url.href} answered ${response.status} ${response.statusText}`);
    }
    return readBody(response, url, config, signal);
  }
}

async function readBody(response: Response, url: URL, config: SourceConfig, signal: AbortSignal): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (declared > config.maxBytes) {
    await response.body?.cancel();
    throw new SourceTooLargeError(`${url.href} is ${declared} bytes; the limit is ${config.maxBytes}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of (response.body ?? []) as AsyncIterable<Uint8Array>) {
      total += chunk.length;
      if (total > config.maxBytes) {
        throw new SourceTooLargeError(`${url.href} is larger than the limit of ${config.maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof FacematchError) throw error;
    const reason = signal.aborted ? `no complete answer within ${config.timeoutMs} ms` : describe(error);
    throw new SourceUnreachableError(`download of ${url.href} failed: ${reason}`, { cause: error });
  }
  return Buffer.concat(chunks, total);
}

function describe(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
}
