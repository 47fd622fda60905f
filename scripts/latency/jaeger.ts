/**
 * Reading traces back from Jaeger's query API v3 (`GET /api/v3/traces`), for the system end-to-end
 * test (e2e/system.e2e.ts) and the latency report (scripts/report-latency.ts).
 *
 * The answer is OTLP JSON (`{"result": {"resourceSpans": [...]}}`): every span of every trace that
 * matched, each trace whole (Jaeger loads the full trace of any span that matched the query, so a
 * search by the controller's service name also brings the service's and Envoy's spans). Ids are hex
 * in Jaeger v2 and base64 in the v1 gateway (gogo jsonpb); enums are numbers or their proto names;
 * 64-bit integers and nanosecond times are strings. `toSpans` flattens all of that into plain spans.
 *
 * Query parameters: the snake_case names (`query.service_name`, `query.start_time_min`,
 * `query.start_time_max`) are what every v3 gateway reads (Jaeger 2.x calls them deprecated aliases
 * of camelCase ones and still accepts them); the number of traces is `query.num_traces` in 1.x and
 * `query.search_depth` in 2.x, so both are sent. A search that finds nothing is a 404 in some
 * versions: that is an empty answer here.
 */

export type Attr = string | number | boolean;

export type SpanKindName = 'unspecified' | 'internal' | 'server' | 'client' | 'producer' | 'consumer';

export interface TraceSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  kind: SpanKindName;
  /** The resource's service.name. */
  service: string;
  /** Epoch milliseconds (fractional). */
  startMs: number;
  endMs: number;
  durationMs: number;
  attributes: Record<string, Attr>;
  resource: Record<string, Attr>;
  status: 'unset' | 'ok' | 'error';
  statusMessage: string;
  links: { traceId: string; spanId: string }[];
  events: { name: string; attributes: Record<string, Attr> }[];
}

/** A trace: its spans, by trace id. */
export type Traces = Map<string, TraceSpan[]>;

export interface FindTracesQuery {
  /** Jaeger's query base URL, e.g. http://127.0.0.1:16686 (or a cluster's, port-forwarded). */
  jaeger: string;
  service: string;
  operation?: string;
  start: Date;
  end: Date;
  /** How many traces at most (Jaeger's default is 20 in 1.x, 100 in 2.x). */
  limit?: number;
  signal?: AbortSignal;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: OtlpValue[] };
}
interface OtlpKeyValue {
  key: string;
  value?: OtlpValue;
}
interface OtlpSpan {
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  name?: string;
  kind?: number | string;
  startTimeUnixNano?: string | number;
  endTimeUnixNano?: string | number;
  attributes?: OtlpKeyValue[];
  status?: { code?: number | string; message?: string };
  links?: { traceId?: string; spanId?: string }[];
  events?: { name?: string; attributes?: OtlpKeyValue[] }[];
}
interface OtlpTraces {
  resourceSpans?: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: { spans?: OtlpSpan[] }[];
    /** Older OTLP JSON. */
    instrumentationLibrarySpans?: { spans?: OtlpSpan[] }[];
  }[];
}

const KINDS: readonly SpanKindName[] = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'];

/** An OTLP id as lowercase hex: hex stays, base64 (the v1 gateway's bytes) is decoded. */
export function hexId(id: string | undefined): string {
  if (!id) return '';
  if (/^[0-9a-fA-F]+$/.test(id) && (id.length === 16 || id.length === 32)) return id.toLowerCase();
  const bytes = Buffer.from(id, 'base64');
  return bytes.length === 8 || bytes.length === 16 ? bytes.toString('hex') : id.toLowerCase();
}

function value(v: OtlpValue | undefined): Attr {
  if (!v) return '';
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.arrayValue) return JSON.stringify((v.arrayValue.values ?? []).map(value));
  return '';
}

function attributes(list: OtlpKeyValue[] | undefined): Record<string, Attr> {
  const out: Record<string, Attr> = {};
  for (const kv of list ?? []) out[kv.key] = value(kv.value);
  return out;
}

function kindOf(kind: number | string | undefined): SpanKindName {
  if (typeof kind === 'number') return KINDS[kind] ?? 'unspecified';
  if (typeof kind === 'string') {
    const name = kind.replace(/^SPAN_KIND_/, '').toLowerCase();
    return (KINDS as readonly string[]).includes(name) ? (name as SpanKindName) : 'unspecified';
  }
  return 'unspecified';
}

function statusOf(code: number | string | undefined): TraceSpan['status'] {
  if (code === 1 || code === 'STATUS_CODE_OK') return 'ok';
  if (code === 2 || code === 'STATUS_CODE_ERROR') return 'error';
  return 'unset';
}

