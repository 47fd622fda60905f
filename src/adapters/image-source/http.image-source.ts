/**
 * Downloads images over http(s) with a byte limit, a timeout over the whole download, at most
 * MAX_REDIRECTS redirects, and the address policy applied to every connection. An abort signal stops
 * the download at once (the socket is destroyed) with CancelledError. Messages name URLs through
 * redactUrl: no credentials, no query string.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import type { SourceConfig } from '../../config/config.js';
import {
  CancelledError,
  FacematchError,
  InvalidArgumentError,
  SourceForbiddenError,
  SourceNotFoundError,
  SourceTooLargeError,
  SourceUnreachableError,
} from '../../domain/errors.js';
import { redactUrl } from '../../domain/redact.js';
import type { ImageSource } from '../../ports/image-source.js';
import type { AddressPolicy } from './address-policy.js';

export const MAX_REDIRECTS = 5;

export class HttpImageSource implements ImageSource {
  private readonly lookup: LookupFunction;

  constructor(
    private readonly config: SourceConfig,
    private readonly policy: AddressPolicy,
  ) {
    this.lookup = (hostname, options, callback) => {
      dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
        if (error) return callback(error, '', 0);
        for (const a of addresses) {
          const why = this.policy.refusal(a.address);
          if (why) return callback(new SourceForbiddenError(`${hostname} resolves to ${why}; refused (SSRF guard)`), '', 0);
        }
        if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
        const first = addresses[0]!;
        callback(null, first.address, first.family);
      });
    };
  }

  async read(ref: string, signal?: AbortSignal): Promise<Uint8Array> {
    const start = parseHttpUrl(ref);
    const deadline = Date.now() + this.config.timeoutMs;
    let url = start;
    for (let hop = 0; ; hop++) {
      const answer = await this.get(url, deadline, signal);
      if ('redirect' in answer) {
        if (hop >= MAX_REDIRECTS) throw new SourceUnreachableError(`${redactUrl(start.href)}: more than ${MAX_REDIRECTS} redirects`);
        url = parseHttpUrl(new URL(answer.redirect, url).href);
        continue;
      }
      return answer.body;
    }
  }

  private get(url: URL, deadline: number, signal: AbortSignal | undefined): Promise<{ body: Uint8Array } | { redirect: string }> {
    const { maxBytes, timeoutMs } = this.config;
    const shown = redactUrl(url.href);
    if (signal?.aborted) return Promise.reject(cancelled(shown, signal));
    // An address literal is connected to without a DNS lookup, so it is checked here.
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (isIP(host)) {
      const why = this.policy.refusal(host);
      if (why) return Promise.reject(new SourceForbiddenError(`${shown}: ${why}; refused (SSRF guard)`));
    }
    const client = url.protocol === 'https:' ? https : http;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const answer = new Promise<{ body: Uint8Array } | { redirect: string }>((resolve, reject) => {
      const fail = (error: unknown): void => {
        req.destroy();
        if (error instanceof FacematchError) return reject(error);
        const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        reject(new SourceUnreachableError(`cannot download ${shown}: ${code}`, { cause: error }));
      };
      timer = setTimeout(
        () => fail(new SourceUnreachableError(`cannot download ${shown}: no complete answer within ${timeoutMs} ms`)),
        Math.max(0, deadline - Date.now()),
      );
      onAbort = () => fail(cancelled(shown, signal!));
      signal?.addEventListener('abort', onAbort, { once: true });
      const req = client.get(url, { lookup: this.lookup, headers: { 'user-agent': 'facematch' } }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400 && res.headers.location) {
          res.resume();
          return resolve({ redirect: res.headers.location });
        }
        if (status === 404 || status === 410) {
          res.resume();
          return reject(new SourceNotFoundError(`${shown} answered ${status}`));
        }
        if (status < 200 || status >= 300) {
          res.resume();
          return reject(new SourceUnreachableError(`${shown} answered ${status} ${res.statusMessage ?? ''}`.trim()));
        }
        const declared = Number(res.headers['content-length'] ?? NaN);
        if (declared > maxBytes) return fail(new SourceTooLargeError(`${shown} is ${declared} bytes; the limit is ${maxBytes}`));
        // With a declared length the body is copied into one buffer as it arrives: each chunk is
        // garbage at once, and the photo is never held twice (the chunks and their concatenation).
        // The buffer is the photo's alone, so the inference pool can hand it to a worker as is.
        const into = Number.isSafeInteger(declared) && declared >= 0 ? new Uint8Array(declared) : undefined;
        const chunks: Buffer[] = [];
        let total = 0;
        res.on('data', (chunk: Buffer) => {
          if (total + chunk.length > maxBytes) return fail(new SourceTooLargeError(`${shown} is larger than the limit of ${maxBytes} bytes`));
          if (into && total + chunk.length > into.length) return fail(new SourceUnreachableError(`${shown} sent more than its declared ${declared} bytes`));
          if (into) into.set(chunk, total);
          else chunks.push(chunk);
          total += chunk.length;
        });
        res.on('end', () => {
          if (!res.complete || (into && total !== into.length)) return fail(new SourceUnreachableError(`download of ${shown} was cut short`));
          resolve({ body: into ?? Buffer.concat(chunks, total) });
        });
        res.on('error', fail);
      });
      req.on('error', fail);
    });
    // Whatever the outcome: no timer left running, and no listener left on a signal that may outlive the download.
    return answer.finally(() => {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    });
  }
}

/** The error of a download stopped by its caller; the signal's reason is the cause. */
function cancelled(shown: string, signal: AbortSignal): CancelledError {
  return new CancelledError(`download of ${shown} cancelled`, { cause: signal.reason });
}

function parseHttpUrl(ref: string): URL {
  let url: URL;
  try {
    url = new URL(ref);
  } catch {
    throw new InvalidArgumentError(`"${redactUrl(ref)}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`unsupported URL scheme "${url.protocol}" in ${redactUrl(ref)}; use http(s) or s3://bucket/key`);
  }
  return url;
}
