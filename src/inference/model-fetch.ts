/**
 * Downloads a model pack's zip (the InsightFace release format), extracts the detector and the
 * embedder it names, checks each against the manifest's sha256 and moves them into the models
 * directory. Files only ever reach their final name through an atomic rename of a verified temp file,
 * so a bad download never replaces a file that is already there.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { pipeline } from 'node:stream/promises';
import yauzl, { type Entry, type ZipFile } from 'yauzl';
import {
  ConfigError,
  type FacematchError,
  ModelChecksumError,
  ModelNotFoundError,
  SourceNotFoundError,
  SourceUnreachableError,
} from '../domain/errors.js';
import { checkModelFile, modelPath, sha256File, type ModelPack } from './model-pack.js';

export interface FetchProgress {
  /** The file being downloaded (the zip's name). */
  file: string;
  bytes: number;
  /** From Content-Length, when the server sends one. */
  total?: number;
}

export interface FetchOptions {
  /** Overrides the manifest's `source.url` (a mirror, or a local server in tests). */
  url?: string;
  /** Abort when no bytes arrive for this long (waiting for the response or between chunks). */
  timeoutMs?: number;
  onProgress?: (p: FetchProgress) => void;
}

export interface FetchedModel {
  file: string;
  path: string;
  sha256: string;
  /** `derived`: made from another file of the pack (the manifest's `derivedFrom`), not downloaded. */
  status: 'downloaded' | 'present' | 'derived';
}

type ModelSpec = { file: string; sha256: string };

/** An idle timeout, not a total one: buffalo_l's zip is about 280 MB. */
const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * Makes sure the pack's detector and embedder are in `modelsDir` with the manifest's sha256,
 * downloading the pack's zip unless both already are. A derived embedder is made from its source
 * file once that is there (see checkModelFile).
 */
export async function fetchModelPack(
  pack: ModelPack,
  modelsDir: string,
  opts: FetchOptions = {},
): Promise<FetchedModel[]> {
  const fetched = await fetchFiles(pack, modelsDir, opts);
  const { derivedFrom } = pack.embedder;
  if (!derivedFrom) return fetched;
  const file = await checkModelFile(modelsDir, pack.embedder, true);
  return [...fetched, { file: pack.embedder.file, path: file, sha256: pack.embedder.sha256, status: 'derived' }];
}

async function fetchFiles(pack: ModelPack, modelsDir: string, opts: FetchOptions): Promise<FetchedModel[]> {
  const specs: ModelSpec[] = [pack.detector, pack.embedder.derivedFrom ?? pack.embedder];
  if (await allPresent(modelsDir, specs)) {
    return specs.map((s) => result(modelsDir, s, 'present'));
  }
  const url = opts.url ?? pack.source?.url;
  if (!url) {
    throw new ConfigError(`pack ${pack.name} has no download source; copy its files into the models directory`);
  }
  await mkdir(modelsDir, { recursive: true });
  const zipFile = path.join(modelsDir, `.${pack.name}.${tempSuffix()}.zip`);
  try {
    await download(url, zipFile, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, opts.onProgress);
    await extractModels(zipFile, url, modelsDir, specs);
  } finally {
    await rm(zipFile, { force: true });
  }
  return specs.map((s) => result(modelsDir, s, 'downloaded'));
}

function result(modelsDir: string, spec: ModelSpec, status: FetchedModel['status']): FetchedModel {
  return { file: spec.file, path: modelPath(modelsDir, spec.file), sha256: spec.sha256, status };
}

async function allPresent(modelsDir: string, specs: ModelSpec[]): Promise<boolean> {
  for (const spec of specs) {
    if (!(await isPresent(modelPath(modelsDir, spec.file), spec.sha256))) return false;
  }
  return true;
}

async function isPresent(file: string, sha256: string): Promise<boolean> {
  try {
    return (await sha256File(file)) === sha256;
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') return false;
    throw error;
  }
}

function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && 'code' in error;
}

function tempSuffix(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}.part`;
}

// --- download -------------------------------------------------------------------------------------

async function download(
  url: string,
  dest: string,
  timeoutMs: number,
  onProgress: FetchOptions['onProgress'],
): Promise<void> {
  const idle = idleAbort(timeoutMs);
  try {
    const { body, total } = await request(url, idle.signal, timeoutMs);
    const file = path.posix.basename(new URL(url).pathname) || url;
    let bytes = 0;
    const progress = tap((chunk) => {
      idle.touch();
      bytes += chunk.length;
      onProgress?.({ file, bytes, total });
    });
    await pipeline(Readable.fromWeb(body), progress, createWriteStream(dest)).catch((cause: unknown) => {
      const why = idle.signal.aborted ? `no data for ${timeoutMs} ms` : describe(cause);
      throw new SourceUnreachableError(`download of ${url} failed after ${bytes} bytes: ${why}`, { cause });
    });
  } finally {
    idle.clear();
  }
}

/** GETs `url` (following redirects) and maps failures to typed errors. */
async function request(
  url: string,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<{ body: WebReadableStream<Uint8Array>; total: number | undefined }> {
  let response: Response;
  try {
    response = await fetch(url, { signal, redirect: 'follow' });
  } catch (cause) {
    const why = signal.aborted ? `no response within ${timeoutMs} ms` : describe(cause);
    throw new SourceUnreachableError(`could not download ${url}: ${why}`, { cause });
  }
  if (response.status === 404) {
    throw new SourceNotFoundError(`model pack not found at ${url} (HTTP 404)`);
  }
  if (!response.ok || !response.body) {
    throw new SourceUnreachableError(`could not download ${url}: HTTP ${response.status} ${response.statusText}`);
  }
  return { body: response.body as WebReadableStream<Uint8Array>, total: Number(response.headers.get('content-length')) || undefined };
}

/** An AbortSignal that fires after `ms` without a call to touch(). */
function idleAbort(ms: number): { signal: AbortSignal; touch: () => void; clear: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  return { signal: controller.signal, touch: () => timer.refresh(), clear: () => clearTimeout(timer) };
}

/** fetch() reports network failures as "fetch failed" with the useful part in `cause`. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const inner = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${inner}`;
}

