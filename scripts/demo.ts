/**
 * The service's main job on embedded defaults, with no server to run: enrol the first photo of each
 * identity in ../shared/testdata/faces as a selfie, process the group photos as action shots, and
 * print one JSON line per photo with the people found. Everything lands in FACEMATCH_DATA_DIR
 * (default ./data): the embedded vector index and match records (data/db), and the annotated
 * images (data/objects/annotated/demo/). Run it twice: the second run replaces, never duplicates.
 *   npm run demo
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { trace } from '@opentelemetry/api';
import { createApp } from '../src/bin/app.js';
import { parseConfig } from '../src/config/config.js';
import { TRACER_NAME } from '../src/telemetry/attributes.js';
import { createLogger } from '../src/telemetry/logger.js';
import { GROUPS_DIR, MODELS_DIR, identities } from '../test/support/shared.js';

const config = parseConfig({
  ...process.env,
  FACEMATCH_MODEL_PACK: process.env.FACEMATCH_MODEL_PACK ?? 'test',
  FACEMATCH_MODELS_DIR: process.env.FACEMATCH_MODELS_DIR ?? MODELS_DIR,
});
// One photo at a time: one inference worker with every core's threads, not the server's pool.
const app = await createApp(config, createLogger('warn'), { tracer: trace.getTracer(TRACER_NAME), localFiles: true, inferenceWorkers: 1 });
const event = 'demo';
try {
  const people = identities();
  for (const { id, files } of people) {
    await app.service.processPhoto({ photoId: `selfie-${id}`, imageUrl: files[0]!, kind: 'FACECAM', userId: id, eventId: event });
  }
  console.error(`enrolled ${people.length} selfies in event "${event}"; threshold ${app.service.matchThreshold} (${app.analyzer.pack.name})`);
  for (const photo of (await readdir(GROUPS_DIR)).sort()) {
    const r = await app.service.processPhoto({ photoId: photo.replace(/\.\w+$/, ''), imageUrl: path.join(GROUPS_DIR, photo), kind: 'ACTION_SHOT', eventId: event });
    const matches = r.faces.flatMap((f) => f.matches.map((m) => ({ userId: m.userId, similarity: Math.round(m.similarity * 1000) / 1000 })));
    console.log(JSON.stringify({ photoId: photo, faces: r.faces.length, matches, annotated: r.annotated.url, ms: Math.round(r.timings.total) }));
  }
} finally {
  await app.close();
}
