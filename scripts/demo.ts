/**
 * The main job on embedded defaults, with no server: enrol the first photo of each identity in
 * ../shared/testdata/faces as a selfie, then find those people in the group photos, print one JSON
 * line per photo and write annotated copies to $FACEMATCH_DATA_DIR/demo (default ./data/demo).
 *   npm run demo
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseConfig } from '../src/config/config.js';
import { cosine } from '../src/domain/face.js';
import { annotate } from '../src/inference/annotate.js';
import { FaceAnalyzer } from '../src/inference/face-analyzer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { GROUPS_DIR, MODELS_DIR, identities, read } from '../test/support/shared.js';

const config = parseConfig({
  ...process.env,
  FACEMATCH_MODEL_PACK: process.env.FACEMATCH_MODEL_PACK ?? 'test',
  FACEMATCH_MODELS_DIR: process.env.FACEMATCH_MODELS_DIR ?? MODELS_DIR,
});
const out = path.resolve(process.env.FACEMATCH_DATA_DIR ?? 'data', 'demo');
await mkdir(out, { recursive: true });
const analyzer = await FaceAnalyzer.load(config.inference, config.decode, createLogger('warn'));

const gallery: { user: string; embedding: Float32Array }[] = [];
for (const { id, files } of identities()) {
  const face = (await analyzer.analyze(await read(files[0]!))).faces[0];
  if (face) gallery.push({ user: id, embedding: face.embedding });
}
console.error(`enrolled ${gallery.length} selfies; threshold ${analyzer.threshold} (${analyzer.pack.name})`);

for (const photo of (await readdir(GROUPS_DIR)).sort()) {
  const bytes = await read(path.join(GROUPS_DIR, photo));
  const analysis = await analyzer.analyze(bytes, photo);
  const faces = analysis.faces.map((f) => {
    const best = gallery
      .map((g) => ({ user: g.user, similarity: cosine(g.embedding, f.embedding) }))
      .sort((a, b) => b.similarity - a.similarity)[0];
    const match = best && best.similarity >= analyzer.threshold ? best : undefined;
    return { ...f, match };
  });
  const annotated = path.join(out, photo.replace(/\.\w+$/, '.jpg'));
  await writeFile(
    annotated,
    await annotate(
      bytes,
      faces.map((f) => ({ ...f, highlight: !!f.match, ...(f.match ? { label: `${f.match.user} ${f.match.similarity.toFixed(2)}` } : {}) })),
      { maxPixels: config.decode.maxPixels },
    ),
  );
  const matches = faces.flatMap((f) => (f.match ? [{ user: f.match.user, similarity: Math.round(f.match.similarity * 1000) / 1000 }] : []));
  console.log(JSON.stringify({ photo, faces: faces.length, matches, annotated, ms: Math.round(analysis.timings.decodeMs + analysis.timings.detectMs + analysis.timings.alignMs + analysis.timings.embedMs) }));
}
