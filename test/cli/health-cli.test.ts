/**
 * `facematch health`, run as the `helm test` pod runs it: a child process against a gRPC server that
 * answers with the health service the service itself uses (grpc-health-check), JSON on stdout when
 * SERVING, a JSON error and a non-zero status otherwise.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from '../support/shared.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function cli(...args: string[]): Promise<Run> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'health', ...args], { cwd: REPO }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr, ms: performance.now() - t0 }),
    );
  });
}

const SERVICE = 'facematch.v1.FacematchService';
let server: Server;
let address: string;
let health: HealthImplementation;

beforeAll(async () => {
  server = new Server();
  health = new HealthImplementation({ '': 'SERVING', [SERVICE]: 'SERVING', 'other.Service': 'NOT_SERVING' });
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
});
afterAll(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe('facematch health', () => {
  it('SERVING: exit 0 and one JSON line naming the address, the service (facematch.v1.FacematchService by default) and the status', async () => {
    const run = await cli('--address', address);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ address, service: SERVICE, status: 'SERVING' });
    const whole = await cli('--address', address, '--service=');
    expect(JSON.parse(whole.stdout)).toEqual({ address, service: '', status: 'SERVING' });
  });

  it('NOT_SERVING (a replica shutting down): exit 1, BACKEND_UNAVAILABLE saying so, nothing on stdout', async () => {
    health.setStatus(SERVICE, 'NOT_SERVING');
    try {
      const run = await cli('--address', address);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe('');
      const error = JSON.parse(run.stderr) as { code: string; message: string };
      expect(error.code).toBe('BACKEND_UNAVAILABLE');
      expect(error.message).toContain(`"${SERVICE}" is NOT_SERVING`);
    } finally {
      health.setStatus(SERVICE, 'SERVING');
    }
  });

  it('a service the server does not know: exit 1 naming it', async () => {
    const run = await cli('--address', address, '--service', 'no.Such');
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stderr)).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining('does not know the service "no.Such"') as string });
  });

  it('nothing listening: exit 1 naming the address and UNAVAILABLE, without waiting for the deadline', async () => {
    const port = await closedPort();
    const run = await cli('--address', `127.0.0.1:${port}`, '--timeout-ms', '20000');
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stderr)).toMatchObject({ code: 'BACKEND_UNAVAILABLE', message: expect.stringContaining(`127.0.0.1:${port} failed: UNAVAILABLE`) as string });
    expect(run.ms).toBeLessThan(15_000);
  });

  it('usage errors exit 2: a bad --timeout-ms, an address without a port', async () => {
    for (const args of [['--timeout-ms', 'soon'], ['--address', 'facematch']]) {
      const run = await cli(...args);
      expect(run.code, args.join(' ')).toBe(2);
      expect((JSON.parse(run.stderr) as { code: string }).code).toBe('INVALID_ARGUMENT');
    }
  });
});
