/**
 * A real envoy on loopback, running the one shipped sidecar configuration (k8s/envoy/envoy.yaml)
 * with only what a loopback test must change:
 *
 *   - the upstream cluster `facematch`: STATIC, on the given 127.0.0.1 ports (in the cluster it is
 *     STRICT_DNS on a headless Service name, which does not resolve here);
 *   - the listener `grpc`: 127.0.0.1 and the given port, or a free one (port 0: envoy binds it and
 *     the admin API says which);
 *   - admin: 127.0.0.1 port 0, written by envoy to --admin-address-path.
 *
 * Everything else (routes, retry policy, timeouts, health checks, outlier detection, buffer limits)
 * is the shipped file's, so a test exercises what the pods run. `edit` may change more for one test
 * (a shorter per_try_timeout, say), in plain sight in that test.
 *
 * The binary is FACEMATCH_TEST_ENVOY (`scripts/test-env env envoy`; installed by
 * `scripts/test-env up envoy`). Each envoy runs with --concurrency 1 (the test machines have two
 * busy cores) and --disable-hot-restart: no shared memory and no hot-restart socket, so envoys
 * started at the same time by different tests cannot collide (which is what a unique --base-id
 * would otherwise have to ensure) and a killed one leaves nothing behind in /dev/shm.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The shipped sidecar configuration. */
export const ENVOY_CONFIG = path.join(ROOT, 'k8s', 'envoy', 'envoy.yaml');
/** Its upstream cluster and listener, by name. */
export const UPSTREAM_CLUSTER = 'facematch';
export const GRPC_LISTENER = 'grpc';

/** The envoy binary of `scripts/test-env up envoy`, when the test environment names one. */
export function envoyBinary(): string | undefined {
  return process.env.FACEMATCH_TEST_ENVOY || undefined;
}

/** A parsed envoy bootstrap: plain JSON-like data. */
export type EnvoyConfig = Record<string, unknown>;
type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, what: string): Obj {
  if (!isObj(v)) throw new Error(`envoy config: ${what} is not an object`);
  return v;
}

function list(v: unknown, what: string): Obj[] {
  if (!Array.isArray(v) || !v.every(isObj)) throw new Error(`envoy config: ${what} is not a list of objects`);
  return v;
}

function named(items: Obj[], name: string, what: string): Obj {
  const found = items.find((i) => i.name === name);
  if (!found) throw new Error(`envoy config: no ${what} named ${name}`);
  return found;
}

/** The cluster `name` of a bootstrap, for edits. */
export function clusterOf(config: EnvoyConfig, name = UPSTREAM_CLUSTER): Obj {
  return named(list(obj(config.static_resources, 'static_resources').clusters, 'clusters'), name, 'cluster');
}

/** The first route of the listener `grpc` whose prefix is `prefix`, for edits. */
export function routeOf(config: EnvoyConfig, prefix: string): Obj {
  const listener = named(list(obj(config.static_resources, 'static_resources').listeners, 'listeners'), GRPC_LISTENER, 'listener');
  for (const chain of list(listener.filter_chains, 'filter_chains')) {
    for (const filter of list(chain.filters, 'filters')) {
      const hcm = obj(filter.typed_config, 'typed_config');
      for (const vhost of list(obj(hcm.route_config, 'route_config').virtual_hosts, 'virtual_hosts')) {
        const route = list(vhost.routes, 'routes').find((r) => obj(r.match, 'match').prefix === prefix);
        if (route) return route;
      }
    }
  }
  throw new Error(`envoy config: no route for ${prefix}`);
}

/** Reads a configuration file (YAML) as data; YAML anchors become shared objects, as envoy reads them. */
export async function readEnvoyConfig(file = ENVOY_CONFIG): Promise<EnvoyConfig> {
  return obj(parse(await readFile(file, 'utf8')), file);
}

/**
 * The shipped configuration made runnable on loopback: the upstream cluster STATIC on `upstreams`
 * (127.0.0.1 ports), the listener on 127.0.0.1:`port`, admin on 127.0.0.1:0. Nothing else changes.
 * Returns a new object; `config` is left as it was.
 */
