import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterAll, describe, expect, it } from 'vitest';
import type { PhotoBatch } from '../controller/reconciler.js';
import { PhotoProcessError, type PhotoProcessor, type PhotoRequest } from '../ports/photo-processor.js';
import { ATTR, CONTROLLER_SPAN } from '../telemetry/attributes.js';
import { setupTracing } from '../telemetry/tracing.js';
import { tracedProcessor } from './controller.js';

const spans = new InMemorySpanExporter();
const tracing = setupTracing({ exporter: spans, serviceName: 'facematch-controller' });
afterAll(() => tracing.shutdown());

const batch = {
  key: 'photos/wedding-2026',
  uid: 'uid-1',
  generation: 1,
  spec: { eventId: 'wedding' },
  status: {},
} as unknown as PhotoBatch;

/** Fails photo ids starting with `bad`, finds 3 faces and 1 match in the others. */
const fake: PhotoProcessor = {
  process: (r: PhotoRequest) =>
    r.photoId.startsWith('bad') ? Promise.reject(new PhotoProcessError('IMAGE_UNSUPPORTED', 'not an image')) : Promise.resolve({ faces: 3, matched: 1 }),
};
const photo = (photoId: string): PhotoRequest => ({ photoId, imageUrl: `http://x/${photoId}.jpg`, eventId: 'wedding', kind: 'ACTION_SHOT' });

describe('controller traces', () => {
  it('one trace per photo, each linked to the batch run span, with the batch attributes and the outcome', async () => {
    const traced = tracedProcessor(batch, fake, { tracer: tracing.tracer });
    const signal = new AbortController().signal;
    await traced.processor.process(photo('p1'), signal);
    await traced.processor.process(photo('p2'), signal);
    await expect(traced.processor.process(photo('bad-1'), signal)).rejects.toThrow('not an image');
    traced.end({ outcome: 'complete', progress: { processed: 3, matched: 2, failed: 1 } } as Parameters<typeof traced.end>[0]);

    const finished = spans.getFinishedSpans();
    const run = finished.find((s) => s.name === CONTROLLER_SPAN.batch)!;
    const photos = finished.filter((s) => s.name === CONTROLLER_SPAN.photo);
    expect(photos).toHaveLength(3);
    // Three traces of their own, none the batch's.
    const traces = new Set(photos.map((s) => s.spanContext().traceId));
    expect(traces.size).toBe(3);
    expect(traces.has(run.spanContext().traceId)).toBe(false);
    for (const s of photos) {
      expect(s.parentSpanContext).toBeUndefined();
      expect(s.links.map((l) => l.context.spanId)).toEqual([run.spanContext().spanId]);
      expect(s.attributes).toMatchObject({
        [ATTR.batch]: 'photos/wedding-2026',
        [ATTR.batchNamespace]: 'photos',
        [ATTR.batchName]: 'wedding-2026',
        [ATTR.eventId]: 'wedding',
      });
    }
    const ok = photos.find((s) => s.attributes[ATTR.photoId] === 'p1')!;
    expect(ok.attributes).toMatchObject({ [ATTR.faces]: 3, [ATTR.matches]: 1 });
    expect(ok.status.code).toBe(SpanStatusCode.UNSET);
    const bad = photos.find((s) => s.attributes[ATTR.photoId] === 'bad-1')!;
    expect(bad.status.code).toBe(SpanStatusCode.ERROR);
    expect(bad.attributes[ATTR.errorCode]).toBe('IMAGE_UNSUPPORTED');
    expect(bad.events.map((e) => e.name)).toEqual(['exception']);
    expect(run.kind).toBe(SpanKind.INTERNAL);
    expect(run.parentSpanContext).toBeUndefined();
    expect(run.attributes).toMatchObject({ [ATTR.batchOutcome]: 'complete', [ATTR.processed]: 3, [ATTR.matched]: 2, [ATTR.failed]: 1 });
  });
});
