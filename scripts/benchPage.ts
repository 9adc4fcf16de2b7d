/**
 * The generated part of docs/benchmarks.md: what `npm run bench -- --json` printed, as
 * Markdown tables (one per kind of measurement) under the date, the machine and the
 * commands that reproduce it. Pure: scripts/bench-page.ts reads the JSON and the page and
 * writes the page back.
 */
import { formatValue, type BenchRow, type MachineFacts } from './benchTable.js';

/** What scripts/bench.ts prints with --json (a skipped row's NaN value arrives as null). */
export interface BenchResult {
  machine: MachineFacts;
  quick: boolean;
  command: string;
  rows: Array<Omit<BenchRow, 'value'> & { value: number | null }>;
}

export const BENCH_START_MARKER = '<!-- bench:start -->';
export const BENCH_END_MARKER = '<!-- bench:end -->';

/** The command that turns the JSON into the page, quoted on the page. */
const PAGE_COMMAND = 'npm run docs:bench -- bench.json';

/**
 * Table titles by how a row's section begins (the longest of these that it begins
 * with, as whole words); a section that begins with none is titled by its first word.
 */
const KIND_TITLES: Readonly<Record<string, string>> = {
  hit: 'Hits',
  miss: 'Cold misses',
  'thumbnail miss': 'Thumbnail misses by format class',
  thumbnail: 'One thumbnail, sharp against jimp',
};

const KINDS_LONGEST_FIRST = Object.keys(KIND_TITLES).sort((a, b) => b.length - a.length);

function kindOf(section: string): string {
  const known = KINDS_LONGEST_FIRST.find((kind) => section === kind || new RegExp(`^${kind}[\\s,:]`).test(section));
  return known ?? /^[^\s,:]+/.exec(section)?.[0] ?? section;
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|');
}

function loadText(load: readonly number[] | undefined): string {
  return load === undefined || load.length === 0 ? 'unknown' : load.map((value) => value.toFixed(2)).join(', ');
}

/** Parses and checks the JSON scripts/bench.ts printed; throws naming what is missing. */
export function parseBenchResult(text: string): BenchResult {
  // The JSON is one line; anything npm printed around it is ignored.
  const line = text
    .split('\n')
    .map((candidate) => candidate.trim())
    .filter((candidate) => candidate.startsWith('{'))
    .at(-1);
  if (line === undefined) throw new Error('no JSON line in the input: give the output of `npm run bench -- --json`');
  const parsed = JSON.parse(line) as Partial<BenchResult>;
  if (typeof parsed.machine !== 'object' || parsed.machine === null) throw new Error('the JSON has no "machine"');
  if (!Array.isArray(parsed.rows)) throw new Error('the JSON has no "rows"');
  return { machine: parsed.machine, quick: parsed.quick === true, command: parsed.command ?? 'npm run --silent bench -- --json', rows: parsed.rows };
}

/** The Markdown between the markers: facts, commands, then one table per kind. */
export function renderBenchSection(result: BenchResult): string {
  const { machine } = result;
  const lines = [
    `Measured ${machine.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC')} on ${machine.cores} cores (nproc; ${machine.cpuModel}),` +
      ` load average (1, 5, 15 min) ${loadText(machine.loadAverage)} at the start and ${loadText(machine.loadAverageAtEnd)} at the end;` +
      ` node ${machine.node}, nginx ${machine.nginx ?? 'not found'}, njs ${machine.njs ?? 'not found'}, wrk ${machine.wrk ?? 'not found'}.`,
  ];
  if (result.quick) lines.push('', '**A `--quick` run: one short round of each, to see that it runs; not figures to quote.**');
  lines.push('', '```sh', `${result.command} > bench.json`, PAGE_COMMAND, '```');
  const kinds = new Map<string, BenchResult['rows']>();
  for (const row of result.rows) {
    const kind = kindOf(row.section);
    kinds.set(kind, [...(kinds.get(kind) ?? []), row]);
  }
  for (const [kind, rows] of kinds) {
    lines.push('', `### ${KIND_TITLES[kind] ?? kind}`, '', '| section | row | value | unit | ratio |', '|---|---|---:|---|---:|');
    for (const row of rows) {
      const name = row.note === undefined ? row.name : `${row.name} (${row.note})`;
      const value = row.value === null ? '' : formatValue(row.value);
      const ratio = row.ratio === undefined ? '' : row.ratio.toFixed(2);
      lines.push(`| ${cell(row.section)} | ${cell(name)} | ${value} | ${row.unit} | ${ratio} |`);
    }
  }
  return lines.join('\n');
}

/** The page with everything between the two markers replaced by `body`; throws if a marker is missing. */
export function replaceBenchSection(page: string, body: string): string {
  const start = page.indexOf(BENCH_START_MARKER);
  const end = page.indexOf(BENCH_END_MARKER);
  if (start === -1 || end === -1 || end < start) {
    throw new Error(`the page needs ${BENCH_START_MARKER} and then ${BENCH_END_MARKER}, each on a line of its own`);
  }
  return `${page.slice(0, start + BENCH_START_MARKER.length)}\n${body}\n${page.slice(end)}`;
}
