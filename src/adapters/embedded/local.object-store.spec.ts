import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalObjectStore, tempFileFor } from './local.object-store.js';

/** A node process: `exited` after it ends by itself, or kept running until killed. */
async function processPid(o: { keepRunning: boolean }): Promise<{ pid: number; child: ChildProcess }> {
  const child = spawn(process.execPath, ['-e', o.keepRunning ? 'setInterval(() => {}, 1000)' : ''], { stdio: 'ignore' });
  if (!o.keepRunning) await once(child, 'exit');
  return { pid: child.pid!, child };
}

/** Every file under `dir`, as paths relative to it. */
async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

describe('LocalObjectStore.init', () => {
  let root: string;
  let alive: ChildProcess | undefined;
  beforeEach(async () => {
    root = path.join(await mkdtemp(path.join(tmpdir(), 'facematch-objects-')), 'bucket');
  });
  afterEach(async () => {
    alive?.kill('SIGKILL');
    alive = undefined;
    await rm(path.dirname(root), { recursive: true, force: true });
  });

  it('removes the temporary files a crashed put left behind, and nothing else', async () => {
    const store = new LocalObjectStore({ root });
    await store.init();
    // Real objects, some with names close to a temporary file's.
    const objects: Record<string, Buffer> = {
      'events/e1/photo.jpg': Buffer.from('a real photo'),
      'photo.tmp': Buffer.from('an object whose name ends in .tmp'),
      'events/e1/photo.jpg.4242.0123456789ab.tmp': Buffer.from('an object named like a temporary file, without the dot'),
    };
    for (const [key, bytes] of Object.entries(objects)) await store.put(key, bytes, 'image/jpeg');

    // A writer that died midway through two puts: its temporary files hold half an object each.
    const crashed = await processPid({ keepRunning: false });
    const leftovers = [
      tempFileFor(path.join(root, 'events', 'e1', 'photo.jpg'), crashed.pid),
      tempFileFor(path.join(root, 'annotated', 'p1.jpg'), crashed.pid),
    ];
    for (const file of leftovers) {
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, Buffer.alloc(4096, 7));
    }
    // A writer still running (another process on this data directory): its temporary file stays.
    const running = await processPid({ keepRunning: true });
    alive = running.child;
    const inFlight = tempFileFor(path.join(root, 'events', 'e1', 'other.jpg'), running.pid);
    await writeFile(inFlight, Buffer.alloc(1024, 1));
    const before = await files(root);
    for (const file of [...leftovers, inFlight]) expect(before).toContain(path.relative(root, file));

    const reopened = new LocalObjectStore({ root });
    await reopened.init();

    const after = await files(root);
    for (const file of leftovers) expect(after).not.toContain(path.relative(root, file));
    expect(after).toContain(path.relative(root, inFlight));
    expect(after).toEqual(before.filter((f) => !leftovers.map((l) => path.relative(root, l)).includes(f)));
    for (const [key, bytes] of Object.entries(objects)) expect(Buffer.from(await reopened.get(key))).toEqual(bytes);
  });
});

describe('LocalObjectStore.get', () => {
  it("reads a photographer's key with spaces and accents, and refuses one that leaves the folder", async () => {
    const root = path.join(await mkdtemp(path.join(tmpdir(), 'facematch-objects-')), 'bucket');
    const store = new LocalObjectStore({ root, bucket: 'bucket' });
    await store.init();
    await mkdir(path.join(root, 'day 1'), { recursive: true });
    await writeFile(path.join(root, 'day 1', 'IMG été 0001.jpg'), 'bytes');
    expect(Buffer.from(await store.get('day 1/IMG été 0001.jpg')).toString()).toBe('bytes');
    for (const key of ['../outside.jpg', 'day 1/../../x', '/etc/passwd', 'a//b', 'day 1/.tmp', 'a\\b', 'a\nb']) {
      await expect(store.get(key), key).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    // What facematch writes keeps the strict rules.
    await expect(store.put('day 1/a.jpg', new Uint8Array([1]), 'image/jpeg')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await rm(path.dirname(root), { recursive: true, force: true });
  });
});
