/**
 * `imageproxy import-legacy` throughput: builds an imageproxy-py tree of small images
 * (one tiny PNG under N different URLs) in the OS temp dir, then imports it with --link
 * and --copy into fresh roots on the same filesystem, three runs each, and prints the
 * median files/s and the counting pass. Not part of CI. Needs `npm run build` first.
 *
 *   node --import tsx scripts/bench-import.ts [entries=20000]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { writeLegacyEntry } from '../test/legacyFixture.js';

const CLI = fileURLToPath(new URL('../dist/server/cli.js', import.meta.url));
const ENTRIES = Number(process.argv[2] ?? 20_000);
const RUNS = 3;

interface RunFigures {
  seconds: number;
  filesPerSecond: number;
  countSeconds: number;
}

function runImport(pyRoot: string, root: string, mode: string): Promise<RunFigures> {
  return new Promise((resolve, reject) => {
    const startedMs = performance.now();
    const child = spawn(process.execPath, [CLI, 'import-legacy', pyRoot, '--root', root, `--${mode}`, '--secret', 'bench'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => {
      const seconds = (performance.now() - startedMs) / 1000;
      const ok = Number(/ok (\d+)/.exec(stdout)?.[1] ?? NaN);
      if (code !== 0 || ok !== ENTRIES) {
        reject(new Error(`${mode}: exit ${code}, ${stdout} ${stderr}`));
        return;
      }
      const countSeconds = Number(/counted in ([\d.]+) s/.exec(stderr)?.[1] ?? NaN);
      resolve({ seconds, filesPerSecond: ENTRIES / seconds, countSeconds });
    });
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

const work = await mkdtemp(join(tmpdir(), 'imageproxy-bench-import-'));
try {
  const pyRoot = join(work, 'py');
  const tiny = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#336699' } }).png().toBuffer();
  const buildStartedMs = performance.now();
  for (let index = 0; index < ENTRIES; index += 1) {
    const extUrl = Buffer.from(`https://img.example.org/bench/${index}.png`).toString('base64url');
    await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl, bytes: tiny, contentType: 'image/png' });
  }
  await writeFile(join(work, 'built'), '');
  console.log(`built ${ENTRIES} legacy entries in ${((performance.now() - buildStartedMs) / 1000).toFixed(1)} s under ${work}`);
  for (const mode of ['link', 'copy']) {
    const figures: RunFigures[] = [];
    for (let round = 0; round < RUNS; round += 1) {
      const root = join(work, `${mode}-${round}`);
      figures.push(await runImport(pyRoot, root, mode));
      await rm(root, { recursive: true, force: true });
    }
    const rates = figures.map((figure) => figure.filesPerSecond);
    console.log(
      `--${mode}: ${ENTRIES} entries, runs ${rates.map((rate) => rate.toFixed(0)).join(' / ')} files/s, ` +
        `median ${median(rates).toFixed(0)} files/s (whole process); counting pass median ${median(figures.map((f) => f.countSeconds)).toFixed(2)} s`,
    );
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
