/**
 * `facematch controller`: the PhotoBatch operator (kubernetes/sample-controller's shape).
 *
 * One replica leads (a coordination.k8s.io Lease); the others wait to take over. The leader lists
 * and watches PhotoBatches (an informer), queues their keys, and runs `workers` reconcilers that
 * start, steer and stop each batch's runner; the runners call the service over gRPC and write
 * progress to status. A leader that loses its lease stops at once (its runners are cancelled and
 * their cursors written) and exits, so a supervisor starts it again as a follower.
 *
 * HTTP (FACEMATCH_CONTROLLER_HTTP_PORT): /healthz fails when the leader's watch has been down too
 * long (a restart helps), /readyz when the leader has not listed yet, /metrics.
 */
import type { Server } from 'node:http';
import { SpanKind, SpanStatusCode, type Span, type Tracer } from '@opentelemetry/api';
import { CoordinationV1Api, KubeConfig } from '@kubernetes/client-node';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Config } from '../config/config.js';
import { InvalidArgumentError } from '../domain/errors.js';
import { FacematchClients } from '../adapters/grpc-client/client.js';
import { EventPhotoSource } from '../adapters/grpc-client/event.photo-source.js';
import { GrpcPhotoProcessor } from '../adapters/grpc-client/grpc.photo-processor.js';
import { LeaseLeaderElector, type RunOutcome } from '../adapters/kubernetes/lease.leader-election.js';
import { KubePhotoBatchStore } from '../adapters/kubernetes/photo-batch.store.js';
import { S3PhotoSource } from '../adapters/s3/s3.photo-source.js';
import type { BatchResult } from '../controller/batch-runner.js';
import { PhotoBatchReconciler, runWorker, type PhotoBatch } from '../controller/reconciler.js';
import { UrlListSource } from '../controller/url-source.js';
import { WorkQueue } from '../controller/work-queue.js';
import type { PhotoOutcome, PhotoProcessor, PhotoRequest } from '../ports/photo-processor.js';
import type { PhotoSource } from '../ports/photo-source.js';
import { ATTR, CONTROLLER_SPAN, CONTROLLER_TRACER_NAME, DEFAULT_SERVICE_NAME } from '../telemetry/attributes.js';
import type { Logger } from '../telemetry/logger.js';
import { spanTime } from '../telemetry/spans.js';
import { setupTracing } from '../telemetry/tracing.js';
import { createProbeServer } from '../transport/http/probe.server.js';
import { listen } from '../transport/http/http.server.js';
import { VERSION } from './app.js';

export interface RunningController {
  httpPort: number;
  /** Resolves when the controller stopped: `lost` when it lost its lease (exit non-zero then). */
  done: Promise<RunOutcome>;
  /** Graceful stop: runners cancelled, cursors written, lease released. */
  stop(): Promise<void>;
}

