#!/usr/bin/env node
/**
 * facematch command line. Prints one JSON document on stdout per command; errors go to stderr as
 * JSON `{"code", "message"}` with a non-zero exit status (2 for usage errors, 1 otherwise).
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { trace } from '@opentelemetry/api';
import { parseArgs } from 'node:util';
import { loadConfig, type Config, type InferenceConfig } from '../config/config.js';
import { BackendUnavailableError, type FacematchError, InvalidArgumentError, NoFaceError, toFacematchError } from '../domain/errors.js';
import { cosine, type DetectedFace } from '../domain/face.js';
import { redactUrl } from '../domain/redact.js';
import { AddressPolicy } from '../adapters/image-source/address-policy.js';
import { CompositeImageSource } from '../adapters/image-source/composite.image-source.js';
import { HttpImageSource } from '../adapters/image-source/http.image-source.js';
import { checkHealth } from '../adapters/grpc-client/health.client.js';
import { annotate } from '../inference/annotate.js';
import { FaceAnalyzer } from '../inference/face-analyzer.js';
import { fetchModelPack } from '../inference/model-fetch.js';
import { checkModelFile, readModelPack } from '../inference/model-pack.js';
import { TRACER_NAME } from '../telemetry/attributes.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { createApp, type App } from './app.js';
import { exitOnSignals, serve } from './serve.js';
import { SERVICE_NAME } from '../transport/grpc/grpc.server.js';

const USAGE = `usage:
  facematch serve                                   gRPC + HTTP service (ports from FACEMATCH_GRPC_PORT / _HTTP_PORT)
  facematch controller                              the PhotoBatch operator (KUBECONFIG or in-cluster; FACEMATCH_CONTROLLER_*)
  facematch enroll --user U [--event E] [--photo P] <file-or-url>
                                                    enrol a selfie; prints the action shots it matches
  facematch process --photo P [--event E] <file-or-url>
                                                    store an action shot's faces, match enrolled users
  facematch photos --user U [--event E]             the user's photos, one JSON line each
  facematch delete --photo P                        remove a photo, its faces, image and matches
  facematch forget --user U                         erase a user: samples, images, matches
  facematch detect <file-or-url> [--draw out.jpg]   faces in a photo, largest first
  facematch compare <a> <b>                         cosine similarity of the largest faces
  facematch models fetch [--pack NAME] [--url URL]  download a pack's weights (zip), verify sha256
  facematch models verify [--pack NAME]             check a pack's weights against its sha256
  facematch health [--address HOST:PORT] [--service NAME] [--timeout-ms N]
                                                    gRPC health check (default 127.0.0.1:50051,
                                                    facematch.v1.FacematchService, 5000 ms): exit 0 when SERVING
configuration: FACEMATCH_* environment variables (see README)`;

const r2 = (n: number): number => Math.round(n * 100) / 100;
const r4 = (n: number): number => Math.round(n * 10_000) / 10_000;

function faceJson(f: DetectedFace): unknown {
  return {
    box: { x: r2(f.box.x), y: r2(f.box.y), width: r2(f.box.width), height: r2(f.box.height) },
    score: r4(f.score),
    landmarks: f.landmarks.map(([x, y]) => [r2(x), r2(y)]),
  };
}

/** The CLI reads local files and URLs (no object store). */
function imageSource(config: Config): CompositeImageSource {
  const http = new HttpImageSource(config.source, new AddressPolicy(config.source.allow));
  return new CompositeImageSource({ http, localFiles: true, config: config.source });
}

/**
 * Every command handles one photo at a time: one analyzer (detect, compare) or one inference worker
 * (the service commands) whose sessions use every core, unless FACEMATCH_INTRA_OP_THREADS says
 * otherwise. FACEMATCH_INFERENCE_WORKERS sizes the server's pool, not the CLI's.
 */
const wholeMachine = (inference: InferenceConfig): InferenceConfig => ({
  ...inference,
  intraOpThreads: inference.intraOpThreads || availableParallelism(),
});

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function detect(args: string[], config: Config, log: Logger): Promise<void> {
  const { values, positionals } = parseArgs({ args, options: { draw: { type: 'string' } }, allowPositionals: true });
  const [ref] = positionals;
  if (!ref || positionals.length !== 1) throw new InvalidArgumentError('detect takes one image: facematch detect <file-or-url>');
  const analyzer = await FaceAnalyzer.load(wholeMachine(config.inference), config.decode, log);
  const bytes = await imageSource(config).read(ref);
  const decoded = await analyzer.decode(bytes, redactUrl(ref));
  const faces = await analyzer.detectFaces(decoded);
  if (values.draw) {
    await writeFile(
      values.draw,
      await annotate(bytes, faces, { width: decoded.width, height: decoded.height, maxPixels: config.decode.maxPixels }),
    );
  }
  print({ width: decoded.width, height: decoded.height, faces: faces.map(faceJson) });
}

