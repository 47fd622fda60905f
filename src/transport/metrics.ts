/** Prometheus metrics (prom-client): requests, durations, stages, work in flight, process defaults. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { InFlightLimiter } from './in-flight.js';

export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'facematch_requests_total',
    help: 'Requests by method, transport and outcome code',
    labelNames: ['method', 'transport', 'code'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'facematch_request_duration_seconds',
    help: 'Request duration by method',
    labelNames: ['method'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly stages = new Histogram({
    name: 'facematch_stage_duration_seconds',
    help: 'Pipeline stage duration (fetch, decode, detect, align, embed, store, search, draw, upload, record)',
    labelNames: ['stage'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly faces = new Counter({ name: 'facematch_faces_total', help: 'Faces detected', registers: [this.registry] });

  constructor(limiter: InFlightLimiter) {
    collectDefaultMetrics({ register: this.registry, prefix: 'facematch_' });
    new Gauge({
      name: 'facematch_in_flight',
      help: 'Requests being processed',
      registers: [this.registry],
      collect() {
        this.set(limiter.inFlight);
      },
    });
  }

  observe(method: string, transport: 'grpc' | 'http', code: string, seconds: number): void {
    this.requests.inc({ method, transport, code });
    this.duration.observe({ method }, seconds);
  }

  observeStages(timings: Record<string, number | undefined>): void {
    for (const [stage, ms] of Object.entries(timings)) {
      if (stage !== 'total' && ms !== undefined) this.stages.observe({ stage }, ms / 1000);
    }
  }
}
