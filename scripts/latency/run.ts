/** `npm run report:latency`'s arguments and run (scripts/report-latency.ts is the command; the e2e calls `reportLatency` itself). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { findTraces } from './jaeger.js';
import { buildReport, markdownTable, photoTimings, svgChart, textTable, type LatencyReport } from './report.js';

export interface ReportArgs {
  jaeger: string;
  service: string;
  start: Date;
  end: Date;
  eventId?: string;
  crowdFaces: number;
  limit: number;
  out: string;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseSince(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd])$/.exec(s.trim());
  if (!m) throw new Error(`--since ${s}: expected a number and a unit (s, m, h, d), e.g. 1h`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

function date(s: string, what: string): Date {
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) throw new Error(`${what} ${s}: not a date (ISO 8601, e.g. 2026-12-01T23:00:00Z)`);
  return d;
}

export function parseReportArgs(argv: string[], env: NodeJS.ProcessEnv = process.env, now = new Date()): ReportArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      jaeger: { type: 'string' },
      service: { type: 'string', default: 'facematch' },
      since: { type: 'string' },
      start: { type: 'string' },
      end: { type: 'string' },
      event: { type: 'string' },
      crowd: { type: 'string', default: '10' },
      limit: { type: 'string', default: '1000' },
      out: { type: 'string', default: path.join('reports', 'latency') },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.since && (values.start || values.end)) throw new Error('give --since or --start/--end, not both');
  const end = values.end ? date(values.end, '--end') : now;
  const start = values.start ? date(values.start, '--start') : new Date(end.getTime() - parseSince(values.since ?? '1h'));
  if (start >= end) throw new Error('--start must be before --end');
  const crowdFaces = Number(values.crowd);
  const limit = Number(values.limit);
  if (!Number.isInteger(crowdFaces) || crowdFaces < 1) throw new Error(`--crowd ${values.crowd}: a positive whole number of faces`);
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`--limit ${values.limit}: a positive whole number of traces`);
  return {
    jaeger: values.jaeger ?? env.FACEMATCH_TEST_JAEGER_QUERY ?? 'http://127.0.0.1:16686',
    service: values.service,
    start,
    end,
    ...(values.event ? { eventId: values.event } : {}),
    crowdFaces,
    limit,
    out: values.out,
  };
}

export interface WrittenReport {
  report: LatencyReport;
  text: string;
  files: { markdown: string; json: string; svg: string };
  traces: number;
}

/** Reads the traces, builds the report and writes its three files. */
export async function reportLatency(a: ReportArgs): Promise<WrittenReport> {
  const traces = await findTraces({ jaeger: a.jaeger, service: a.service, start: a.start, end: a.end, limit: a.limit });
  const timings = photoTimings(traces, { service: a.service, ...(a.eventId ? { eventId: a.eventId } : {}) });
  const report = buildReport(timings, {
    source: { jaeger: a.jaeger, service: a.service, start: a.start.toISOString(), end: a.end.toISOString(), ...(a.eventId ? { eventId: a.eventId } : {}) },
    crowdFaces: a.crowdFaces,
  });
  await mkdir(a.out, { recursive: true });
  const files = { markdown: path.join(a.out, 'latency.md'), json: path.join(a.out, 'latency.json'), svg: path.join(a.out, 'latency.svg') };
  await writeFile(files.markdown, markdownTable(report));
  await writeFile(files.json, `${JSON.stringify({ ...report, photos: timings }, null, 2)}\n`);
  await writeFile(files.svg, svgChart(report));
  let text = textTable(report);
  if (traces.size >= a.limit) text += `(Jaeger returned ${traces.size} traces, the --limit: older ones in the window are left out)\n`;
  return { report, text, files, traces: traces.size };
}
