/**
 * The controller's HTTP port: /healthz (liveness: the process can still do its work, e.g. its watch
 * is not stuck), /readyz (readiness) and /metrics (Prometheus). Each probe answers 200
 * `{"status":"ok"}` or 503 `{"status":"unavailable","message":...}`.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface Probe {
  ok: boolean;
  message?: string;
}

export interface ProbeServerOptions {
  healthy(): Probe;
  ready(): Probe;
  registry: Registry;
}

export function createProbeServer(o: ProbeServerOptions): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const reply = (status: number, body: string, type = 'application/json'): void => {
      res.writeHead(status, { 'content-type': type }).end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      reply(405, JSON.stringify({ code: 'INVALID_ARGUMENT', message: `${String(req.method)} is not allowed here` }));
      return;
    }
    const probe = (p: Probe): void =>
      reply(p.ok ? 200 : 503, JSON.stringify(p.ok ? { status: 'ok' } : { status: 'unavailable', message: p.message ?? '' }));
    switch (path) {
      case '/healthz':
        return probe(o.healthy());
      case '/readyz':
        return probe(o.ready());
      case '/metrics':
        void o.registry.metrics().then(
          (text) => reply(200, text, o.registry.contentType),
          (error: unknown) => reply(500, JSON.stringify({ code: 'INTERNAL', message: String(error) })),
        );
        return;
      default:
        reply(404, JSON.stringify({ code: 'NOT_FOUND', message: `no route ${path}` }));
    }
  });
}