export function loopbackConfig(config: EnvoyConfig, upstreams: readonly number[], port: number): EnvoyConfig {
  if (upstreams.length === 0) throw new Error('loopbackConfig: no upstream port');
  const copy = structuredClone(config);
  obj(copy.admin, 'admin').address = { socket_address: { address: '127.0.0.1', port_value: 0 } };
  const cluster = clusterOf(copy);
  // STRICT_DNS (the DNS cluster extension) → STATIC: the same endpoints, given as addresses.
  delete cluster.cluster_type;
  cluster.type = 'STATIC';
  cluster.load_assignment = {
    cluster_name: UPSTREAM_CLUSTER,
    endpoints: [{ lb_endpoints: upstreams.map((p) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: p } } } })) }],
  };
  const listener = named(list(obj(copy.static_resources, 'static_resources').listeners, 'listeners'), GRPC_LISTENER, 'listener');
  listener.address = { socket_address: { address: '127.0.0.1', port_value: port } };
  return copy;
}

/** `envoy --mode validate -c FILE`: the exit code and what envoy printed. */
export async function validateEnvoyConfig(file: string, binary = envoyBinary()): Promise<{ code: number | null; output: string }> {
  if (!binary) throw new Error('no envoy binary: FACEMATCH_TEST_ENVOY is not set (scripts/test-env up envoy)');
  const child = spawn(binary, ['--mode', 'validate', '-c', file, '--disable-hot-restart', '--concurrency', '1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr.on('data', (b: Buffer) => (output += b.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  return { code, output };
}

/** One upstream host of `/clusters?format=json`, as a test wants it. */
export interface EnvoyHost {
  /** 127.0.0.1:port */
  address: string;
  /** Envoy routes to it: no active health check, outlier or other failure flag is set. */
  healthy: boolean;
  /** The failure flags set (failed_active_health_check, failed_outlier_check, ...). */
  flags: string[];
  /** Its counters (rq_total, rq_success, rq_error, cx_connect_fail, ...). */
  stats: Record<string, number>;
}

/** One access-log line of the shipped format (see k8s/envoy/envoy.yaml), as envoy wrote it. */
export type AccessLogEntry = Record<string, string | number | null>;

export interface RunningEnvoy {
  /** The gRPC listener, on 127.0.0.1. */
  port: number;
  /** The admin API, on 127.0.0.1. */
  adminPort: number;
  /** The configuration file envoy runs (a loopback copy of the shipped one). */
  configPath: string;
  /** envoy's own log (--log-path). */
  logPath: string;
  /** The access log (envoy's stdout). */
  accessLogPath: string;
  /** Counters and gauges of `/stats?format=json` (histograms left out), by name. */
  stats(): Promise<Record<string, number>>;
  /** The hosts of the upstream cluster, from `/clusters?format=json`. */
  hosts(): Promise<EnvoyHost[]>;
  /** The access log so far, one object per call. */
  accessLog(): Promise<AccessLogEntry[]>;
  /** GET an admin path (e.g. /ready): status and body. */
  admin(pathAndQuery: string): Promise<{ status: number; body: string }>;
  /** SIGTERM (SIGKILL after 5 s), then remove the temporary folder. Idempotent. */
  stop(): Promise<void>;
}

export interface StartEnvoyOptions {
  /** 127.0.0.1 ports of the upstream cluster's replicas. */
  upstreams: readonly number[];
  /** The listener's port; default 0 (a free port, read back from the admin API). */
  port?: number;
  /** The configuration to start from; default the shipped k8s/envoy/envoy.yaml. */
  configFile?: string;
  /** Further changes for one test, applied after the loopback swap. */
  edit?: (config: EnvoyConfig) => void;
  /** envoy's --log-level; default info. */
  logLevel?: 'trace' | 'debug' | 'info' | 'warning' | 'error';
  /** How long to wait for envoy to be LIVE and its listener to answer; default 30 s. */
  readyTimeoutMs?: number;
  binary?: string;
}

async function adminGet(adminPort: number, pathAndQuery: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}${pathAndQuery}`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.text() };
}

function tcpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

async function tail(file: string, lines = 30): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Starts envoy on the shipped configuration in front of `upstreams`; resolves once it is LIVE and its listener accepts connections. */
export async function startEnvoy(options: StartEnvoyOptions): Promise<RunningEnvoy> {
  const binary = options.binary ?? envoyBinary();
  if (!binary) throw new Error('no envoy binary: FACEMATCH_TEST_ENVOY is not set (scripts/test-env up envoy)');
  const config = loopbackConfig(await readEnvoyConfig(options.configFile), options.upstreams, options.port ?? 0);
  options.edit?.(config);

  const dir = await mkdtemp(path.join(tmpdir(), 'facematch-envoy-'));
  const configPath = path.join(dir, 'envoy.yaml');
  const logPath = path.join(dir, 'envoy.log');
  const accessLogPath = path.join(dir, 'access.log');
  const adminAddressPath = path.join(dir, 'admin-address');
  await writeFile(configPath, stringify(config, { aliasDuplicateObjects: false }));

  const out = openSync(accessLogPath, 'a');
  const err = openSync(logPath, 'a');
  const child = spawn(
    binary,
    [
      '-c', configPath,
      '--concurrency', '1',
      '--disable-hot-restart',
      '--admin-address-path', adminAddressPath,
      '--log-path', logPath,
      '--log-level', options.logLevel ?? 'info',
      // The access log reaches its file within 100 ms (default 10 s), so a test can read a call's line.
      '--file-flush-interval-msec', '100',
    ],
    { stdio: ['ignore', out, err] },
  );
  closeSync(out);
  closeSync(err);
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', killOnExit);
    if (!exited(child)) {
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const killed = await Promise.race([gone.then(() => true), sleep(5000).then(() => false)]);
      if (!killed) {
        child.kill('SIGKILL');
        await gone;
      }
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  const fail = async (why: string): Promise<never> => {
    const log = await tail(logPath);
    await stop();
    throw new Error(`envoy ${why}\n---- ${logPath} ----\n${log}`);
  };

  // The admin address (envoy writes it once admin listens), then /ready, then the listener.
  let adminPort = 0;
  let port = options.port ?? 0;
  for (;;) {
    if (exited(child)) await fail(`exited (code ${child.exitCode}, signal ${child.signalCode}) before it was ready`);
    if (Date.now() > deadline) await fail('was not LIVE in time');
    if (!adminPort) {
      const address = (await readFile(adminAddressPath, 'utf8').catch(() => '')).trim();
      const m = /:(\d+)$/.exec(address);
      if (m?.[1]) adminPort = Number(m[1]);
    }
    if (adminPort) {
      const ready = await adminGet(adminPort, '/ready').catch(() => undefined);
      if (ready?.status === 200 && ready.body.trim() === 'LIVE') {
        if (!port) port = await boundListenerPort(adminPort);
        if (port && (await tcpAnswers(port))) break;
      }
    }
    await sleep(50);
  }

  return {
    port,
    adminPort,
    configPath,
    logPath,
    accessLogPath,
    admin: (pathAndQuery) => adminGet(adminPort, pathAndQuery),
    async stats() {
      const { status, body } = await adminGet(adminPort, '/stats?format=json');
      if (status !== 200) throw new Error(`envoy /stats: HTTP ${status}`);
      const out: Record<string, number> = {};
      for (const s of (JSON.parse(body) as { stats: { name?: string; value?: number }[] }).stats) {
        if (typeof s.name === 'string' && typeof s.value === 'number') out[s.name] = s.value;
      }
      return out;
    },
    async hosts() {
      const { status, body } = await adminGet(adminPort, '/clusters?format=json');
      if (status !== 200) throw new Error(`envoy /clusters: HTTP ${status}`);
      const parsed = JSON.parse(body) as { cluster_statuses?: ClusterStatus[] };
      const cluster = parsed.cluster_statuses?.find((c) => c.name === UPSTREAM_CLUSTER);
      return (cluster?.host_statuses ?? []).map((h) => {
        const health = h.health_status ?? {};
        const flags = Object.entries(health)
          .filter(([k, v]) => k !== 'eds_health_status' && v === true)
          .map(([k]) => k);
        const edsOk = health.eds_health_status === undefined || health.eds_health_status === 'HEALTHY';
        const stats: Record<string, number> = {};
        for (const s of h.stats ?? []) if (s.name) stats[s.name] = Number(s.value ?? 0);
        const a = h.address?.socket_address;
        return { address: `${a?.address}:${a?.port_value}`, healthy: edsOk && flags.length === 0, flags, stats };
      });
    },
    async accessLog() {
      const text = await readFile(accessLogPath, 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as AccessLogEntry);
    },
    stop,
  };
}

interface ClusterStatus {
  name?: string;
  host_statuses?: {
    address?: { socket_address?: { address?: string; port_value?: number } };
    stats?: { name?: string; value?: string | number }[];
    health_status?: Record<string, unknown>;
  }[];
}

/** The port envoy bound for the `grpc` listener (configured as port 0). */
async function boundListenerPort(adminPort: number): Promise<number> {
  const { status, body } = await adminGet(adminPort, '/listeners?format=json');
  if (status !== 200) return 0;
  const parsed = JSON.parse(body) as {
    listener_statuses?: { name?: string; local_address?: { socket_address?: { port_value?: number } } }[];
  };
  return parsed.listener_statuses?.find((l) => l.name === GRPC_LISTENER)?.local_address?.socket_address?.port_value ?? 0;
}
