#!/usr/bin/env node
/** The service's entry point in the container: `node dist/bin/server.js`. */
import { loadConfig } from '../config/config.js';
import { toFacematchError } from '../domain/errors.js';
import { createLogger } from '../telemetry/logger.js';
import { exitOnSignals, serve } from './serve.js';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  // A bad variable: one JSON line naming it (CONFIG_INVALID), as every other start failure.
  const e = toFacematchError(error);
  createLogger('info').fatal({ code: e.code }, e.message);
  process.exit(1);
}
const log = createLogger(config.logLevel);
try {
  // SIGTERM: the graceful shutdown of serve.ts (drain, refuse, grace, close), then exit 0.
  exitOnSignals(await serve(config, log), log);
} catch (error) {
  log.fatal({ err: toFacematchError(error) }, 'facematch could not start');
  process.exit(1);
}
