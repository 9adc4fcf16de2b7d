// The generated part of docs/benchmarks.md (scripts/benchPage.ts): pure, cases in tables,
// and the page checked in holds both markers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  BENCH_END_MARKER,
  BENCH_START_MARKER,
  parseBenchResult,
  renderBenchSection,
  replaceBenchSection,
  type BenchResult,
} from '../scripts/benchPage.js';

const MACHINE: BenchResult['machine'] = {
  date: '2026-12-07T12:03:04.567Z',
  cores: 2,
  loadAverage: [0.5, 1.25, 2],
  loadAverageAtEnd: [3, 2, 1],
  cpuModel: 'AMD EPYC',
  node: 'v20.20.2',
  nginx: '1.22.1',
  njs: '0.7.9',
  wrk: null,
};

function result(rows: BenchResult['rows'], quick = false): BenchResult {
  return { machine: MACHINE, quick, command: 'npm run --silent bench -- --json', rows };
}

describe('renderBenchSection', () => {
  const cases: Array<{ name: string; input: BenchResult; contains: string[]; excludes?: string[] }> = [
    {
      name: 'date, machine, load averages and the commands',
      input: result([]),
      contains: [
        'Measured 2026-12-07 12:03:04 UTC on 2 cores (nproc; AMD EPYC)',
        'load average (1, 5, 15 min) 0.50, 1.25, 2.00 at the start and 3.00, 2.00, 1.00 at the end',
        'wrk not found',
        'npm run --silent bench -- --json > bench.json\nnpm run docs:bench -- bench.json',
      ],
      excludes: ['--quick'],
    },
    {
      name: 'one table per kind of section, rows in the order given, ratio with two decimals',
      input: result([
        { section: 'hit, 1 worker', name: '(a) plain', value: 64465.2, unit: 'req/s' },
        { section: 'hit, 1 worker', name: '(b) ours', value: 45421, unit: 'req/s', ratio: 0.7046 },
        { section: 'miss 250x250', name: 'serve', value: 14.43, unit: 'ms', ratio: 1.5 },
        { section: 'thumbnail 150x of JPEG', name: 'jimp', value: 7.4, unit: 'ms', note: '15 runs' },
      ]),
      contains: [
        '### Hits\n\n| section | row | value | unit | ratio |\n|---|---|---:|---|---:|\n| hit, 1 worker | (a) plain | 64465 | req/s |  |\n| hit, 1 worker | (b) ours | 45421 | req/s | 0.70 |',
        '### Cold misses\n\n| section | row | value | unit | ratio |\n|---|---|---:|---|---:|\n| miss 250x250 | serve | 14.4 | ms | 1.50 |',
        '### One thumbnail, sharp against jimp',
        '| thumbnail 150x of JPEG | jimp (15 runs) | 7.40 | ms |  |',
      ],
    },
    {
      name: 'a skipped row (value null) keeps its name and an empty value; a pipe in a name is escaped',
      input: result([{ section: 'hit', name: 'skipped: wrk | not found', value: null, unit: '' }]),
      contains: ['### Hits', '| hit | skipped: wrk \\| not found |  |  |  |'],
    },
    {
      name: 'a quick run says so',
      input: result([], true),
      contains: ['**A `--quick` run'],
    },
    {
      name: 'the longest known beginning decides the table: a thumbnail miss is not the sharp and jimp table',
      input: result([
        { section: 'thumbnail 150x of JPEG', name: 'sharp', value: 15.4, unit: 'ms' },
        { section: 'thumbnail miss 250x250 by format class', name: 'cold miss, AVIF client', value: 29.3, unit: 'ms', ratio: 1.54 },
        { section: 'thumbnails, other', name: 'x', value: 1, unit: 'ms' },
      ]),
      contains: [
        '### One thumbnail, sharp against jimp\n\n| section | row | value | unit | ratio |\n|---|---|---:|---|---:|\n| thumbnail 150x of JPEG | sharp | 15.4 | ms |  |\n\n###',
        '### Thumbnail misses by format class\n\n| section | row | value | unit | ratio |\n|---|---|---:|---|---:|\n| thumbnail miss 250x250 by format class | cold miss, AVIF client | 29.3 | ms | 1.54 |',
        '### thumbnails\n',
      ],
    },
    {
      name: 'an unknown kind is titled by its first word',
      input: result([{ section: 'populate, originals', name: 'rate', value: 250, unit: 'images/s' }]),
      contains: ['### populate\n'],
    },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      const text = renderBenchSection(testCase.input);
      for (const expected of testCase.contains) assert.ok(text.includes(expected), `expected ${JSON.stringify(expected)}`);
      for (const unexpected of testCase.excludes ?? []) assert.ok(!text.includes(unexpected), `unexpected ${JSON.stringify(unexpected)}`);
    });
  }
});

