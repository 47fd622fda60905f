/**
 * Downloads images over http(s) with a byte limit, a timeout over the whole download, at most
 * MAX_REDIRECTS redirects, and the address policy applied to every connection.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import type { SourceConfig } from '../../config/config.js';
import {
  FacematchError,
  InvalidArgumentError,
  SourceForbiddenError,
  SourceNotFoundError,
  SourceTooLargeError,
  SourceUnreachableError,
} from '../../domain/errors.js';
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

  async read(ref: string): Promise<Uint8Array> {
    const start = parseHttpUrl(ref);
    const deadline = Date.now() + this.config.timeoutMs;
    let url = start;
    for (let hop = 0; ; hop++) {
      const answer = await this.get(url, deadline);
      if ('redirect' in answer) {
        if (hop >= MAX_REDIRECTS) throw new SourceUnreachableError(`${start.href}: more than ${MAX_REDIRECTS} redirects`);
        url = parseHttpUrl(new URL(answer.redirect, url).href);
        continue;
      }
      return answer.body;
    }
  }

  private get(url: URL, deadline: number): Promise<{ body: Uint8Array } | { redirect: string }> {
    const { maxBytes, timeoutMs } = this.config;
    // An address literal is connected to without a DNS lookup, so it is checked here.
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (isIP(host)) {
      const why = this.policy.refusal(host);
      if (why) return Promise.reject(new SourceForbiddenError(`${url.href}: ${why}; refused (SSRF guard)`));
    }
    const client = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const fail = (error: unknown): void => {
        req.destroy();
        if (error instanceof FacematchError) return reject(error);
        const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        reject(new SourceUnreachableError(`cannot download ${url.href}: ${code}`, { cause: error }));
      };
      const remaining = deadline - Date.now();
      const timer = setTimeout(
        () => fail(new SourceUnreachableError(`cannot download ${url.href}: no complete answer within ${timeoutMs} ms`)),
        Math.max(0, remaining),
      );
      const req = client.get(url, { lookup: this.lookup, headers: { 'user-agent': 'facematch' } }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400 && res.headers.location) {
          res.resume();
          clearTimeout(timer);
          return resolve({ redirect: res.headers.location });
        }
        if (status === 404 || status === 410) {
          res.resume();
          clearTimeout(timer);
          return reject(new SourceNotFoundError(`${url.href} answered ${status}`));
        }
        if (status < 200 || status >= 300) {
          res.resume();
          clearTimeout(timer);
          return reject(new SourceUnreachableError(`${url.href} answered ${status} ${res.statusMessage ?? ''}`.trim()));
        }
        const declared = Number(res.headers['content-length'] ?? NaN);
        if (declared > maxBytes) {
          clearTimeout(timer);
          return fail(new SourceTooLargeError(`${url.href} is ${declared} bytes; the limit is ${maxBytes}`));
        }
        const chunks: Buffer[] = [];
        let total = 0;
        res.on('data', (chunk: Buffer) => {
          total += chunk.length;
          if (total > maxBytes) {
            clearTimeout(timer);
            fail(new SourceTooLargeError(`${url.href} is larger than the limit of ${maxBytes} bytes`));
          } else chunks.push(chunk);
        });
        res.on('end', () => {
          clearTimeout(timer);
          if (!res.complete) return fail(new SourceUnreachableError(`download of ${url.href} was cut short`));
          resolve({ body: Buffer.concat(chunks, total) });
        });
        res.on('error', (e) => {
          clearTimeout(timer);
          fail(e);
        });
      });
      req.on('error', (e) => {
        clearTimeout(timer);
        fail(e);
      });
    });
  }
}

function parseHttpUrl(ref: string): URL {
  let url: URL;
  try {
    url = new URL(ref);
  } catch {
    throw new InvalidArgumentError(`"${ref}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`unsupported URL scheme "${url.protocol}" in ${ref}; use http(s) or s3://bucket/key`);
  }
  return url;
}
