/**
 * HTTP beside gRPC: /healthz (the process answers), /readyz (models loaded, stores reachable),
 * /metrics (Prometheus), and a JSON REST fallback mirroring the RPCs:
 *   POST   /v1/photos                    {photoId, imageUrl, eventId?, kind, userId?} → ProcessPhoto
 *   GET    /v1/users/{userId}/photos?eventId=                                        → ListUserPhotos
 *   POST   /v1/faces:search              {imageUrl, eventId?, limit?, target?}       → SearchFaces
 *   DELETE /v1/photos/{photoId}                                                      → DeletePhoto
 *   DELETE /v1/users/{userId}                                                        → ForgetUser
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InvalidArgumentError, toFacematchError } from '../../domain/errors.js';
import type { MatchingService } from '../../services/matching.service.js';
import type { Logger } from '../../telemetry/logger.js';
import type { InFlightLimiter } from '../in-flight.js';
import type { Metrics } from '../metrics.js';
import { httpStatus } from './http-status.js';

export interface Readiness {
  ok: boolean;
  checks: Record<string, string>;
}

export interface HttpDeps {
  service: MatchingService;
  limiter: InFlightLimiter;
  metrics: Metrics;
  ready: () => Promise<Readiness>;
  log: Logger;
  /** Largest accepted request body. */
  maxBodyBytes: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readJson(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `request body over ${limit} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    return value as Record<string, unknown>;
  } catch {
    throw new InvalidArgumentError('the request body must be a JSON object');
  }
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = type === 'application/json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function createHttpServer(d: HttpDeps): Server {
  const route = async (req: IncomingMessage, res: ServerResponse): Promise<string> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (method === 'GET' && path === '/healthz') {
      send(res, 200, { status: 'ok' });
      return 'healthz';
    }
    if (method === 'GET' && path === '/readyz') {
      const r = await d.ready();
      send(res, r.ok ? 200 : 503, { status: r.ok ? 'ready' : 'not ready', checks: r.checks });
      return 'readyz';
    }
    if (method === 'GET' && path === '/metrics') {
      send(res, 200, await d.metrics.registry.metrics(), d.metrics.registry.contentType);
      return 'metrics';
    }
    if (method === 'POST' && path === '/v1/photos') {
      const b = await readJson(req, d.maxBodyBytes);
      const kind = str(b.kind);
      if (kind !== 'ACTION_SHOT' && kind !== 'FACECAM') {
        throw new InvalidArgumentError(`kind must be ACTION_SHOT or FACECAM, got ${JSON.stringify(b.kind ?? null)}`);
      }
      const result = await d.limiter.run(() =>
        d.service.processPhoto({
          photoId: str(b.photoId) ?? '',
          imageUrl: str(b.imageUrl) ?? '',
          kind: kind,
          ...(str(b.eventId) ? { eventId: str(b.eventId)! } : {}),
          ...(str(b.userId) ? { userId: str(b.userId)! } : {}),
        }),
      );
      d.metrics.observeStages(result.timings);
      send(res, 200, result);
      return 'ProcessPhoto';
    }
    const userPhotos = /^\/v1\/users\/([^/]+)\/photos$/.exec(path);
    if (method === 'GET' && userPhotos) {
      const photos = await d.service.listUserPhotos(decodeURIComponent(userPhotos[1]!), url.searchParams.get('eventId') ?? undefined);
      send(res, 200, { photos });
      return 'ListUserPhotos';
    }
    if (method === 'POST' && path === '/v1/faces:search') {
      const b = await readJson(req, d.maxBodyBytes);
      const target = str(b.target) === 'action_shots' ? 'action_shots' : 'users';
      const matches = await d.limiter.run(() =>
        d.service.searchFaces(str(b.imageUrl) ?? '', str(b.eventId), typeof b.limit === 'number' ? b.limit : 10, target),
      );
      send(res, 200, { matches });
      return 'SearchFaces';
    }
    const photo = /^\/v1\/photos\/([^/]+)$/.exec(path);
    if (method === 'DELETE' && photo) {
      send(res, 200, { deleted: await d.service.deletePhoto(decodeURIComponent(photo[1]!)) });
      return 'DeletePhoto';
    }
    const user = /^\/v1\/users\/([^/]+)$/.exec(path);
    if (method === 'DELETE' && user) {
      send(res, 200, await d.service.forgetUser(decodeURIComponent(user[1]!)));
      return 'ForgetUser';
    }
    throw new HttpError(404, `no route for ${method} ${path}`);
  };

  return createServer((req, res) => {
    const t0 = performance.now();
    route(req, res)
      .then((name) => {
        if (name !== 'healthz' && name !== 'readyz' && name !== 'metrics') {
          d.metrics.observe(name, 'http', 'OK', (performance.now() - t0) / 1000);
        }
      })
      .catch((error: unknown) => {
        if (error instanceof HttpError) return send(res, error.status, { code: error.status === 404 ? 'NOT_FOUND' : 'INVALID_ARGUMENT', message: error.message });
        const e = toFacematchError(error);
        const status = httpStatus(e.code);
        if (status >= 500) d.log.error({ err: e, cause: (e.cause as Error | undefined)?.message }, 'request failed');
        d.metrics.observe('rest', 'http', e.code, (performance.now() - t0) / 1000);
        send(res, status, e.toJSON());
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