async function compare(args: string[], config: Config, log: Logger): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true });
  if (positionals.length !== 2) throw new InvalidArgumentError('compare takes two images: facematch compare <a> <b>');
  const analyzer = await FaceAnalyzer.load(wholeMachine(config.inference), config.decode, log);
  const source = imageSource(config);
  const [a, b] = await Promise.all(
    positionals.map(async (ref) => {
      // Messages name the image without a URL's credentials or query string.
      const shown = redactUrl(ref);
      const analysis = await analyzer.analyze(await source.read(ref), shown);
      const face = analysis.faces[0];
      if (!face) throw new NoFaceError(`no face found in ${shown}`);
      return face;
    }),
  );
  const similarity = cosine(a!.embedding, b!.embedding);
  print({
    similarity: r4(similarity),
    threshold: analyzer.threshold,
    match: similarity >= analyzer.threshold,
    pack: analyzer.pack.name,
    a: faceJson(a!),
    b: faceJson(b!),
  });
}

async function models(args: string[], config: Config): Promise<void> {
  const [action, ...rest] = args;
  const { values } = parseArgs({ args: rest, options: { pack: { type: 'string' }, url: { type: 'string' } } });
  const pack = await readModelPack(values.pack ?? config.inference.modelPack);
  const dir = config.inference.modelsDir;
  switch (action ?? '') {
    case 'fetch': {
      const files = await fetchModelPack(pack, dir, {
        ...(values.url ? { url: values.url } : {}),
        onProgress: ({ file, bytes, total }) =>
          process.stderr.write(`\r${file}: ${(bytes / 1e6).toFixed(1)}${total ? ` / ${(total / 1e6).toFixed(1)}` : ''} MB`),
      });
      process.stderr.write('\n');
      print({ pack: pack.name, modelsDir: dir, files });
      return;
    }
    case 'verify': {
      const files = [];
      for (const spec of [pack.detector, pack.embedder]) {
        files.push({ file: spec.file, path: await checkModelFile(dir, spec, true), sha256: spec.sha256, status: 'verified' });
      }
      print({ pack: pack.name, modelsDir: dir, files });
      return;
    }
    default:
      throw new InvalidArgumentError(`unknown models action "${action ?? ''}"; use fetch or verify`);
  }
}

/**
 * grpc.health.v1.Health/Check against a service or an Envoy in front of it (the `helm test` pod
 * calls the chart's Service this way). Exit 0 and `{"address","service","status":"SERVING"}` when it
 * serves; otherwise BACKEND_UNAVAILABLE on stderr, exit 1. Needs no configuration.
 */
async function health(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: { address: { type: 'string' }, service: { type: 'string' }, 'timeout-ms': { type: 'string' } },
    allowPositionals: true,
  });
  if (positionals.length > 0) throw new InvalidArgumentError(`health takes no positional argument (got "${positionals.join(' ')}")`);
  const address = values.address ?? '127.0.0.1:50051';
  if (!/^\S+:\d{1,5}$/.test(address)) throw new InvalidArgumentError(`--address must be host:port, got "${address}"`);
  const service = values.service ?? SERVICE_NAME;
  const timeoutMs = Number(values['timeout-ms'] ?? 5000);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) {
    throw new InvalidArgumentError(`--timeout-ms must be an integer from 1 to 600000, got "${values['timeout-ms']}"`);
  }
  const status = await checkHealth(address, service, timeoutMs);
  if (status !== 'SERVING') throw new BackendUnavailableError(`${address} says "${service}" is ${status}`);
  print({ address, service, status });
}

async function withApp<T>(config: Config, log: Logger, fn: (app: App) => Promise<T>): Promise<T> {
  const app = await createApp(config, log, { tracer: trace.getTracer(TRACER_NAME), localFiles: true, inferenceWorkers: 1 });
  try {
    return await fn(app);
  } finally {
    await app.close();
  }
}

