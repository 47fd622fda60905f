/**
 * The latency report's arithmetic and its outputs, without I/O: per-photo timings taken from traces,
 * p50/p95/p99 per stage and end to end, each part's share of the total, for small photos and for
 * crowds (by the face count the spans carry), as a text table, a markdown table, JSON and an SVG
 * chart.
 *
 * What is timed, per photo (one trace):
 *   - the service's request span (`facematch.process_photo`) and its stage spans
 *     (`facematch.stage.<stage>`, children of it), each stage summed if it ran more than once;
 *   - "service, outside stages": the request minus its stages (locks, reading the photo's previous
 *     record, span bookkeeping);
 *   - when the trace has a caller (the controller's photo span at its root): "gRPC + Envoy",
 *     the caller's span minus the service's request (serialisation, the network, Envoy, queueing
 *     in the client), and "end to end", the caller's span.
 * The shares are of the sum over the group's photos of the total (end to end when every photo has
 * a caller, else the service request), so the parts of one column add up to 100%. The stages of a
 * FACECAM enrolment partly overlap (its drawing runs beside its vector store and search), so its
 * shares can add up to more; the e2e's batch is all action shots, whose stages run one after the
 * other.
 *
 * Percentiles are nearest-rank over the photos of the group (with 3 crowd photos, p95 and p99 are
 * the slowest one: the table prints n so nobody reads more into them than is there).
 */
import { ATTR, SPAN, STAGES } from '../../src/telemetry/attributes.js';
import type { Traces } from './jaeger.js';

export const STAGE_PREFIX = 'facematch.stage.';
export const OTHER = 'service, outside stages';
export const TRANSPORT = 'gRPC + Envoy';
export const REQUEST = 'service request';
export const END_TO_END = 'end to end';

export interface PhotoTiming {
  traceId: string;
  photoId: string;
  eventId: string;
  kind: string;
  /** Faces detected (the face count attribute), when the spans carry it. */
  faces: number | undefined;
  requestMs: number;
  /** The caller's span at the trace's root (the controller's photo span), when there is one. */
  endToEndMs: number | undefined;
  /** Milliseconds per stage. */
  stages: Record<string, number>;
  failed: boolean;
}

export interface TimingOptions {
  /** The service whose request spans are timed; default facematch. */
  service?: string;
  /** Only photos of this event. */
  eventId?: string;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** One timing per request span of `service` in `traces`. */
export function photoTimings(traces: Traces, o: TimingOptions = {}): PhotoTiming[] {
  const service = o.service ?? 'facematch';
  const out: PhotoTiming[] = [];
  for (const [traceId, spans] of traces) {
    for (const req of spans.filter((s) => s.name === SPAN.processPhoto && s.service === service)) {
      const eventId = String(req.attributes[ATTR.eventId] ?? '');
      if (o.eventId !== undefined && eventId !== o.eventId) continue;
      const stageSpans = spans.filter((s) => s.parentSpanId === req.spanId && s.name.startsWith(STAGE_PREFIX));
      const stages: Record<string, number> = {};
      for (const s of stageSpans) {
        const stage = s.name.slice(STAGE_PREFIX.length);
        stages[stage] = (stages[stage] ?? 0) + s.durationMs;
      }
      const faces = num(req.attributes[ATTR.faces]) ?? stageSpans.map((s) => num(s.attributes[ATTR.faces])).find((n) => n !== undefined);
      const root = spans.find((s) => !s.parentSpanId);
      const caller = root && root !== req && root.service !== service ? root : undefined;
      out.push({
        traceId,
        photoId: String(req.attributes[ATTR.photoId] ?? ''),
        eventId,
        kind: String(req.attributes[ATTR.kind] ?? ''),
        faces,
        requestMs: req.durationMs,
        endToEndMs: caller?.durationMs,
        stages,
        failed: req.status === 'error' || (caller?.status === 'error'),
      });
    }
  }
  return out;
}

/** Nearest-rank percentile of `values` (p in 0..100); NaN for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export interface Row {
  name: string;
  /** A pipeline stage (not a derived row). */
  stage: boolean;
  n: number;
  p50: number;
  p95: number;
  p99: number;
  mean: number;
  /** Of the group's total (see the file comment); undefined for the total rows. */
  share: number | undefined;
}