/** Nanoseconds (a decimal string, beyond 2^53) as epoch milliseconds. */
function ms(nanos: string | number | undefined): number {
  if (nanos === undefined) return 0;
  const n = BigInt(nanos);
  return Number(n / 1000n) / 1000;
}

/** The spans of an OTLP JSON traces document, flattened. */
export function toSpans(doc: OtlpTraces): TraceSpan[] {
  const out: TraceSpan[] = [];
  for (const rs of doc.resourceSpans ?? []) {
    const resource = attributes(rs.resource?.attributes);
    const service = typeof resource['service.name'] === 'string' ? resource['service.name'] : '';
    for (const ss of [...(rs.scopeSpans ?? []), ...(rs.instrumentationLibrarySpans ?? [])]) {
      for (const s of ss.spans ?? []) {
        const startMs = ms(s.startTimeUnixNano);
        const endMs = ms(s.endTimeUnixNano);
        out.push({
          traceId: hexId(s.traceId),
          spanId: hexId(s.spanId),
          parentSpanId: hexId(s.parentSpanId),
          name: s.name ?? '',
          kind: kindOf(s.kind),
          service,
          startMs,
          endMs,
          durationMs: endMs - startMs,
          attributes: attributes(s.attributes),
          resource,
          status: statusOf(s.status?.code),
          statusMessage: s.status?.message ?? '',
          links: (s.links ?? []).map((l) => ({ traceId: hexId(l.traceId), spanId: hexId(l.spanId) })),
          events: (s.events ?? []).map((e) => ({ name: e.name ?? '', attributes: attributes(e.attributes) })),
        });
      }
    }
  }
  return out;
}

/** Spans grouped by trace, each trace's spans by start time; a span Jaeger sent twice is kept once. */
export function groupByTrace(spans: readonly TraceSpan[]): Traces {
  const traces: Traces = new Map();
  const seen = new Set<string>();
  for (const s of spans) {
    const key = `${s.traceId}/${s.spanId}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const list = traces.get(s.traceId) ?? [];
    list.push(s);
    traces.set(s.traceId, list);
  }
  for (const list of traces.values()) list.sort((a, b) => a.startMs - b.startMs);
  return traces;
}

/** `GET /api/v3/traces`: the traces with a span of `service` that started in [start, end]. */
export async function findTraces(q: FindTracesQuery): Promise<Traces> {
  const url = new URL('/api/v3/traces', q.jaeger);
  url.searchParams.set('query.service_name', q.service);
  if (q.operation) url.searchParams.set('query.operation_name', q.operation);
  url.searchParams.set('query.start_time_min', q.start.toISOString());
  url.searchParams.set('query.start_time_max', q.end.toISOString());
  const limit = String(q.limit ?? 1000);
  url.searchParams.set('query.num_traces', limit);
  url.searchParams.set('query.search_depth', limit);
  let res: Response;
  try {
    res = await fetch(url, { signal: q.signal ?? AbortSignal.timeout(30_000), headers: { accept: 'application/json' } });
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`Jaeger's query API at ${url.origin} did not answer (${cause?.code ?? cause?.message ?? (error as Error).message}): is --jaeger right?`, { cause: error });
  }
  const body = await res.text();
  if (res.status === 404) return new Map();
  if (!res.ok) throw new Error(`Jaeger ${url.pathname}${url.search}: HTTP ${res.status}: ${body.slice(0, 500)}`);
  const parsed = JSON.parse(body) as { result?: OtlpTraces } & OtlpTraces;
  return groupByTrace(toSpans(parsed.result ?? parsed));
}

/** The services Jaeger knows (`GET /api/v3/services`). */
export async function services(jaeger: string): Promise<string[]> {
  const res = await fetch(new URL('/api/v3/services', jaeger), { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`Jaeger /api/v3/services: HTTP ${res.status}`);
  return ((await res.json()) as { services?: string[] }).services ?? [];
}

/** The chain of ancestors of `span` in its trace, nearest first; stops at a parent the trace lacks. */
export function ancestors(span: TraceSpan, trace: readonly TraceSpan[]): { chain: TraceSpan[]; missingParent?: string } {
  const byId = new Map(trace.map((s) => [s.spanId, s]));
  const chain: TraceSpan[] = [];
  let at = span;
  while (at.parentSpanId) {
    const parent = byId.get(at.parentSpanId);
    if (!parent) return { chain, missingParent: at.parentSpanId };
    if (chain.includes(parent)) break;
    chain.push(parent);
    at = parent;
  }
  return { chain };
}

/** The children of `span` in its trace. */
export const childrenOf = (span: TraceSpan, trace: readonly TraceSpan[]): TraceSpan[] => trace.filter((s) => s.parentSpanId === span.spanId);