function serviceArgs(args: string[]) {
  return parseArgs({
    args,
    options: { user: { type: 'string' }, event: { type: 'string' }, photo: { type: 'string' } },
    allowPositionals: true,
  });
}

/** A facecam's photo id when none is given: stable for the same user and source, so a rerun replaces. */
const defaultSelfieId = (user: string, ref: string): string =>
  `facecam-${createHash('sha256').update(`${user}\n${ref}`).digest('hex').slice(0, 16)}`;

async function runService(command: string, args: string[], config: Config, log: Logger): Promise<void> {
  const { values, positionals } = serviceArgs(args);
  const one = (): string => {
    if (positionals.length !== 1) throw new InvalidArgumentError(`${command} takes one image: a file path or a URL`);
    return positionals[0]!;
  };
  const need = (name: 'user' | 'photo'): string => {
    const v = values[name];
    if (!v) throw new InvalidArgumentError(`${command} needs --${name}`);
    return v;
  };
  const event = values.event ? { eventId: values.event } : {};
  switch (command) {
    case 'enroll': {
      const user = need('user');
      const ref = one();
      const photoId = values.photo ?? defaultSelfieId(user, ref);
      return withApp(config, log, async (app) =>
        print(await app.service.processPhoto({ photoId, imageUrl: ref, kind: 'FACECAM', userId: user, ...event })),
      );
    }
    case 'process': {
      const photoId = need('photo');
      const ref = one();
      return withApp(config, log, async (app) =>
        print(await app.service.processPhoto({ photoId, imageUrl: ref, kind: 'ACTION_SHOT', ...event })),
      );
    }
    case 'photos':
      return withApp(config, log, async (app) => {
        for (const p of await app.service.listUserPhotos(need('user'), values.event)) {
          print({ photoId: p.photoId, eventId: p.eventId, similarity: r4(p.similarity) });
        }
      });
    case 'delete':
      return withApp(config, log, async (app) => print({ photoId: values.photo, deleted: await app.service.deletePhoto(need('photo')) }));
    case 'forget':
      return withApp(config, log, async (app) => print({ userId: values.user, ...(await app.service.forgetUser(need('user'))) }));
    default:
      throw new InvalidArgumentError(`unknown command "${command}"`);
  }
}

/** Runs until SIGTERM/SIGINT, then shuts down gracefully (serve.ts) and exits 0; a second signal exits at once. */
async function serveCommand(config: Config, log: Logger): Promise<void> {
  const serving = await serve(config, log);
  // Before the ports are printed: a supervisor (or a test) may send SIGTERM as soon as it reads
  // them, and one that comes before the handlers are installed kills the process outright
  // (measured: half the time when the signal follows the line at once).
  exitOnSignals(serving, log);
  print({ grpcPort: serving.grpcPort, httpPort: serving.httpPort });
}

/** Runs until SIGTERM/SIGINT (exit 0) or a lost lease (exit 1: the supervisor starts a follower). */
async function controllerCommand(config: Config, log: Logger): Promise<void> {
  const { startController } = await import('./controller.js');
  const controller = await startController(config, log);
  log.info({ httpPort: controller.httpPort, identity: config.controller.lease.identity }, 'facematch controller started');
  const signalled = new Promise<'signal'>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve('signal'));
  });
  const why = await Promise.race([signalled, controller.done]);
  await controller.stop();
  if (why === 'lost') process.exitCode = 1;
}

async function main(argv: string[]): Promise<void> {
  const [command, ...args] = argv;
  if (!command || command === '--help' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  // Before the configuration is read: a health check needs none (the `helm test` pod sets nothing).
  if (command === 'health') return health(args);
  const config = loadConfig();
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  switch (command) {
    case 'detect':
      return detect(args, config, log);
    case 'compare':
      return compare(args, config, log);
    case 'models':
      return models(args, config);
    case 'serve':
      return serveCommand(config, createLogger(config.logLevel));
    case 'controller':
      return controllerCommand(config, createLogger(config.logLevel));
    case 'enroll':
    case 'process':
    case 'photos':
    case 'delete':
    case 'forget':
      return runService(command, args, config, log);
    default:
      throw new InvalidArgumentError(`unknown command "${command}"\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const e: FacematchError = error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ? new InvalidArgumentError(error.message)
    : toFacematchError(error);
  process.stderr.write(`${JSON.stringify(e.toJSON())}\n`);
  process.exitCode = e.code === 'INVALID_ARGUMENT' ? 2 : 1;
});
