/** Starts gRPC and HTTP on one app; returns the bound ports and a graceful stop. */
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { Config } from '../config/config.js';
import { setupTracing } from '../telemetry/tracing.js';
import type { Logger } from '../telemetry/logger.js';
import { startGrpcServer, SERVICE_NAME } from '../transport/grpc/grpc.server.js';
import { createHttpServer, listen } from '../transport/http/http.server.js';
import { InFlightLimiter } from '../transport/in-flight.js';
import { Metrics } from '../transport/metrics.js';
import { createApp, VERSION, type App } from './app.js';

export interface Serving {
  app: App;
  grpcPort: number;
  httpPort: number;
  stop(): Promise<void>;
}

export async function serve(config: Config, log: Logger, o: { exporter?: SpanExporter } = {}): Promise<Serving> {
  const tracing = setupTracing({
    ...(config.otlpTracesEndpoint ? { otlpEndpoint: config.otlpTracesEndpoint } : {}),
    ...(o.exporter ? { exporter: o.exporter } : {}),
    version: VERSION,
  });
  const app = await createApp(config, log, { tracer: tracing.tracer });
  const limiter = new InFlightLimiter(config.server.maxInFlight);
  const metrics = new Metrics(limiter);
  const deps = { service: app.service, limiter, metrics, log };
  const grpc = await startGrpcServer({ ...deps, maxMessageBytes: config.server.maxMessageBytes }, config.server.host, config.server.grpcPort);
  const http = createHttpServer({ ...deps, ready: () => app.ready(), maxBodyBytes: config.server.maxMessageBytes });
  const httpPort = await listen(http, config.server.host, config.server.httpPort);
  grpc.health.setStatus('', 'SERVING');
  grpc.health.setStatus(SERVICE_NAME, 'SERVING');
  log.info({ grpcPort: grpc.port, httpPort, pack: app.analyzer.pack.name, threshold: app.service.matchThreshold }, 'facematch serving');

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      grpc.health.setStatus('', 'NOT_SERVING');
      grpc.health.setStatus(SERVICE_NAME, 'NOT_SERVING');
      await Promise.all([
        new Promise<void>((resolve) => grpc.server.tryShutdown(() => resolve())),
        new Promise<void>((resolve) => {
          http.close(() => resolve());
          http.closeAllConnections();
        }),
      ]);
      await app.close();
      await tracing.shutdown();
      log.info('facematch stopped');
    })();
    return stopping;
  };
  return { app, grpcPort: grpc.port, httpPort, stop };
}