export type GroupName = 'all' | 'small' | 'crowd';

export interface GroupSummary {
  group: GroupName;
  label: string;
  photos: number;
  minFaces: number | undefined;
  maxFaces: number | undefined;
  /** The total the shares are of: END_TO_END or REQUEST. */
  total: string;
  rows: Row[];
}

export interface LatencyReport {
  generatedAt: string;
  source: { jaeger: string; service: string; start: string; end: string; eventId?: string };
  /** A photo with at least this many faces is a crowd. */
  crowdFaces: number;
  /** Photos whose request or caller span failed: left out of the figures. */
  failed: number;
  /** Photos without a face count (counted as small). */
  withoutFaceCount: number;
  groups: GroupSummary[];
}

function stageOrder(timings: readonly PhotoTiming[]): string[] {
  const seen = new Set<string>();
  for (const t of timings) for (const s of Object.keys(t.stages)) seen.add(s);
  const known = (STAGES as readonly string[]).filter((s) => seen.has(s));
  return [...known, ...[...seen].filter((s) => !known.includes(s)).sort()];
}

function row(name: string, stage: boolean, values: number[], totalSum: number | undefined): Row {
  const sum = values.reduce((a, b) => a + b, 0);
  return {
    name,
    stage,
    n: values.length,
    p50: percentile(values, 50),
    p95: percentile(values, 95),
    p99: percentile(values, 99),
    mean: values.length ? sum / values.length : Number.NaN,
    share: totalSum ? sum / totalSum : undefined,
  };
}

export function summarize(timings: readonly PhotoTiming[], group: GroupName, label: string): GroupSummary {
  const stages = stageOrder(timings);
  const withCaller = timings.length > 0 && timings.every((t) => t.endToEndMs !== undefined);
  const totals = timings.map((t) => (withCaller ? t.endToEndMs! : t.requestMs));
  const totalSum = totals.reduce((a, b) => a + b, 0);
  const rows: Row[] = stages.map((s) => row(s, true, timings.map((t) => t.stages[s] ?? 0), totalSum));
  const staged = (t: PhotoTiming): number => Object.values(t.stages).reduce((a, b) => a + b, 0);
  rows.push(row(OTHER, false, timings.map((t) => Math.max(0, t.requestMs - staged(t))), totalSum));
  if (withCaller) rows.push(row(TRANSPORT, false, timings.map((t) => Math.max(0, t.endToEndMs! - t.requestMs)), totalSum));
  rows.push({ ...row(REQUEST, false, timings.map((t) => t.requestMs), totalSum), share: withCaller ? undefined : 1 });
  if (withCaller) rows.push({ ...row(END_TO_END, false, totals, totalSum), share: 1 });
  const faces = timings.map((t) => t.faces).filter((f): f is number => f !== undefined);
  return {
    group,
    label,
    photos: timings.length,
    minFaces: faces.length ? Math.min(...faces) : undefined,
    maxFaces: faces.length ? Math.max(...faces) : undefined,
    total: withCaller ? END_TO_END : REQUEST,
    rows,
  };
}

export interface ReportOptions {
  source: LatencyReport['source'];
  crowdFaces?: number;
  now?: Date;
}

export function buildReport(all: readonly PhotoTiming[], o: ReportOptions): LatencyReport {
  const crowdFaces = o.crowdFaces ?? 10;
  const ok = all.filter((t) => !t.failed);
  const isCrowd = (t: PhotoTiming): boolean => (t.faces ?? 0) >= crowdFaces;
  return {
    generatedAt: (o.now ?? new Date()).toISOString(),
    source: o.source,
    crowdFaces,
    failed: all.length - ok.length,
    withoutFaceCount: ok.filter((t) => t.faces === undefined).length,
    groups: [
      summarize(ok.filter((t) => !isCrowd(t)), 'small', `small photos (< ${crowdFaces} faces)`),
      summarize(ok.filter(isCrowd), 'crowd', `crowds (≥ ${crowdFaces} faces)`),
      summarize(ok, 'all', 'all photos'),
    ],
  };
}

