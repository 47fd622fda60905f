/** A pino logger whose JSON lines are kept, for tests that assert what an operator would read in the log. */
import { Writable } from 'node:stream';
import { pino } from 'pino';

export function captureLog<Line>(level: pino.LevelWithSilent): { log: pino.Logger; lines: () => Line[] } {
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      raw.push(chunk.toString());
      done();
    },
  });
  return { log: pino({ level }, sink), lines: () => raw.map((l) => JSON.parse(l) as Line) };
}
