/**
 * The latency report's pure parts (scripts/latency): Jaeger's OTLP JSON read into spans, per-photo
 * timings, percentiles and shares, the tables and the chart, and the command's arguments. The e2e
 * (e2e/system.e2e.ts) runs the same code on a real Jaeger's traces.
 */
import { describe, expect, it } from 'vitest';
import { ancestors, groupByTrace, hexId, toSpans } from '../../scripts/latency/jaeger.js';
import { buildReport, END_TO_END, markdownTable, OTHER, percentile, photoTimings, REQUEST, svgChart, textTable, TRANSPORT } from '../../scripts/latency/report.js';
import { parseReportArgs, parseSince } from '../../scripts/latency/run.js';
import { ATTR, SPAN, STAGES, stageSpan } from '../../src/telemetry/attributes.js';

const T0 = 1_764_630_000_000; // ms
const ns = (ms: number): string => (BigInt(Math.round(ms * 1000)) * 1000n).toString();
const hex = (n: number, len: number): string => n.toString(16).padStart(len, '0');

interface Made {
  service: string;
  span: Record<string, unknown>;
}

/** One photo's trace as the controller and the service export it: root → client → request → stages. */
function photoTrace(i: number, faces: number, stageMs: number): Made[] {
  const traceId = hex(1000 + i, 32);
  const id = (k: number): string => hex(i * 100 + k, 16);
  const start = T0 + i * 10_000;
  const stages = STAGES.map((stage, k) => ({
    service: 'facematch',
    span: {
      traceId,
      spanId: id(10 + k),
      parentSpanId: id(3),
      name: stageSpan(stage),
      kind: 1,
      startTimeUnixNano: ns(start + 3 + k * stageMs),
      endTimeUnixNano: ns(start + 3 + (k + 1) * stageMs),
      attributes: [{ key: ATTR.faces, value: { intValue: String(faces) } }],
    },
  }));
  const requestMs = STAGES.length * stageMs + 2;
  return [
    {
      service: 'facematch-controller',
      span: {
        traceId,
        spanId: id(1),
        name: 'photo',
        kind: 'SPAN_KIND_INTERNAL',
        startTimeUnixNano: ns(start),
        endTimeUnixNano: ns(start + requestMs + 6),
        links: [{ traceId: hex(1, 32), spanId: hex(1, 16) }],
      },
    },
    {
      service: 'facematch-controller',
      span: { traceId, spanId: id(2), parentSpanId: id(1), name: 'ProcessPhoto', kind: 3, startTimeUnixNano: ns(start + 1), endTimeUnixNano: ns(start + requestMs + 5) },
    },
    {
      service: 'facematch',
      span: {
        traceId,
        spanId: id(3),
        parentSpanId: id(2),
        name: SPAN.processPhoto,
        kind: 2,
        startTimeUnixNano: ns(start + 2),
        endTimeUnixNano: ns(start + 2 + requestMs),
        attributes: [
          { key: ATTR.faces, value: { intValue: String(faces) } },
          { key: ATTR.eventId, value: { stringValue: 'ev' } },
          { key: ATTR.photoId, value: { stringValue: `p${i}` } },
        ],
        status: { code: 0 },
      },
    },
    ...stages,
  ];
}

function otlp(made: Made[]): unknown {
  const byService = new Map<string, unknown[]>();
  for (const m of made) byService.set(m.service, [...(byService.get(m.service) ?? []), m.span]);
  return {
    resourceSpans: [...byService].map(([service, spans]) => ({
      resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
      scopeSpans: [{ spans }],
    })),
  };
}

describe('reading Jaeger OTLP JSON', () => {
  it('flattens spans: hex and base64 ids, kinds by number or name, nanosecond strings, attributes', () => {
    const spans = toSpans(otlp(photoTrace(0, 1, 2)) as never);
    expect(spans).toHaveLength(3 + STAGES.length);
    const root = spans.find((s) => s.name === 'photo')!;
    expect(root).toMatchObject({ service: 'facematch-controller', kind: 'internal', parentSpanId: '', startMs: T0 });
    expect(root.links).toEqual([{ traceId: hex(1, 32), spanId: hex(1, 16) }]);
    const req = spans.find((s) => s.name === SPAN.processPhoto)!;
    expect(req).toMatchObject({ kind: 'server', service: 'facematch', durationMs: STAGES.length * 2 + 2, status: 'unset' });
    expect(req.attributes[ATTR.faces]).toBe(1);
    expect(hexId(Buffer.from('0102030405060708', 'hex').toString('base64'))).toBe('0102030405060708');
    expect(hexId('ABCDEF0123456789')).toBe('abcdef0123456789');
  });

  it('follows the parent chain and says which parent is missing', () => {
    const trace = groupByTrace(toSpans(otlp(photoTrace(0, 1, 2)) as never)).values().next().value!;
    const stage = trace.find((s) => s.name === stageSpan('embed'))!;
    expect(ancestors(stage, trace).chain.map((s) => s.name)).toEqual([SPAN.processPhoto, 'ProcessPhoto', 'photo']);
    const orphan = { ...stage, parentSpanId: 'ffffffffffffffff' };
    expect(ancestors(orphan, trace)).toEqual({ chain: [], missingParent: 'ffffffffffffffff' });
  });
});

