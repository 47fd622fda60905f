/**
 * HTTP beside gRPC: /healthz (the process answers), /readyz (models loaded, stores reachable),
 * /metrics (Prometheus), and REST: the proto3 JSON mapping of the same RPCs (rpc.ts), run by the
 * same handlers with the same checks, bound, cancellation and error codes:
 *   POST   /v1/photos                    ProcessPhotoRequest                     → ProcessPhoto
 *   GET    /v1/users/{userId}/photos?eventId=                                    → ListUserPhotos
 *   GET    /v1/events/{eventId}/photos?pageSize=&pageToken=                      → ListEventPhotos
 *   POST   /v1/faces:search              SearchFacesRequest                      → SearchFaces
 *   DELETE /v1/photos/{photoId}                                                  → DeletePhoto
 *   DELETE /v1/users/{userId}                                                    → ForgetUser
 * A request body is the request message in proto3 JSON; the answer is the response message, with
 * default values written out. The short forms of the first REST version are still read: `kind`
 * "ACTION_SHOT" / "FACECAM", and `target` "users" / "action_shots" for `collection`.
 *
 * A client that disconnects cancels its request as a gRPC caller's cancel or deadline does.
 * Errors: `{code, message}` with the status of http-status.ts; an unknown path 404, a known path
 * with another method 405 and an Allow header, a malformed percent-escape in a path 400, a body
 * over the size limit 413. A request over the in-flight bound gets 429 with `Retry-After: 1`.
 *
 * Tracing: each REST call is a SERVER span `<METHOD> <route>` (`POST /v1/photos`) with the HTTP
 * semantic conventions' attributes (http.request.method, http.route, url.path, url.scheme,
 * http.response.status_code, user_agent.original) and the failure's code (telemetry/spans.ts); a W3C
 * `traceparent` (and `tracestate`, `baggage`) header makes it the caller's child. The probes and
 * /metrics are not traced.
 *
 * Shutdown (serve.ts): /readyz answers 503 from the first moment (the `ready` given says so); once
 * the CallTracker refuses, a REST request gets 503 with `Retry-After: 1` and `Connection: close`
 * (its next try opens a connection, which a Service sends to another pod), and one cut at the end
 * of the grace period is answered the same way at once. /healthz stays 200: the process is alive.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { context, propagation, ROOT_CONTEXT, SpanKind, trace, type Tracer } from '@opentelemetry/api';
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import { FacematchError, InvalidArgumentError } from '../../domain/errors.js';
import { quote } from '../../domain/ids.js';
import { httpSpan, TRACER_NAME } from '../../telemetry/attributes.js';
import type { Logger } from '../../telemetry/logger.js';
import { recordFailure, spanTime } from '../../telemetry/spans.js';
import type { CallTracker } from '../in-flight.js';
import { requestFromJson, responseToJson } from '../proto-json.js';
import { invoke, rpcTable, shorten, type Method, type RpcDeps } from '../rpc.js';
import { httpStatus } from './http-status.js';

export interface Readiness {
  ok: boolean;
  checks: Record<string, string>;
}

export interface HttpDeps extends RpcDeps {
  ready: () => Promise<Readiness>;
  log: Logger;
  /** Largest accepted request body. */
  maxBodyBytes: number;
  /** Admits each REST call; refuses new ones and cuts the ones left when the replica shuts down. */
  calls: CallTracker;
  /** The SERVER spans' tracer; default: the global provider's `facematch` tracer. */
  tracer?: Tracer;
}

/** A refusal by the HTTP layer itself (no such route, wrong method, body too large). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: 'NOT_FOUND' | 'INVALID_ARGUMENT',
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, 'INVALID_ARGUMENT', `request body over ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new InvalidArgumentError('the request body is not JSON');
  }
}

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json', headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = type === 'application/json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, { ...headers, 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A path segment, percent-decoded; a malformed escape is the caller's mistake. */
function segment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new InvalidArgumentError(`malformed percent-escape in the path segment ${quote(raw)}`);
  }
}

/** The first REST version's short forms, read as their proto3 JSON names. */
const LEGACY_KIND: Record<string, string> = { ACTION_SHOT: 'PHOTO_KIND_ACTION_SHOT', FACECAM: 'PHOTO_KIND_FACECAM' };
const LEGACY_COLLECTION: Record<string, string> = {
  users: 'SEARCH_COLLECTION_USERS',
  action_shots: 'SEARCH_COLLECTION_ACTION_SHOTS',
  USERS: 'SEARCH_COLLECTION_USERS',
  ACTION_SHOTS: 'SEARCH_COLLECTION_ACTION_SHOTS',
};

