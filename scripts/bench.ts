/**
 * `npm run bench [-- --quick] [-- --json FILE]`: one table of the figures that matter,
 * each measured side by side in one run so the ratios hold on a shared, noisy machine
 * (quote ratios and medians, not absolute rates), above it the machine's facts.
 *
 * - hits (scripts/bench-nginx.ts): the njs floor, one thumbnail link, 1 000 thumbnail
 *   links round-robin and one full-size link, each against plain nginx serving the same
 *   files, `worker_processes auto` (needs nginx, libnginx-mod-http-js and wrk: apt-get
 *   install nginx libnginx-mod-http-js wrk; and `npm run build`)
 * - misses (scripts/bench-miss.ts)
 * - thumbnail misses by format class, AVIF and WebP against JPEG (scripts/bench-format-miss.ts)
 * - one thumbnail with sharp against jimp (scripts/bench-resize.ts; not with --quick)
 *
 * --quick: one short round of each, under a minute: to see that it runs, not to quote.
 * --json: prints { machine, quick, command, rows } as one JSON line on stdout instead of the
 *   table (the table and the progress go to stderr); `npm run docs:bench` turns it into
 *   docs/benchmarks.md. --json FILE: prints the table and writes that JSON to FILE.
 */
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { benchFormatMiss } from './bench-format-miss.js';
import { benchMiss } from './bench-miss.js';
import { benchNginx, benchNginxMissing } from './bench-nginx.js';
import { benchResize } from './bench-resize.js';
import { printBenchTable, type BenchRow, type MachineFacts } from './benchTable.js';

interface BenchArguments {
  quick: boolean;
  /** Print the JSON on stdout instead of the table. */
  jsonOut: boolean;
  jsonFile: string | null;
}

function parseArguments(argv: readonly string[]): BenchArguments {
  const parsed: BenchArguments = { quick: false, jsonOut: false, jsonFile: null };
  for (let index = 0; index < argv.length; index += 1) {
    const argument = argv[index];
    if (argument === '--quick') parsed.quick = true;
    else if (argument === '--json') {
      const file = argv[index + 1];
      if (file === undefined || file.startsWith('--')) parsed.jsonOut = true;
      else {
        parsed.jsonFile = file;
        index += 1;
      }
    } else throw new Error(`unknown argument ${argument ?? ''}: use --quick and --json [FILE]`);
  }
  return parsed;
}

/** The first line a command prints (stdout or stderr: nginx -v writes to stderr), or null. */
function versionLine(command: string, args: string[], pattern: RegExp): string | null {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.error !== undefined) return null;
  const match = pattern.exec(`${result.stdout ?? ''}\n${result.stderr ?? ''}`);
  return match?.[1] ?? null;
}

function machineFacts(): MachineFacts {
  return {
    date: new Date().toISOString(),
    cores: availableParallelism(),
    loadAverage: loadavg().map((load) => Math.round(load * 100) / 100),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    nginx: versionLine('nginx', ['-v'], /nginx\/(\S+)/),
    njs: versionLine('njs', ['-v'], /(\d+\.\d+\.\d+)/),
    wrk: versionLine('wrk', ['-v'], /wrk (\S+)/),
  };
}

async function section(name: string, run: () => Promise<BenchRow[]>): Promise<BenchRow[]> {
  try {
    return await run();
  } catch (error) {
    return [{ section: name, name: `skipped: ${(error as Error).message.split('\n')[0] ?? ''}`, value: Number.NaN, unit: '' }];
  }
}

const options = parseArguments(process.argv.slice(2));
// With --json on stdout, stdout carries the JSON alone: the benches' progress lines go to stderr.
const printJson = options.jsonOut ? process.stdout.write.bind(process.stdout) : null;
if (printJson !== null) console.log = console.error;
const facts = machineFacts();
const rows: BenchRow[] = [];
const missing = benchNginxMissing();
rows.push(
  ...(missing === null
    ? await section('hit', () => benchNginx(options.quick ? { rounds: 1, seconds: 2, verbose: false } : { verbose: false }))
    : [{ section: 'hit', name: `skipped: ${missing}`, value: Number.NaN, unit: '' }]),
);
rows.push(...(await section('miss', () => benchMiss(options.quick ? { rounds: 1, warmUpMisses: 40 } : {}))));
rows.push(...(await section('format miss', () => benchFormatMiss(options.quick ? { rounds: 1 } : {}))));
if (!options.quick) {
  rows.push(
    ...(await section('thumbnail', async () =>
      (await benchResize()).flatMap((row): BenchRow[] => [
        { section: `thumbnail ${row.size} of ${row.input}, one thread`, name: 'sharp', value: row.sharpMedianMs, unit: 'ms' },
        { section: `thumbnail ${row.size} of ${row.input}, one thread`, name: 'jimp', value: row.jimpMedianMs, unit: 'ms', ratio: row.ratio },
      ]),
    )),
  );
}
printBenchTable(rows, facts);
const command = `npm run --silent bench --${options.quick ? ' --quick' : ''} --json`;
const result = { machine: { ...facts, loadAverageAtEnd: loadavg().map((load) => Math.round(load * 100) / 100) }, quick: options.quick, command, rows };
if (printJson !== null) printJson(`${JSON.stringify(result)}\n`);
if (options.jsonFile !== null) {
  await writeFile(options.jsonFile, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${options.jsonFile}`);
}
