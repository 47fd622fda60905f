/** Starts gRPC and HTTP on one app; returns the bound ports, the graceful shutdown and a quick stop. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { Config } from '../config/config.js';
import { BackendUnavailableError } from '../domain/errors.js';
import { ATTR, DEFAULT_SERVICE_NAME } from '../telemetry/attributes.js';
import { setupTracing } from '../telemetry/tracing.js';
import type { Logger } from '../telemetry/logger.js';
import { startGrpcServer, SERVICE_NAME } from '../transport/grpc/grpc.server.js';
import { createHttpServer, listen } from '../transport/http/http.server.js';
import { CallTracker, InFlightLimiter } from '../transport/in-flight.js';
import { Metrics } from '../transport/metrics.js';
import { createApp, VERSION, type App } from './app.js';

export interface Serving {
  app: App;
  grpcPort: number;
  httpPort: number;
  /**
   * The graceful shutdown (SIGTERM), in phases, each logged as a JSON line (`phase`):
   *  - drain: the health service says NOT_SERVING (both '' and the service) and /readyz 503 at once,
   *    and new calls are still served for FACEMATCH_SHUTDOWN_DRAIN_MS, while Envoy's health checks
   *    and the Kubernetes endpoints take the replica out of rotation;
   *  - refuse: new calls get UNAVAILABLE (gRPC, trailers-only: Envoy retries them on another
   *    replica) or 503 (REST), and the calls in flight have FACEMATCH_SHUTDOWN_GRACE_MS to finish;
   *  - cut (only if some are left at that bound): they are answered UNAVAILABLE / 503 at once;
   *  - close: the servers close (gRPC tryShutdown, forceShutdown if a stream still holds it), then
   *    the stores, models and tracing; `stopped` when done.
   * Idempotent: a second call returns the same promise.
   */
  shutdown(): Promise<void>;
  /** The same without the drain delay (no load balancer to tell: tests, benchmarks). */
  stop(): Promise<void>;
}

/** How long the cut calls' answers get to reach their callers before the connections are destroyed. */
const FLUSH_MS = 250;

export async function serve(config: Config, log: Logger, o: { exporter?: SpanExporter } = {}): Promise<Serving> {
  // The execution provider is known once the models loaded (CUDA may fall back to the CPU): the
  // resource waits for it before the first export.
  let provider!: (p: 'cpu' | 'cuda' | undefined) => void;
  const tracing = setupTracing({
    config: config.tracing,
    ...(o.exporter ? { exporter: o.exporter } : {}),
    version: VERSION,
    serviceName: DEFAULT_SERVICE_NAME.service,
    resource: { [ATTR.modelPack]: config.inference.modelPack, [ATTR.provider]: new Promise((resolve) => (provider = resolve)) },
  });
  let app: App;
  try {
    app = await createApp(config, log, { tracer: tracing.tracer });
  } catch (error) {
    provider(undefined);
    await tracing.shutdown();
    throw error;
  }
  provider(app.analyzer.provider);
  await tracing.resource?.waitForAsyncAttributes?.();
  const limiter = new InFlightLimiter(config.server.maxInFlight);
  const calls = new CallTracker();
  const metrics = new Metrics(limiter);
  const deps = { service: app.service, limiter, calls, metrics, log, tracer: tracing.tracer };
  let stopping: Promise<void> | undefined;
  const grpc = await startGrpcServer({ ...deps, maxMessageBytes: config.server.maxMessageBytes }, config.server.host, config.server.grpcPort);
  const http = createHttpServer({
    ...deps,
    // Not ready from the first moment of a shutdown, whatever the stores say.
    ready: () => (stopping ? Promise.resolve({ ok: false, checks: { shutdown: 'shutting down' } }) : app.ready()),
    maxBodyBytes: config.server.maxMessageBytes,
  });
  const httpPort = await listen(http, config.server.host, config.server.httpPort);
  grpc.health.setStatus('', 'SERVING');
  grpc.health.setStatus(SERVICE_NAME, 'SERVING');
  log.info(
    {
      grpcPort: grpc.port,
      httpPort,
      pack: app.analyzer.pack.name,
      threshold: app.service.matchThreshold,
      tracing: config.tracing.disabled ? 'disabled' : (config.tracing.export?.protocol ?? 'not exported'),
    },
    'facematch serving',
  );

  const run = async (drainMs: number): Promise<void> => {
    const graceMs = config.server.shutdownGraceMs;
    const t0 = performance.now();
    const at = () => Math.round(performance.now() - t0);
    grpc.health.setStatus('', 'NOT_SERVING');
    grpc.health.setStatus(SERVICE_NAME, 'NOT_SERVING');
    log.info({ phase: 'drain', drainMs, inFlight: calls.active }, 'shutdown: NOT_SERVING and /readyz 503; still serving new calls');
    if (drainMs > 0) await sleep(drainMs);

    calls.refuse(() => new BackendUnavailableError('this replica is shutting down; retry on another'));
    log.info({ phase: 'refuse', atMs: at(), graceMs, inFlight: calls.active }, 'shutdown: refusing new calls (UNAVAILABLE), waiting for the calls in flight');
    const bound = new AbortController();
    const finished = await Promise.race([
      calls.idle().then(() => true),
      sleep(graceMs, false, { signal: bound.signal }).catch(() => false),
    ]);
    bound.abort();
    if (!finished) {
      const cut = calls.abortAll(() => new BackendUnavailableError('this replica shut down before the call finished; retry on another'));
      log.warn({ phase: 'cut', atMs: at(), cut }, 'shutdown: calls still running at the end of the grace period answered UNAVAILABLE');
    }

    log.info({ phase: 'close', atMs: at() }, 'shutdown: closing the servers');
    // Idle keep-alive connections close now; one still answering closes after its answer.
    http.close();
    http.closeIdleConnections();
    await new Promise<void>((resolve) => {
      const force = setTimeout(
        () => {
          log.warn({ phase: 'close', atMs: at() }, 'shutdown: gRPC streams still open; forced');
          grpc.server.forceShutdown();
          http.closeAllConnections();
          resolve();
        },
        finished ? Math.max(0, graceMs - at() + drainMs) + FLUSH_MS : FLUSH_MS,
      );
      grpc.server.tryShutdown(() => {
        clearTimeout(force);
        http.closeAllConnections();
        resolve();
      });
    });
    await app.close();
    await tracing.shutdown();
    log.info({ phase: 'stopped', atMs: at() }, 'facematch stopped');
  };

  const once = (drainMs: number): Promise<void> => (stopping ??= run(drainMs));
  return {
    app,
    grpcPort: grpc.port,
    httpPort,
    shutdown: () => once(config.server.shutdownDrainMs),
    stop: () => once(0),
  };
}

/**
 * The process side of `serve`: the first SIGTERM or SIGINT starts the graceful shutdown and exits 0
 * when it is done (1 if it failed); a second one exits at once (1).
 */
export function exitOnSignals(serving: Serving, log: Logger): void {
  const first = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'shutting down');
    for (const s of ['SIGTERM', 'SIGINT'] as const) {
      process.removeListener(s, first);
      process.once(s, (again: NodeJS.Signals) => {
        log.warn({ signal: again }, 'second signal: exiting now');
        process.exit(1);
      });
    }
    serving.shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error as Error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, first);
}