function legacyProcess(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const b = body as Record<string, unknown>;
  return typeof b.kind === 'string' && LEGACY_KIND[b.kind] ? { ...b, kind: LEGACY_KIND[b.kind] } : b;
}

function legacySearch(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const { target, ...b } = body as Record<string, unknown>;
  const collection = b.collection ?? target;
  if (collection === undefined) return b;
  return { ...b, collection: typeof collection === 'string' ? LEGACY_COLLECTION[collection] ?? collection : collection };
}

interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  /** The raw (still percent-encoded) path parameters. */
  params: string[];
  /** The path, without the query. */
  path: string;
  query: URLSearchParams;
  signal: AbortSignal;
}

/** What a route does: answers the request. */
type Handler = (r: Request) => Promise<void>;

export function createHttpServer(d: HttpDeps): Server {
  const table = rpcTable(d);

  /** An error's answer: its status, and when to come back for a refusal that another try may not meet. */
  const fail = (res: ServerResponse, e: FacematchError, refused = false): void => {
    const status = httpStatus(e.code);
    const headers: Record<string, string> = status === 429 || refused ? { 'retry-after': '1' } : {};
    if (refused) headers.connection = 'close';
    send(res, status, e.toJSON(), 'application/json', headers);
  };

  const tracer = d.tracer ?? trace.getTracer(TRACER_NAME);

  /** A REST route (`route`: its template, for the span) onto an RPC: `request` builds the request's proto3 JSON form. */
  const rpc =
    <Req, Res>(m: Method<Req, Res>, route: string, request: (r: Request, body: () => Promise<unknown>) => Promise<unknown>): Handler =>
    async (r) => {
      let call: AbortController;
      try {
        call = d.calls.admit();
      } catch (error) {
        // Shutting down: refused before the body is read (serve.ts logs the phase, not each call).
        const e = error as FacematchError;
        d.metrics.observe(m.name, 'http', e.code, 0);
        return fail(r.res, e, true);
      }
      const method = r.req.method ?? 'GET';
      const parent = propagation.extract(ROOT_CONTEXT, r.req.headers);
      const span = tracer.startSpan(
        httpSpan(method, route),
        {
          kind: SpanKind.SERVER,
          startTime: spanTime(),
          attributes: {
            [ATTR_HTTP_REQUEST_METHOD]: method,
            [ATTR_HTTP_ROUTE]: route,
            [ATTR_URL_PATH]: r.path,
            [ATTR_URL_SCHEME]: 'http',
            ...(r.req.headers['user-agent'] ? { [ATTR_USER_AGENT_ORIGINAL]: r.req.headers['user-agent'] } : {}),
          },
        },
        parent,
      );
      let status = 200;
      let failure: { code: string; message: string } | undefined;
      const gone = () => call.abort();
      if (r.signal.aborted) gone();
      r.signal.addEventListener('abort', gone, { once: true });
      // Cut by the shutdown (a FacematchError reason): answered now, whatever the work is doing.
      const cut = new Promise<never>((_, reject) =>
        call.signal.addEventListener('abort', () => {
          const reason: unknown = call.signal.reason;
          if (reason instanceof FacematchError) reject(reason);
        }),
      );
      // Cut while its body is still being read: nobody races it yet.
      cut.catch(() => undefined);
      try {
        let body: Buffer | undefined;
        if (r.req.method === 'POST') body = await readBody(r.req, d.maxBodyBytes);
        const json = () => Promise.resolve(parseJson(body ?? Buffer.alloc(0)));
        try {
          const work = context.with(trace.setSpan(parent, span), () =>
            invoke(d, m, async () => requestFromJson(m.request, await request(r, json)), 'http', call.signal),
          );
          const res = await Promise.race([work, cut]);
          send(r.res, 200, responseToJson(m.response, res));
        } catch (error) {
          const e = error as FacematchError;
          failure = e;
          status = httpStatus(e.code);
          fail(r.res, e, e === call.signal.reason);
        }
      } catch (error) {
        // The body: too large (413), or the connection went away while it was read (answered 500).
        status = error instanceof HttpError ? error.status : 500;
        failure = error instanceof HttpError ? error : { code: 'INTERNAL', message: error instanceof Error ? error.message : String(error) };
        throw error;
      } finally {
        r.signal.removeEventListener('abort', gone);
        d.calls.done(call);
        span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
        if (failure) recordFailure(span, failure, status >= 500, failure);
        span.end(spanTime());
      }
    };

  const routes: { path: RegExp; methods: Record<string, Handler> }[] = [
    { path: /^\/healthz$/, methods: { GET: ({ res }) => Promise.resolve(send(res, 200, { status: 'ok' })) } },
    {
      path: /^\/readyz$/,
      methods: {
        GET: async ({ res }) => {
          const r = await d.ready();
          send(res, r.ok ? 200 : 503, { status: r.ok ? 'ready' : 'not ready', checks: r.checks });
        },
      },
    },
    {
      path: /^\/metrics$/,
      methods: { GET: async ({ res }) => send(res, 200, await d.metrics.registry.metrics(), d.metrics.registry.contentType) },
    },
    { path: /^\/v1\/photos$/, methods: { POST: rpc(table.processPhoto, '/v1/photos', async (_, body) => legacyProcess(await body())) } },
    {
      path: /^\/v1\/photos\/([^/]*)$/,
      methods: { DELETE: rpc(table.deletePhoto, '/v1/photos/{photoId}', (r) => Promise.resolve({ photoId: segment(r.params[0]!) })) },
    },
    {
      path: /^\/v1\/users\/([^/]*)\/photos$/,
      methods: {
        GET: rpc(table.listUserPhotos, '/v1/users/{userId}/photos', (r) => {
          const eventId = r.query.get('eventId') ?? r.query.get('event_id');
          return Promise.resolve({ userId: segment(r.params[0]!), ...(eventId !== null ? { eventId } : {}) });
        }),
      },
    },
    {
      path: /^\/v1\/events\/([^/]*)\/photos$/,
      methods: {
        GET: rpc(table.listEventPhotos, '/v1/events/{eventId}/photos', (r) => {
          const pageSize = r.query.get('pageSize') ?? r.query.get('page_size');
          const pageToken = r.query.get('pageToken') ?? r.query.get('page_token');
          return Promise.resolve({
            eventId: segment(r.params[0]!),
            ...(pageSize !== null ? { pageSize } : {}),
            ...(pageToken !== null ? { pageToken } : {}),
          });
        }),
      },
    },
    { path: /^\/v1\/users\/([^/]*)$/, methods: { DELETE: rpc(table.forgetUser, '/v1/users/{userId}', (r) => Promise.resolve({ userId: segment(r.params[0]!) })) } },
    { path: /^\/v1\/faces:search$/, methods: { POST: rpc(table.searchFaces, '/v1/faces:search', async (_, body) => legacySearch(await body())) } },
  ];

  const route = async (req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> => {
    const target = req.url ?? '/';
    const at = target.indexOf('?');
    const path = at === -1 ? target : target.slice(0, at);
    const query = new URLSearchParams(at === -1 ? '' : target.slice(at + 1));
    const method = req.method ?? 'GET';
    for (const r of routes) {
      const m = r.path.exec(path);
      if (!m) continue;
      const handler = r.methods[method] ?? (method === 'HEAD' ? r.methods.GET : undefined);
      if (!handler) {
        const allow = Object.keys(r.methods).flatMap((v) => (v === 'GET' ? ['GET', 'HEAD'] : [v])).join(', ');
        throw new HttpError(405, 'INVALID_ARGUMENT', `${method} is not allowed on this path; allowed: ${allow}`, { allow });
      }
      return handler({ req, res, params: m.slice(1), path, query, signal });
    }
    throw new HttpError(404, 'NOT_FOUND', `no route for ${method} ${shorten(path)}`);
  };

  return createServer((req, res) => {
    const controller = new AbortController();
    // The client went away before its answer was written: its request is cancelled.
    res.on('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    route(req, res, controller.signal).catch((error: unknown) => {
      if (error instanceof HttpError) {
        // Whatever is left of the body is not read: the connection closes after the answer.
        if (error.status === 413) res.setHeader('connection', 'close');
        return send(res, error.status, { code: error.code, message: error.message }, 'application/json', error.headers);
      }
      d.log.error({ err: error as Error, url: shorten(req.url ?? '') }, 'http request failed');
      send(res, 500, { code: 'INTERNAL', message: 'internal error' });
    });
  });
}

export async function listen(server: Server, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return (server.address() as AddressInfo).port;
}
