/**
 * ObjectStore on a local folder: the folder is the bucket, a key is a relative path in it. A put
 * writes a temporary file beside the target, fsyncs it, renames it over the target (atomic on
 * POSIX: a reader opens the old file or the new one) and fsyncs the directory.
 *
 * Key segments may not start with '.': that namespace holds the temporary files, so a listing of
 * keys never shows one (a put killed midway leaves a `.name.<pid>.<random>.tmp` file behind, never a
 * torn object). init() sweeps such leftovers: temporary files whose writer is gone (its pid is not a
 * running process, or is this process's, which has nothing in flight before init). Objects are never
 * touched: no key can have a name of that shape. A writer alive in another pid namespace (two
 * containers on one volume) would look gone; the embedded stores serve one process, so it cannot.
 */
import { randomBytes } from 'node:crypto';
import { access, constants, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  BackendUnavailableError,
  FacematchError,
  InvalidArgumentError,
  SourceNotFoundError,
} from '../../domain/errors.js';
import { checkObjectKey, checkReadableKey, type ObjectLocation, type ObjectStore } from '../../ports/object-store.js';

export const DEFAULT_BUCKET = 'facematch';


/** A put's temporary file: `.<name>.<pid>.<12 hex>.tmp` beside the object. */
const TEMP_FILE = /^\..+\.(\d+)\.[0-9a-f]{12}\.tmp$/;
/** Temporary files being written by this process (by any store on any root): never swept. */
const inFlight = new Set<string>();

/** The temporary file a put of `file` writes first; `pid` names the writer (this process). */
export function tempFileFor(file: string, pid: number = process.pid): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${pid}.${randomBytes(6).toString('hex')}.tmp`);
}

export interface LocalObjectStoreOptions {
  /** The folder that holds the objects; created by init(). */
  root: string;
  /** Reported as the bucket of every location. */
  bucket?: string;
}

export class LocalObjectStore implements ObjectStore {
  readonly root: string;
  readonly bucket: string;

  constructor(options: LocalObjectStoreOptions) {
    this.root = path.resolve(options.root);
    this.bucket = options.bucket ?? DEFAULT_BUCKET;
  }

  /** Creates the folder, and removes the temporary files of puts whose process died. */
  async init(): Promise<void> {
    try {
      await mkdir(this.root, { recursive: true });
      await sweepTempFiles(this.root);
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  async put(key: string, bytes: Uint8Array, _contentType: string): Promise<ObjectLocation> {
    const file = this.file(key);
    const dir = path.dirname(file);
    const temp = tempFileFor(file);
    inFlight.add(temp);
    try {
      await mkdir(dir, { recursive: true });
      const handle = await open(temp, 'wx', 0o644);
      try {
        await handle.writeFile(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, file);
      await syncDir(dir);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      const code = errno(error);
      if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'EEXIST') {
        throw new InvalidArgumentError(`object key ${JSON.stringify(key)} conflicts with a key that has it as a prefix, or the reverse`, { cause: error });
      }
      throw this.unavailable(error);
    } finally {
      inFlight.delete(temp);
    }
    return this.locate(key, file);
  }

  async get(key: string, signal?: AbortSignal): Promise<Uint8Array> {
    checkReadableKey(key);
    const file = path.join(this.root, ...key.split('/'));
    try {
      return new Uint8Array(await readFile(file, signal ? { signal } : {}));
    } catch (error) {
      if (isMissing(error)) throw new SourceNotFoundError(`object ${key} not found in ${this.bucket}`, { cause: error });
      throw this.unavailable(error);
    }
  }

  async exists(key: string): Promise<boolean> {
    const file = this.file(key);
    try {
      return (await stat(file)).isFile();
    } catch (error) {
      if (isMissing(error)) return false;
      throw this.unavailable(error);
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.file(key);
    try {
      await unlink(file);
    } catch (error) {
      if (isMissing(error)) return;
      // EPERM is also what some systems answer for a directory: a prefix, not an object.
      if (errno(error) === 'EPERM' && !(await this.exists(key))) return;
      throw this.unavailable(error);
    }
  }

  // eslint-disable-next-line @typescript-eslint/require-await -- async: a bad key rejects, never throws
  async location(key: string): Promise<ObjectLocation> {
    return this.locate(key, this.file(key));
  }

  async ping(): Promise<void> {
    try {
      await access(this.root, constants.R_OK | constants.W_OK);
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  private file(key: string): string {
    checkObjectKey(key);
    return path.join(this.root, ...key.split('/'));
  }

  private locate(key: string, file: string): ObjectLocation {
    return { bucket: this.bucket, key, url: pathToFileURL(file).href };
  }

  private unavailable(error: unknown): FacematchError {
    if (error instanceof FacematchError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new BackendUnavailableError(`local object store at ${this.root}: ${message}`, { cause: error });
  }
}

/** Removes, under `dir`, the temporary files whose writer is gone; returns how many. */
async function sweepTempFiles(dir: string): Promise<number> {
  let swept = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    // Symbolic links are not followed: the store never makes one.
    if (entry.isDirectory()) swept += await sweepTempFiles(full);
    const pid = entry.isFile() ? TEMP_FILE.exec(entry.name)?.[1] : undefined;
    if (pid === undefined || inFlight.has(full) || !writerGone(Number(pid))) continue;
    try {
      await unlink(full);
      swept++;
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }
  return swept;
}

/** True when no process `pid` runs (or it is this one: nothing of ours is in flight before init). */
function writerGone(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    // EPERM: it runs, as another user.
    return errno(error) === 'ESRCH';
  }
}

/** Makes a rename durable: fsync of the directory that holds the entry. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isMissing(error: unknown): boolean {
  const code = errno(error);
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

function errno(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}