export class ControllerMetrics {
  readonly registry = new Registry();
  readonly processed = new Counter({
    name: 'facematch_controller_photos_processed_total',
    help: 'Photos of PhotoBatches the service processed, by batch (namespace/name)',
    labelNames: ['batch'] as const,
    registers: [this.registry],
  });
  readonly failed = new Counter({
    name: 'facematch_controller_photos_failed_total',
    help: 'ProcessPhoto calls of PhotoBatches that failed, by batch and code (transient ones are retried)',
    labelNames: ['batch', 'code'] as const,
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: 'facematch_controller_reconcile_errors_total',
    help: 'Reconciles that failed (requeued with backoff)',
    registers: [this.registry],
  });
  readonly statusWrites = new Counter({
    name: 'facematch_controller_status_writes_total',
    help: 'PhotoBatch status writes, by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({ name: 'facematch_controller_leader', help: '1 while this replica leads', registers: [this.registry] });

  constructor(queue: WorkQueue, running: () => number) {
    collectDefaultMetrics({ register: this.registry, prefix: 'facematch_controller_' });
    new Gauge({
      name: 'facematch_controller_queue_depth',
      help: 'PhotoBatch keys waiting to be reconciled',
      registers: [this.registry],
      collect() {
        this.set(queue.length);
      },
    });
    new Gauge({
      name: 'facematch_controller_batches_running',
      help: 'PhotoBatches with a runner on this replica',
      registers: [this.registry],
      collect() {
        this.set(running());
      },
    });
  }
}

/**
 * Traces of a batch run: ONE TRACE PER PHOTO. Each photo's span (facematch.controller.photo) is the
 * root of a trace of its own, with a span link to the run's span (facematch.controller.batch, a
 * trace of its own too, ended with the run's counts) and the batch's attributes, so Jaeger shows
 * each photo as one readable trace: the controller's span, the gRPC CLIENT span, Envoy's, and the
 * service's SERVER span, use case and stages below (traceparent travels in the call's metadata).
 */
export function tracedProcessor(
  batch: PhotoBatch,
  processor: PhotoProcessor,
  o: { tracer: Tracer; metrics?: ControllerMetrics },
): { processor: PhotoProcessor; end(result: BatchResult): void } {
  const { tracer, metrics } = o;
  const [namespace = '', name = batch.key] = batch.key.includes('/') ? batch.key.split('/', 2) : ['', batch.key];
  const batchAttributes = {
    [ATTR.batch]: batch.key,
    [ATTR.batchNamespace]: namespace,
    [ATTR.batchName]: name,
    [ATTR.batchUid]: batch.uid,
    [ATTR.eventId]: batch.spec.eventId,
  };
  const run: Span = tracer.startSpan(CONTROLLER_SPAN.batch, { kind: SpanKind.INTERNAL, attributes: batchAttributes, root: true, startTime: spanTime() });
  const link = { context: run.spanContext() };
  return {
    processor: {
      process: (request: PhotoRequest, signal: AbortSignal): Promise<PhotoOutcome> =>
        tracer.startActiveSpan(
          CONTROLLER_SPAN.photo,
          {
            root: true,
            kind: SpanKind.INTERNAL,
            startTime: spanTime(),
            links: [link],
            attributes: { ...batchAttributes, [ATTR.photoId]: request.photoId, [ATTR.eventId]: request.eventId, [ATTR.kind]: request.kind },
          },
          async (photo) => {
            try {
              const outcome = await processor.process(request, signal);
              metrics?.processed.inc({ batch: batch.key });
              photo.setAttributes({ [ATTR.faces]: outcome.faces, [ATTR.matches]: outcome.matched });
              return outcome;
            } catch (error) {
              const code = (error as { code?: string }).code ?? 'INTERNAL';
              metrics?.failed.inc({ batch: batch.key, code });
              photo.setAttribute(ATTR.errorCode, code);
              photo.recordException(error instanceof Error ? error : { name: code, message: String(error) });
              photo.setStatus({ code: SpanStatusCode.ERROR, message: `${code}: ${error instanceof Error ? error.message : String(error)}` });
              throw error;
            } finally {
              photo.end(spanTime());
            }
          },
        ),
    },
    end(result) {
      const p = result.progress;
      run.setAttributes({ [ATTR.batchOutcome]: result.outcome, [ATTR.processed]: p.processed, [ATTR.matched]: p.matched, [ATTR.failed]: p.failed });
      if (result.outcome === 'failed') run.setStatus({ code: SpanStatusCode.ERROR, message: result.reason });
      run.end(spanTime());
    },
  };
}

export async function startController(config: Config, log: Logger): Promise<RunningController> {
  const c = config.controller;
  const tracing = setupTracing({
    config: config.tracing,
    version: VERSION,
    serviceName: DEFAULT_SERVICE_NAME.controller,
    tracerName: CONTROLLER_TRACER_NAME,
  });
  const kubeConfig = new KubeConfig();
  if (c.kubeconfig) kubeConfig.loadFromFile(c.kubeconfig);
  else kubeConfig.loadFromDefault();

  const queue = new WorkQueue({ baseDelayMs: 200, maxDelayMs: 60_000 });
  const clients = new FacematchClients();
  const s3 = config.s3;

  const sourceFor = (batch: PhotoBatch): PhotoSource => {
    const source = batch.spec.source;
    if (source.urls) return new UrlListSource(source.urls);
    if (source.s3) {
      if (!s3) throw new InvalidArgumentError('an s3 source needs the controller to have FACEMATCH_S3_ENDPOINT and its keys');
      return S3PhotoSource.open(s3, source.s3.bucket, source.s3.prefix ?? '');
    }
    if (source.event) return new EventPhotoSource(clients.get(batch.spec.serviceAddress ?? c.serviceAddress), batch.spec.eventId);
    throw new InvalidArgumentError('the batch names no source (s3, urls or event)');
  };

  const running = { count: (): number => 0 };
  const metrics = new ControllerMetrics(queue, () => running.count());
  const store = new KubePhotoBatchStore({
    kubeConfig,
    ...(c.namespace ? { namespace: c.namespace } : {}),
    onChange: (key) => queue.add(key),
    log,
    watchRenewMs: c.resyncMs,
  });
  const counted = {
    get: (key: string) => store.get(key),
    writeStatus: async (...args: Parameters<KubePhotoBatchStore['writeStatus']>) => {
      try {
        await store.writeStatus(...args);
        metrics.statusWrites.inc({ outcome: 'ok' });
      } catch (error) {
        metrics.statusWrites.inc({ outcome: 'error' });
        throw error;
      }
    },
  };
  const reconcile = new PhotoBatchReconciler({
    store: counted,
    sourceFor,
    processorFor: (batch) =>
      tracedProcessor(
        batch,
        GrpcPhotoProcessor.forAddress(clients, batch.spec.serviceAddress ?? c.serviceAddress, { deadlineMs: c.callTimeoutMs, tracer: tracing.tracer }),
        { tracer: tracing.tracer, metrics },
      ),
    requeue: (key) => queue.addRateLimited(key),
    progressIntervalMs: c.statusIntervalMs,
  });
  running.count = () => reconcile.active.length;

  let leading = false;
  let synced = false;
  const workers: Promise<void>[] = [];
  let resync: NodeJS.Timeout | undefined;
  const stopWork = async (): Promise<void> => {
    clearInterval(resync);
    queue.shutDown();
    await Promise.all(workers);
    await reconcile.shutdown();
    await store.stop();
  };

  const elector = new LeaseLeaderElector({
    api: kubeConfig.makeApiClient(CoordinationV1Api),
    namespace: c.lease.namespace,
    name: c.lease.name,
    identity: c.lease.identity,
    leaseDurationMs: c.lease.durationMs,
    renewDeadlineMs: c.lease.renewDeadlineMs,
    retryPeriodMs: c.lease.retryPeriodMs,
    log,
  });

  const health = (): { ok: boolean; message?: string } => {
    if (!leading) return { ok: true };
    const h = store.health();
    return h.healthy ? { ok: true } : { ok: false, message: h.message ?? 'watch down' };
  };
  const http: Server = createProbeServer({
    healthy: health,
    ready: () => (leading && !synced ? { ok: false, message: 'listing PhotoBatches' } : { ok: true }),
    registry: metrics.registry,
  });
  const httpPort = await listen(http, c.host, c.httpPort);

  const shutdown = new AbortController();
  const done = elector
    .run(shutdown.signal, {
      // Lasts as long as this replica leads: the lease is released (on shutdown) only after the
      // work stopped and the cursors were written, so two leaders never run a batch at once.
      onStartedLeading: async (leadership: AbortSignal) => {
        leading = true;
        metrics.leader.set(1);
        log.info({ identity: c.lease.identity }, 'leading: listing PhotoBatches');
        const stopped = new Promise<void>((resolve) => {
          if (leadership.aborted) resolve();
          else leadership.addEventListener('abort', () => resolve(), { once: true });
        });
        const listed = store.start();
        await Promise.race([listed, stopped]);
        if (!leadership.aborted) {
          synced = true;
          for (const key of store.keys()) queue.add(key);
          for (let i = 0; i < c.workers; i++) {
            workers.push(
              runWorker(queue, {
                reconcile: (key) => reconcile.reconcile(key),
                failed: (key, error) => {
                  metrics.reconcileErrors.inc();
                  log.warn({ batch: key, err: error instanceof Error ? error.message : String(error) }, 'reconcile failed; retrying with backoff');
                  return reconcile.failed(key, error);
                },
              }),
            );
          }
          resync = setInterval(() => {
            for (const key of store.keys()) queue.add(key);
          }, c.resyncMs);
          log.info({ batches: store.keys().length, workers: c.workers }, 'controller running');
        }
        await stopped;
        leading = false;
        metrics.leader.set(0);
        await stopWork();
      },
      onStoppedLeading: () => {
        if (!shutdown.signal.aborted) log.error({ identity: c.lease.identity }, 'lost the lease: stopped');
      },
      onNewLeader: (identity: string) => {
        if (identity !== c.lease.identity) log.info({ leader: identity }, 'following');
      },
    })
    .finally(() => {
      leading = false;
      metrics.leader.set(0);
    });
  // A lost lease ends the run by itself; the caller exits then.
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      shutdown.abort();
      await done;
      clients.close();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      await tracing.shutdown();
    })();
    return stopping;
  };
  return { httpPort, done, stop };
}