describe('replaceBenchSection', () => {
  const cases: Array<{ name: string; page: string; body: string; expected: string | RegExp }> = [
    {
      name: 'replaces what is between the markers, keeps the rest',
      page: `# B\n\nbefore\n${BENCH_START_MARKER}\nold table\n${BENCH_END_MARKER}\nafter\n`,
      body: 'new',
      expected: `# B\n\nbefore\n${BENCH_START_MARKER}\nnew\n${BENCH_END_MARKER}\nafter\n`,
    },
    {
      name: 'markers with nothing between them',
      page: `${BENCH_START_MARKER}${BENCH_END_MARKER}`,
      body: 'x',
      expected: `${BENCH_START_MARKER}\nx\n${BENCH_END_MARKER}`,
    },
    { name: 'no markers: refused', page: '# B\n', body: 'x', expected: /needs <!-- bench:start -->/ },
    { name: 'end before start: refused', page: `${BENCH_END_MARKER}\n${BENCH_START_MARKER}`, body: 'x', expected: /needs/ },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      if (typeof testCase.expected === 'string') assert.equal(replaceBenchSection(testCase.page, testCase.body), testCase.expected);
      else assert.throws(() => replaceBenchSection(testCase.page, testCase.body), testCase.expected);
    });
  }

  it('is idempotent: the same body twice gives the same page', () => {
    const page = `a\n${BENCH_START_MARKER}\n${BENCH_END_MARKER}\nb\n`;
    const once = replaceBenchSection(page, 'body');
    assert.equal(replaceBenchSection(once, 'body'), once);
  });
});

describe('parseBenchResult', () => {
  const json = JSON.stringify(result([{ section: 'hit', name: 'a', value: null, unit: '' }]));
  it('takes the JSON line, ignoring what npm printed around it', () => {
    const parsed = parseBenchResult(`\n> imageproxy@0.1.0 bench\n> node scripts/bench.ts\n\n${json}\n`);
    assert.equal(parsed.machine.cores, 2);
    assert.equal(parsed.rows.length, 1);
    assert.equal(parsed.rows[0]?.value, null);
  });
  const refusals: Array<{ name: string; input: string; expected: RegExp }> = [
    { name: 'no JSON at all', input: 'date 2026 …\n| section |', expected: /no JSON line/ },
    { name: 'no machine', input: '{"rows":[]}', expected: /no "machine"/ },
    { name: 'no rows', input: JSON.stringify({ machine: MACHINE }), expected: /no "rows"/ },
  ];
  for (const refusal of refusals) {
    it(`refuses ${refusal.name}`, () => assert.throws(() => parseBenchResult(refusal.input), refusal.expected));
  }
});

describe('docs/benchmarks.md', () => {
  it('holds both markers, in order, for `npm run docs:bench`', async () => {
    const page = await readFile(new URL('../docs/benchmarks.md', import.meta.url), 'utf8');
    const start = page.indexOf(BENCH_START_MARKER);
    assert.ok(start !== -1 && page.indexOf(BENCH_END_MARKER) > start);
  });
});
