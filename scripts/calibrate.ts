/**
 * Calibrates a model pack's match threshold on ../shared/testdata: genuine and impostor cosine
 * distributions (first photo of each identity enrolled, every other photo a probe), and the best
 * similarity any stranger in the crowd photos reaches against the enrolled gallery. Prints tables.
 * A gallery person who appears in a crowd photo (IN_CROWDS) is a probe of that person, not a stranger.
 *   npm run calibrate            (FACEMATCH_MODEL_PACK / FACEMATCH_MODELS_DIR as usual; test pack by default)
 */

import path from 'node:path';
import { parseConfig } from '../src/config/config.js';
import { cosine } from '../src/domain/face.js';
import { FaceAnalyzer } from '../src/inference/face-analyzer.js';
import { createLogger } from '../src/telemetry/logger.js';
import { GROUPS_DIR, MODELS_DIR, identities, read } from '../test/support/shared.js';

const config = parseConfig({
  ...process.env,
  FACEMATCH_MODEL_PACK: process.env.FACEMATCH_MODEL_PACK ?? 'test',
  FACEMATCH_MODELS_DIR: process.env.FACEMATCH_MODELS_DIR ?? MODELS_DIR,
});
const analyzer = await FaceAnalyzer.load(config.inference, config.decode, createLogger('warn'));

const gallery = new Map<string, Float32Array>();
const genuine: number[] = [];
const impostor: number[] = [];
const probes: { id: string; e: Float32Array }[] = [];
for (const { id, files } of identities()) {
  for (const [i, file] of files.entries()) {
    const face = (await analyzer.analyze(await read(file))).faces[0];
    if (!face) throw new Error(`no face in ${file}`);
    if (i === 0) gallery.set(id, face.embedding);
    else probes.push({ id, e: face.embedding });
  }
}

/**
 * Gallery people in the crowd photos, checked by eye (../shared/testdata/README.md): the leftmost
 * face of insightface_t1 is deepface_id04. Each is a probe of that person; every other face of the
 * crowd photos is a stranger.
 */
const IN_CROWDS: Record<string, { leftmost: string }> = { 'insightface_t1.jpg': { leftmost: 'deepface_id04' } };
const CROWDS = ['insightface_t1.jpg', 'insightface-rest_lumia.jpg', 'hpc203_selfie.jpg', 'hpc203_s_l.jpg'];

// Strangers: every other face of the crowd photos, against their closest enrolled user.
const strangers: { photo: string; best: number; who: string }[] = [];
const inCrowds: string[] = [];
const f3 = (x: number): string => x.toFixed(3);
for (const photo of CROWDS) {
  const faces = [...(await analyzer.analyze(await read(path.join(GROUPS_DIR, photo)))).faces].sort((a, b) => a.box.x - b.box.x);
  const known = IN_CROWDS[photo];
  if (known) {
    if (!gallery.has(known.leftmost)) throw new Error(`${known.leftmost} (leftmost in ${photo}) is not enrolled`);
    const e = faces.shift()!.embedding;
    probes.push({ id: known.leftmost, e });
    const [closest, score] = [...gallery].map(([id, g]) => [id, cosine(e, g)] as const).sort((a, b) => b[1] - a[1])[0]!;
    inCrowds.push(`${photo} leftmost: ${known.leftmost} ${f3(cosine(e, gallery.get(known.leftmost)!))} (closest enrolled: ${closest} ${f3(score)})`);
  }
  for (const f of faces) {
    let best = -1;
    let who = '';
    for (const [id, g] of gallery) {
      const s = cosine(f.embedding, g);
      if (s > best) [best, who] = [s, id];
    }
    strangers.push({ photo, best, who });
  }
}

for (const p of probes) for (const [id, g] of gallery) (id === p.id ? genuine : impostor).push(cosine(p.e, g));

const q = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
console.log(`pack ${analyzer.pack.name}: ${gallery.size} enrolled, ${probes.length} probes, ${strangers.length} strangers in crowds\n`);
console.log('distribution       n     min    p01    p05    p50    p95    p99    max');
for (const [name, xs] of [['genuine', genuine], ['impostor', impostor], ['stranger (best)', strangers.map((s) => s.best)]] as const) {
  console.log(
    `${name.padEnd(16)} ${String(xs.length).padStart(5)}  ${[0, 0.01, 0.05, 0.5, 0.95, 0.99, 1].map((p) => f3(q(xs, p))).join('  ')}`,
  );
}
console.log('\nthreshold  impostor-accepted  stranger-accepted  genuine-rejected');
const grid = Array.from({ length: 13 }, (_, i) => Math.round((0.3 + i * 0.025) * 1000) / 1000);
for (const t of [...new Set([...grid, analyzer.threshold])].sort((a, b) => a - b)) {
  const ia = impostor.filter((x) => x >= t).length;
  const sa = strangers.filter((x) => x.best >= t).length;
  const gr = genuine.filter((x) => x < t).length;
  console.log(
    `${t.toFixed(3).padStart(9)}  ${`${ia}/${impostor.length}`.padStart(17)}  ${`${sa}/${strangers.length}`.padStart(17)}  ${`${gr}/${genuine.length}`.padStart(16)}`,
  );
}
const top = [...strangers].sort((a, b) => b.best - a.best).slice(0, 5);
console.log('\nclosest strangers:', top.map((s) => `${s.photo}→${s.who} ${f3(s.best)}`).join(', '));
console.log(`gallery people in the crowds (probes, not strangers): ${inCrowds.join(', ')}`);
console.log(`threshold in force: ${analyzer.threshold}`);
