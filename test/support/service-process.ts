/**
 * `facematch serve` as a child process (as the image runs it) for the tests and benches that put
 * several replicas behind a real envoy: a fixed gRPC port when asked (envoy's loopback cluster is
 * STATIC, so a restarted replica must come back on the port it had), its stderr kept (the last
 * 16 KiB) for a failure message, and its request counters read from its own /metrics.
 *
 * The replica gets the `test` pack, FACEMATCH_INFERENCE_WORKERS=1 (the machines have two cores),
 * loopback addresses, and every other variable from this process's environment: the stores of
 * `scripts/test-env` when the integration run set them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOOPBACK_SERVICE } from '../../e2e/support.js';
import { MODELS_DIR, REPO } from './shared.js';

export interface ServiceProcess {
  name: string;
  grpcPort: number;
  httpPort: number;
  dataDir: string;
  child: ChildProcess;
  /** Resolves when the process has exited (and been reaped). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** The last 16 KiB of its stderr (JSON log lines). */
  stderr(): string;
  /** SIGTERM, SIGKILL after `graceMs`; resolves once it exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartServiceOptions {
  name: string;
  dataDir: string;
  /** The gRPC port; default 0 (a free one). */
  grpcPort?: number;
  /** Further environment, over the defaults. */
  env?: NodeJS.ProcessEnv;
  /** How long the start (models, stores) may take; default 90 s. */
  startTimeoutMs?: number;
}

/** A TCP port free on 127.0.0.1 right now (bound and released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts `facematch serve`; resolves once it printed its ports (models loaded, stores open, health SERVING). */
export async function startService(o: StartServiceOptions): Promise<ServiceProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'serve'], {
    cwd: REPO,
    env: {
      ...process.env,
      ...LOOPBACK_SERVICE,
      FACEMATCH_MODEL_PACK: 'test',
      FACEMATCH_MODELS_DIR: MODELS_DIR,
      FACEMATCH_DATA_DIR: o.dataDir,
      FACEMATCH_INFERENCE_WORKERS: '1',
      FACEMATCH_LOG_LEVEL: 'warn',
      FACEMATCH_GRPC_PORT: String(o.grpcPort ?? 0),
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    log = (log + s).slice(-16_000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  void exited.then(() => process.removeListener('exit', killOnExit));

  const lines = createInterface({ input: child.stdout });
  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${o.name}: serve printed no ports within ${o.startTimeoutMs ?? 90_000} ms; stderr:\n${log}`));
    }, o.startTimeoutMs ?? 90_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as { grpcPort: number; httpPort: number });
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${o.name}: serve exited (${code ?? signal}) before it served; stderr:\n${log}`));
    });
  });
  // Nothing else is expected on stdout; keep it drained.
  lines.on('line', () => undefined);

  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  return {
    name: o.name,
    grpcPort: ports.grpcPort,
    httpPort: ports.httpPort,
    dataDir: o.dataDir,
    child,
    exited,
    running,
    stderr: () => log,
    async stop(graceMs = 15_000) {
      if (!running()) return;
      child.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
      if (!done) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** The samples of one metric family in a Prometheus text page, each with its labels. */
export function metricSamples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  const line = new RegExp(`^${name}(?:\\{([^}]*)\\})?\\s+(\\S+)$`);
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const kv of (m[1] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]!] = kv[2]!;
    out.push({ labels, value: Number(m[2]) });
  }
  return out;
}

/** A replica's `facematch_requests_total` of one method (gRPC), by outcome code (OK, OVERLOADED ...). */
export async function requestCounts(httpPort: number, method: string): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`, { signal: AbortSignal.timeout(5000) });
  const counts: Record<string, number> = {};
  for (const s of metricSamples(await res.text(), 'facematch_requests_total')) {
    if (s.labels.method !== method || s.labels.transport !== 'grpc') continue;
    const code = s.labels.code ?? '?';
    counts[code] = (counts[code] ?? 0) + s.value;
  }
  return counts;
}

/** A replica's `facematch_in_flight` gauge. */
export async function inFlight(httpPort: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`, { signal: AbortSignal.timeout(5000) });
  return metricSamples(await res.text(), 'facematch_in_flight')[0]?.value ?? 0;
}
