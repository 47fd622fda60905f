/**
 * `npm run report:latency`: where the time goes per photo, read back from Jaeger.
 *
 *   npm run report:latency -- [--jaeger URL] [--service facematch] [--since 1h | --start T --end T]
 *                             [--event ID] [--crowd 10] [--limit 1000] [--out DIR]
 *
 * Asks Jaeger's query API (`/api/v3/traces`) for the traces with a span of `--service` in the window,
 * times each ProcessPhoto request and its stages (scripts/latency/report.ts says what is timed and
 * how shares are counted), prints p50/p95/p99 per stage and end to end with each part's share of the
 * total, for small photos and for crowds (`--crowd`: the face count from which a photo is a crowd),
 * and writes DIR/latency.md, DIR/latency.json and DIR/latency.svg (default DIR reports/latency).
 *
 * --jaeger defaults to FACEMATCH_TEST_JAEGER_QUERY (scripts/test-env env jaeger), else
 * http://127.0.0.1:16686. Against a cluster: `kubectl port-forward svc/<jaeger-query> 16686` and
 * `--jaeger http://127.0.0.1:16686`. Times: --since 30m / 2h / 1d, or --start and --end as ISO 8601.
 */
import { parseReportArgs, reportLatency } from './latency/run.js';

async function main(): Promise<void> {
  const args = parseReportArgs(process.argv.slice(2));
  const { text, files, traces, report } = await reportLatency(args);
  const photos = report.groups.find((g) => g.group === 'all')!.photos;
  process.stdout.write(`${traces} traces, ${photos} photos from ${args.jaeger} (${args.service}, ${args.start.toISOString()} to ${args.end.toISOString()})\n\n`);
  process.stdout.write(text);
  process.stdout.write(`\nwrote ${files.markdown}, ${files.json}, ${files.svg}\n`);
  if (photos === 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  process.stderr.write(`report:latency: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