// --- extraction -----------------------------------------------------------------------------------

interface Staged {
  temp: string;
  target: string;
}

/**
 * Extracts every spec's file (matched by basename, at any depth) into a temp file beside its target,
 * verifies all of them, then renames them into place. On any failure no target is touched and every
 * temp file is removed.
 */
async function extractModels(zipFile: string, url: string, modelsDir: string, specs: ModelSpec[]): Promise<void> {
  const wanted = new Map(specs.map((s) => [path.basename(s.file), s]));
  const staged: Staged[] = [];
  const zip = await openZip(zipFile, url);
  try {
    for await (const entry of zipEntries(zip, url)) {
      const spec = wanted.get(path.posix.basename(entry.fileName));
      if (!spec || entry.fileName.endsWith('/')) continue;
      wanted.delete(path.basename(spec.file));
      staged.push(await extractVerified(zip, entry, modelPath(modelsDir, spec.file), spec.sha256));
      if (wanted.size === 0) break;
    }
    if (wanted.size > 0) {
      throw new ModelNotFoundError(`the zip from ${url} does not contain ${[...wanted.keys()].join(', ')}`);
    }
    for (const s of staged) await rename(s.temp, s.target);
  } catch (error) {
    await Promise.all(staged.map((s) => rm(s.temp, { force: true })));
    throw error;
  } finally {
    zip.close();
  }
}

async function extractVerified(zip: ZipFile, entry: Entry, target: string, expected: string): Promise<Staged> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = `${target}.${tempSuffix()}`;
  const actual = await extractEntry(zip, entry, temp).catch(async (error: unknown) => {
    await rm(temp, { force: true });
    throw error;
  });
  if (actual !== expected) {
    await rm(temp, { force: true });
    throw new ModelChecksumError(
      `${path.basename(target)} in the downloaded zip has sha256 ${actual}, the manifest expects ${expected}`,
    );
  }
  return { temp, target };
}

/** Streams one entry into `dest` and returns its sha256. */
async function extractEntry(zip: ZipFile, entry: Entry, dest: string): Promise<string> {
  const hash = createHash('sha256');
  const source = await openReadStream(zip, entry);
  await pipeline(source, tap((chunk) => hash.update(chunk)), createWriteStream(dest, { flags: 'wx' }));
  return hash.digest('hex');
}

/** A pipeline step that passes chunks through after showing each to `fn`. */
function tap(fn: (chunk: Buffer) => void): (source: AsyncIterable<Buffer>) => AsyncGenerator<Buffer> {
  return async function* (source) {
    for await (const chunk of source) {
      fn(chunk);
      yield chunk;
    }
  };
}

// --- yauzl, callbacks wrapped in promises ---------------------------------------------------------

function openZip(file: string, url: string): Promise<ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, autoClose: false }, (err, zip) => {
      if (err) reject(notAZip(url, err));
      else resolve(zip);
    });
  });
}

async function* zipEntries(zip: ZipFile, url: string): AsyncGenerator<Entry> {
  for (;;) {
    const entry = await nextEntry(zip).catch((cause: unknown) => {
      throw notAZip(url, cause);
    });
    if (!entry) return;
    yield entry;
  }
}

function nextEntry(zip: ZipFile): Promise<Entry | undefined> {
  return new Promise((resolve, reject) => {
    const settle = (fn: () => void) => {
      zip.off('entry', onEntry).off('end', onEnd).off('error', onError);
      fn();
    };
    const onEntry = (entry: Entry) => settle(() => resolve(entry));
    const onEnd = () => settle(() => resolve(undefined));
    const onError = (err: Error) => settle(() => reject(err));
    zip.on('entry', onEntry).on('end', onEnd).on('error', onError);
    zip.readEntry();
  });
}

function openReadStream(zip: ZipFile, entry: Entry): Promise<Readable> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (err, stream) => (err ? reject(err) : resolve(stream)));
  });
}

function notAZip(url: string, cause: unknown): FacematchError {
  return new ModelNotFoundError(`the download from ${url} is not a readable zip: ${describe(cause)}`, { cause });
}
