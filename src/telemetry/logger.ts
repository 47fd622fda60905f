import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON lines on stderr, so that stdout stays free for the CLI's own output. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'facematch' } }, pino.destination(2));
}