/** Milliseconds for a person: 0.8 ms, 42 ms, 1.24 s. */
export function fmtMs(v: number): string {
  if (!Number.isFinite(v)) return '-';
  if (v < 10) return `${v.toFixed(1)} ms`;
  if (v < 1000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(2)} s`;
}

const fmtShare = (s: number | undefined): string => (s === undefined || !Number.isFinite(s) ? '' : `${(s * 100).toFixed(1)}%`);

function faceRange(g: GroupSummary): string {
  if (g.minFaces === undefined) return 'faces unknown';
  return g.minFaces === g.maxFaces ? `${g.minFaces} faces` : `${g.minFaces}-${g.maxFaces} faces`;
}

const shown = (r: LatencyReport): GroupSummary[] => r.groups.filter((g) => g.group !== 'all' && g.photos > 0);

function tableCells(r: LatencyReport): { sub: string[]; rows: string[][] } {
  const groups = shown(r);
  const names: string[] = [];
  for (const g of groups) for (const row of g.rows) if (!names.includes(row.name)) names.push(row.name);
  // The derived rows last, in their own order.
  const derived = [OTHER, TRANSPORT, REQUEST, END_TO_END];
  const ordered = [...names.filter((n) => !derived.includes(n)), ...derived.filter((n) => names.includes(n))];
  return {
    sub: ['stage', ...groups.flatMap((g) => [`${g.group} p50`, 'p95', 'p99', 'share'])],
    rows: ordered.map((name) => [
      name,
      ...groups.flatMap((g) => {
        const row = g.rows.find((x) => x.name === name);
        return row ? [fmtMs(row.p50), fmtMs(row.p95), fmtMs(row.p99), fmtShare(row.share)] : ['', '', '', ''];
      }),
    ]),
  };
}

const groupLine = (g: GroupSummary): string => `${g.group}: ${g.label}, ${g.photos} photos, ${faceRange(g)}`;

/** The table for a terminal. */
export function textTable(r: LatencyReport): string {
  const groups = shown(r);
  if (groups.length === 0) return 'no photo traces found\n';
  const { sub, rows } = tableCells(r);
  const widths = sub.map((_, i) => Math.max(...[sub, ...rows].map((line) => line[i]!.length), i === 0 ? 24 : 8));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)) + (i > 0 && i % 4 === 0 && i < cells.length - 1 ? '  |' : '')).join('  ').trimEnd();
  const notes: string[] = [];
  if (r.failed) notes.push(`${r.failed} failed photo(s) left out`);
  if (r.withoutFaceCount) notes.push(`${r.withoutFaceCount} photo(s) without a face count, counted as small`);
  notes.push(`shares are of the ${groups[0]!.total} total; percentiles nearest-rank`);
  return `${[...groups.map(groupLine), '', line(sub), ...rows.map(line)].join('\n')}\n(${notes.join('; ')})\n`;
}

/** The table as markdown. */
export function markdownTable(r: LatencyReport): string {
  const groups = shown(r);
  if (groups.length === 0) return 'No photo traces found.\n';
  const { sub, rows } = tableCells(r);
  const lines = [
    groups.map((g) => `**${g.group}**: ${g.label}, ${g.photos} photos, ${faceRange(g)}`).join('; ') + '.',
    '',
    `| ${sub.join(' | ')} |`,
    `|${sub.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((cells) => `| ${cells.map((c, i) => (i === 0 && [REQUEST, END_TO_END].includes(c) ? `**${c}**` : c)).join(' | ')} |`),
    '',
    `Shares are of the ${groups[0]!.total} total; percentiles nearest-rank.${r.failed ? ` ${r.failed} failed photo(s) left out.` : ''}`,
  ];
  return `${lines.join('\n')}\n`;
}

// ---- the chart ------------------------------------------------------------------------------------

