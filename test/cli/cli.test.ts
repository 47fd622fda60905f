/** The CLI contract, run as a user runs it: a child process, JSON on stdout, JSON errors on stderr. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODELS_DIR, REPO, group, identities } from '../support/shared.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), ...args],
      {
        cwd: REPO,
        env: { ...process.env, FACEMATCH_MODEL_PACK: 'test', FACEMATCH_MODELS_DIR: MODELS_DIR },
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

interface FaceJson {
  box: { x: number; y: number; width: number; height: number };
  score: number;
  landmarks: [number, number][];
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'facematch-cli-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('facematch detect', () => {
  it('prints one JSON object with every face, largest first, and draws them', async () => {
    const out = path.join(dir, 't1.jpg');
    const run = await cli('detect', group('insightface_t1.jpg'), '--draw', out);
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const result = JSON.parse(lines[0]!) as { faces: FaceJson[] };
    expect(result.faces).toHaveLength(6);
    for (const f of result.faces) {
      expect(Object.keys(f.box).sort()).toEqual(['height', 'width', 'x', 'y']);
      expect(f.score).toBeGreaterThan(0.5);
      expect(f.landmarks).toHaveLength(5);
    }
    const areas = result.faces.map((f) => f.box.width * f.box.height);
    expect(areas).toEqual([...areas].sort((a, b) => b - a));
    const drawn = await sharp(out).metadata();
    expect([drawn.format, drawn.width, drawn.height]).toEqual(['jpeg', 1280, 886]);
  });
});

describe('facematch compare', () => {
  it('says two photos of one person match and two people do not', async () => {
    const [obama, biden] = ['facerec_obama', 'facerec_biden'].map((id) => identities().find((p) => p.id === id)!.files);
    const same = await cli('compare', obama![0]!, obama![1]!);
    expect(same.code, same.stderr).toBe(0);
    const s = JSON.parse(same.stdout) as { similarity: number; match: boolean; threshold: number };
    expect(s.match).toBe(true);
    expect(s.similarity).toBeGreaterThan(s.threshold);
    const other = JSON.parse((await cli('compare', obama![0]!, biden![0]!)).stdout) as { similarity: number; match: boolean };
    expect(other.match).toBe(false);
  });
});

describe('errors', () => {
  it('a non-image is a JSON error on stderr with a stable code and exit status 1', async () => {
    const file = path.join(dir, 'notes.jpg');
    await writeFile(file, 'just text');
    const run = await cli('detect', file);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(JSON.parse(run.stderr.trim().split('\n').at(-1)!)).toMatchObject({ code: 'IMAGE_UNSUPPORTED' });
  });

  it('a photo without a face cannot be compared: NO_FACE', async () => {
    const blank = path.join(dir, 'blank.png');
    await sharp({ create: { width: 200, height: 200, channels: 3, background: '#336699' } }).png().toFile(blank);
    const run = await cli('compare', blank, group('insightface_t1.jpg'));
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stderr.trim().split('\n').at(-1)!)).toMatchObject({ code: 'NO_FACE' });
  });

  it('usage errors exit with status 2', async () => {
    const run = await cli('detect');
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stderr.trim().split('\n').at(-1)!)).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((await cli('frobnicate')).code).toBe(2);
  });

  it('a bad configuration value is CONFIG_INVALID naming the variable', async () => {
    const run = await new Promise<Run>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', path.join(REPO, 'src/bin/cli.ts'), 'detect', group('insightface_t1.jpg')],
        { cwd: REPO, env: { ...process.env, FACEMATCH_DEVICE: 'tpu' } },
        (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(run.code).toBe(1);
    const err = JSON.parse(run.stderr.trim().split('\n').at(-1)!) as { code: string; message: string };
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('FACEMATCH_DEVICE');
  });
});