describe('the report', () => {
  // 8 small photos (1-3 faces, 1 ms per stage) and 2 crowds (40 faces, 20 ms per stage).
  const made = [
    ...Array.from({ length: 8 }, (_, i) => photoTrace(i, 1 + (i % 3), 1)),
    photoTrace(8, 40, 20),
    photoTrace(9, 40, 20),
  ].flat();
  const traces = groupByTrace(toSpans(otlp(made) as never));
  const timings = photoTimings(traces);
  const report = buildReport(timings, { source: { jaeger: 'http://j', service: 'facematch', start: 'a', end: 'b' }, crowdFaces: 10, now: new Date(T0) });

  it('times each photo: request, its stages, the caller end to end', () => {
    expect(timings).toHaveLength(10);
    const t = timings.find((x) => x.photoId === 'p8')!;
    expect(t.faces).toBe(40);
    expect(t.requestMs).toBeCloseTo(STAGES.length * 20 + 2, 6);
    expect(t.endToEndMs).toBeCloseTo(STAGES.length * 20 + 8, 6);
    expect(Object.keys(t.stages)).toEqual([...STAGES]);
    expect(photoTimings(traces, { eventId: 'other' })).toEqual([]);
  });

  it('splits small photos from crowds; shares add up to 100% of end to end', () => {
    const small = report.groups.find((g) => g.group === 'small')!;
    const crowd = report.groups.find((g) => g.group === 'crowd')!;
    expect([small.photos, crowd.photos, small.minFaces, small.maxFaces, crowd.minFaces]).toEqual([8, 2, 1, 3, 40]);
    for (const g of [small, crowd]) {
      expect(g.total).toBe(END_TO_END);
      const parts = g.rows.filter((r) => r.name !== REQUEST && r.name !== END_TO_END);
      expect(parts.map((r) => r.name)).toEqual([...STAGES, OTHER, TRANSPORT]);
      expect(parts.reduce((a, r) => a + r.share!, 0)).toBeCloseTo(1, 6);
    }
    const embed = crowd.rows.find((r) => r.name === 'embed')!;
    expect([embed.p50, embed.p99]).toEqual([20, 20].map((v) => expect.closeTo(v, 6) as number));
    expect(crowd.rows.find((r) => r.name === TRANSPORT)!.p50).toBeCloseTo(6, 6);
  });

  it('percentiles are nearest-rank', () => {
    const v = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([percentile(v, 50), percentile(v, 95), percentile(v, 99), percentile([7], 99)]).toEqual([50, 95, 99, 7]);
    expect(percentile([], 50)).toBeNaN();
  });

  it('prints tables and draws a chart with every stage, for both groups', () => {
    const text = textTable(report);
    expect(text).toContain('small: small photos (< 10 faces), 8 photos, 1-3 faces');
    expect(text).toContain('crowd: crowds (≥ 10 faces), 2 photos, 40 faces');
    expect(text).toMatch(/embed\s+1\.0 ms\s+1\.0 ms\s+1\.0 ms/);
    const md = markdownTable(report);
    expect(md.split('\n').filter((l) => l.startsWith('|'))).toHaveLength(2 + STAGES.length + 4);
    const svg = svgChart(report);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const stage of STAGES) expect(svg).toContain(`>${stage}<`);
    expect(svg).toContain('crowds (2)');
    expect(svg).not.toContain('NaN');
  });

  it('says so when no photo was found', () => {
    const empty = buildReport([], { source: { jaeger: 'j', service: 's', start: 'a', end: 'b' } });
    expect(textTable(empty)).toBe('no photo traces found\n');
  });
});

describe('npm run report:latency arguments', () => {
  const now = new Date('2026-12-01T23:00:00Z');
  it('defaults: the test Jaeger, service facematch, the last hour, reports/latency', () => {
    const a = parseReportArgs([], { FACEMATCH_TEST_JAEGER_QUERY: 'http://127.0.0.1:1' }, now);
    expect(a).toMatchObject({ jaeger: 'http://127.0.0.1:1', service: 'facematch', crowdFaces: 10, limit: 1000, out: 'reports/latency' });
    expect(a.start.toISOString()).toBe('2026-12-01T22:00:00.000Z');
    expect(a.end).toEqual(now);
  });
  it('--since, --start/--end, and refusals', () => {
    expect(parseSince('30m')).toBe(1_800_000);
    expect(parseReportArgs(['--since', '2d'], {}, now).start.toISOString()).toBe('2026-11-29T23:00:00.000Z');
    const a = parseReportArgs(['--start', '2026-12-01T20:00:00Z', '--end', '2026-12-01T21:00:00Z', '--jaeger', 'http://j:16686'], {}, now);
    expect([a.start.toISOString(), a.end.toISOString(), a.jaeger]).toEqual(['2026-12-01T20:00:00.000Z', '2026-12-01T21:00:00.000Z', 'http://j:16686']);
    expect(() => parseReportArgs(['--since', '1h', '--start', '2026-12-01T20:00:00Z'], {}, now)).toThrow(/not both/);
    expect(() => parseReportArgs(['--since', 'soon'], {}, now)).toThrow(/unit/);
    expect(() => parseReportArgs(['--crowd', '0'], {}, now)).toThrow(/--crowd/);
    expect(() => parseReportArgs(['--bogus'], {}, now)).toThrow();
  });
});