/** Tableau 10, then grey for the parts that are not stages. */
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#2f4b7c', '#d37295', '#a0cbe8'];
const DERIVED_COLOUR: Record<string, string> = { [OTHER]: '#bab0ac', [TRANSPORT]: '#79706e' };
const GROUP_COLOUR: Record<GroupName, string> = { small: '#4e79a7', crowd: '#e15759', all: '#555555' };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f1 = (n: number): string => (Math.round(n * 10) / 10).toString();

/**
 * The chart: (1) for small photos and for crowds, a bar split by where the time goes (each part's
 * share of the total, its mean written on it); (2) per stage, p50 to p99 on a log axis, small and
 * crowd side by side.
 */
export function svgChart(r: LatencyReport, title = 'facematch: where the time goes per photo'): string {
  const groups = shown(r);
  const W = 980;
  const left = 190;
  const right = 30;
  const plotW = W - left - right;
  const parts: string[] = [];
  const text = (x: number, y: number, s: string, attrs = ''): void => {
    parts.push(`<text x="${f1(x)}" y="${f1(y)}" ${attrs}>${esc(s)}</text>`);
  };
  let y = 34;
  text(20, y, title, 'font-size="18" font-weight="bold"');
  y += 20;
  text(20, y, `${r.source.service} traces from ${r.source.start} to ${r.source.end}${r.source.eventId ? `, event ${r.source.eventId}` : ''}`, 'font-size="12" fill="#555"');

  // Colours: stages in order, then the derived parts.
  const stageNames: string[] = [];
  for (const g of groups) for (const row of g.rows) if (row.stage && !stageNames.includes(row.name)) stageNames.push(row.name);
  const colour = (name: string): string => DERIVED_COLOUR[name] ?? PALETTE[stageNames.indexOf(name) % PALETTE.length]!;

  // (1) Stacked shares.
  y += 34;
  text(20, y, '1. Share of each part in the total per photo (mean time on the bar)', 'font-size="14" font-weight="bold"');
  y += 14;
  const barH = 34;
  for (const g of groups) {
    const total = g.rows.find((x) => x.name === g.total)!;
    const partsOf = g.rows.filter((x) => x.share !== undefined && x.name !== g.total && x.share > 0);
    text(20, y + 15, g.group === 'crowd' ? 'crowds' : 'small photos', 'font-size="13" font-weight="bold"');
    text(20, y + 30, `${g.photos} photos, ${faceRange(g)}`, 'font-size="11" fill="#555"');
    let x = left;
    for (const p of partsOf) {
      const w = p.share! * plotW;
      parts.push(
        `<rect x="${f1(x)}" y="${f1(y)}" width="${f1(Math.max(w, 0.5))}" height="${barH}" fill="${colour(p.name)}" stroke="#fff" stroke-width="0.5"><title>${esc(`${p.name}: mean ${fmtMs(p.mean)}, ${fmtShare(p.share)}`)}</title></rect>`,
      );
      if (w > 46) {
        text(x + w / 2, y + 14, p.name.length * 6.2 < w ? p.name : p.name.slice(0, Math.max(3, Math.floor(w / 6.5))), 'font-size="11" text-anchor="middle" fill="#fff"');
        text(x + w / 2, y + 28, `${fmtMs(p.mean)} · ${(p.share! * 100).toFixed(0)}%`, 'font-size="10" text-anchor="middle" fill="#fff"');
      }
      x += w;
    }
    text(left + plotW, y + barH + 13, `${g.total}: mean ${fmtMs(total.mean)}, p50 ${fmtMs(total.p50)}, p99 ${fmtMs(total.p99)}`, 'font-size="11" text-anchor="end" fill="#333"');
    y += barH + 26;
  }
  // Legend.
  const legend = [...stageNames, ...Object.keys(DERIVED_COLOUR).filter((n) => groups.some((g) => g.rows.some((x) => x.name === n)))];
  let lx = left;
  for (const name of legend) {
    const w = 22 + name.length * 6.4;
    if (lx + w > W - right) {
      lx = left;
      y += 18;
    }
    parts.push(`<rect x="${f1(lx)}" y="${f1(y - 10)}" width="12" height="12" fill="${colour(name)}"/>`);
    text(lx + 16, y, name, 'font-size="11"');
    lx += w;
  }

  // (2) p50..p99 per row on a log axis.
  y += 38;
  text(20, y, '2. Per stage: p50 (dot), p95 (tick), p99 (end of line), log scale', 'font-size="14" font-weight="bold"');
  let gx = left;
  for (const g of groups) {
    parts.push(`<line x1="${f1(gx)}" y1="${f1(y + 14)}" x2="${f1(gx + 18)}" y2="${f1(y + 14)}" stroke="${GROUP_COLOUR[g.group]}" stroke-width="4"/>`);
    text(gx + 24, y + 18, g.group === 'crowd' ? `crowds (${g.photos})` : `small photos (${g.photos})`, 'font-size="11"');
    gx += 170;
  }
  y += 30;
  const rowNames: string[] = [];
  for (const g of groups) for (const row of g.rows) if (row.name !== OTHER && row.name !== TRANSPORT && !rowNames.includes(row.name)) rowNames.push(row.name);
  const values = groups.flatMap((g) => g.rows.flatMap((x) => [x.p50, x.p99])).filter((v) => Number.isFinite(v) && v > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.max(0.01, Math.min(...values, 1)))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values, 10))));
  const xOf = (v: number): number => left + (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * plotW;
  const rowH = 12 * groups.length + 10;
  const top = y;
  const bottom = y + rowNames.length * rowH;
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    const x = xOf(d);
    parts.push(`<line x1="${f1(x)}" y1="${f1(top - 4)}" x2="${f1(x)}" y2="${f1(bottom)}" stroke="#ddd"/>`);
    text(x, bottom + 14, d < 1000 ? `${+d.toPrecision(1)} ms` : `${d / 1000} s`, 'font-size="10" text-anchor="middle" fill="#555"');
  }
  rowNames.forEach((name, i) => {
    const ry = top + i * rowH;
    if (i % 2 === 1) parts.push(`<rect x="20" y="${f1(ry - 2)}" width="${W - 40}" height="${rowH}" fill="#f6f6f6"/>`);
    text(left - 10, ry + rowH / 2 + 2, name, `font-size="11" text-anchor="end"${[REQUEST, END_TO_END].includes(name) ? ' font-weight="bold"' : ''}`);
    groups.forEach((g, k) => {
      const row = g.rows.find((x) => x.name === name);
      if (!row || !Number.isFinite(row.p50)) return;
      const cy = ry + 6 + k * 12;
      const c = GROUP_COLOUR[g.group];
      parts.push(`<line x1="${f1(xOf(row.p50))}" y1="${f1(cy)}" x2="${f1(xOf(row.p99))}" y2="${f1(cy)}" stroke="${c}" stroke-width="2"/>`);
      parts.push(`<line x1="${f1(xOf(row.p95))}" y1="${f1(cy - 4)}" x2="${f1(xOf(row.p95))}" y2="${f1(cy + 4)}" stroke="${c}" stroke-width="2"/>`);
      parts.push(`<circle cx="${f1(xOf(row.p50))}" cy="${f1(cy)}" r="4" fill="${c}"><title>${esc(`${name}, ${g.group}: p50 ${fmtMs(row.p50)}, p95 ${fmtMs(row.p95)}, p99 ${fmtMs(row.p99)}`)}</title></circle>`);
      // The p50 value beside the line: after its end, or before its start near the right edge.
      if (xOf(row.p99) + 50 < W - right) text(xOf(row.p99) + 6, cy + 4, fmtMs(row.p50), `font-size="9" fill="${c}"`);
      else text(xOf(row.p50) - 7, cy + 4, fmtMs(row.p50), `font-size="9" fill="${c}" text-anchor="end"`);
    });
  });
  y = bottom + 34;
  text(20, y, `Percentiles nearest-rank; a photo with ≥ ${r.crowdFaces} faces is a crowd. Generated ${r.generatedAt}.`, 'font-size="10" fill="#777"');
  const H = y + 16;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${f1(H)}" viewBox="0 0 ${W} ${f1(H)}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${W}" height="${f1(H)}" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

