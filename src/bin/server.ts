#!/usr/bin/env node
/** The service's entry point in the container: `node dist/bin/server.js`. */
import { loadConfig } from '../config/config.js';
import { toFacematchError } from '../domain/errors.js';
import { createLogger } from '../telemetry/logger.js';
import { serve } from './serve.js';

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
  const serving = await serve(config, log);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      log.info({ signal }, 'shutting down');
      void serving.stop().then(() => process.exit(0));
    });
  }
} catch (error) {
  log.fatal({ err: toFacematchError(error) }, 'facematch could not start');
  process.exit(1);
}
