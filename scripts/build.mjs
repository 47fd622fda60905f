// `npm run build` (and `npm pack`, through prepack): a clean dist/ that runs on its own.
//
// tsc compiles src/ to dist/ but copies nothing else, and the service reads SQL migrations at run
// time from the folder beside the module that applies them (src/adapters/*/migrations/ from source,
// dist/adapters/*/migrations/ built). So: empty dist/ (a file deleted from src/ must not live on in
// the package), compile, then copy every run-time asset of src/ (ASSETS) to the same place in dist/.
// The .proto needs no copy: gRPC reflection serves the descriptor compiled into src/gen
// (scripts/gen-descriptor.mjs).
import { execFileSync } from 'node:child_process';
import { cpSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');
const SRC = path.join(ROOT, 'src');
const DIST = path.join(ROOT, 'dist');
/** Files of src/ that run time reads, by path relative to src/. */
const ASSETS = /(^|\/)migrations\/\d{4}_[a-z0-9_]+\.sql$/;

rmSync(DIST, { recursive: true, force: true });
execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.json')], {
  stdio: 'inherit',
});
let copied = 0;
for (const file of readdirSync(SRC, { recursive: true, encoding: 'utf8' })) {
  const rel = file.split(path.sep).join('/');
  if (!ASSETS.test(rel)) continue;
  cpSync(path.join(SRC, file), path.join(DIST, file));
  copied++;
}
if (copied === 0) throw new Error(`build: no run-time assets found under ${SRC} (expected SQL migrations)`);
console.log(`build: dist/ compiled, ${copied} run-time assets copied`);
