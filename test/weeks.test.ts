// Week math across the year ends where the ISO week-year and the calendar year differ.
// Expected values were checked with GNU date: `date -u -d '<instant>' +%G%V` (ISO rule)
// and `+%Y%V` (calendar rule), not computed with the code under test.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { acceptedWeeks, isoWeekOf, pastWeeks, weekSuffix, type WeekCandidate } from '../server/contract/weeks.js';

interface WeekCase {
  name: string;
  instant: string;
  iso: string;
  calendar: string;
}

const WEEK_CASES: WeekCase[] = [
  // 2020/21: 2020 has 53 ISO weeks; 2021-01-01..03 belong to 2020-W53.
  { name: '2020-12-27 Sunday, last moment of W52', instant: '2020-12-27T23:59:59Z', iso: '202052', calendar: '202052' },
  { name: '2020-12-28 Monday starts W53', instant: '2020-12-28T00:00:00Z', iso: '202053', calendar: '202053' },
  { name: '2020-12-31 Thursday', instant: '2020-12-31T12:00:00Z', iso: '202053', calendar: '202053' },
  { name: '2021-01-01 is ISO 2020-W53', instant: '2021-01-01T00:00:00Z', iso: '202053', calendar: '202153' },
  { name: '2021-01-03 Sunday still 2020-W53', instant: '2021-01-03T23:59:59Z', iso: '202053', calendar: '202153' },
  { name: '2021-01-04 Monday is 2021-W01', instant: '2021-01-04T00:00:00Z', iso: '202101', calendar: '202101' },
  // 2021/22: 2022-01-01 (Saturday) is 2021-W52.
  { name: '2021-12-26 Sunday is W51', instant: '2021-12-26T12:00:00Z', iso: '202151', calendar: '202151' },
  { name: '2021-12-27 Monday starts W52', instant: '2021-12-27T00:00:00Z', iso: '202152', calendar: '202152' },
  { name: '2022-01-01 is ISO 2021-W52', instant: '2022-01-01T12:00:00Z', iso: '202152', calendar: '202252' },
  { name: '2022-01-02 Sunday still 2021-W52', instant: '2022-01-02T23:59:59Z', iso: '202152', calendar: '202252' },
  { name: '2022-01-03 Monday is 2022-W01', instant: '2022-01-03T00:00:00Z', iso: '202201', calendar: '202201' },
  // 2024/25: 2024-12-30 (Monday) is already 2025-W01, the case Gazelle changed rules over.
  { name: '2024-12-29 Sunday is 2024-W52', instant: '2024-12-29T23:59:59Z', iso: '202452', calendar: '202452' },
  { name: '2024-12-30 is ISO 2025-W01', instant: '2024-12-30T00:00:00Z', iso: '202501', calendar: '202401' },
  { name: '2024-12-31 is ISO 2025-W01', instant: '2024-12-31T23:59:59Z', iso: '202501', calendar: '202401' },
  { name: '2025-01-01 both rules agree again', instant: '2025-01-01T00:00:00Z', iso: '202501', calendar: '202501' },
  { name: '2025-01-06 Monday is W02', instant: '2025-01-06T00:00:00Z', iso: '202502', calendar: '202502' },
  // 2026/27: 2026 has 53 ISO weeks; 2027-01-01..03 belong to 2026-W53.
  { name: '2026-12-27 Sunday is W52', instant: '2026-12-27T12:00:00Z', iso: '202652', calendar: '202652' },
  { name: '2026-12-28 is 2026-W53', instant: '2026-12-28T00:00:00Z', iso: '202653', calendar: '202653' },
  { name: '2027-01-01 is ISO 2026-W53', instant: '2027-01-01T12:00:00Z', iso: '202653', calendar: '202753' },
  { name: '2027-01-03 Sunday still 2026-W53', instant: '2027-01-03T23:59:59Z', iso: '202653', calendar: '202753' },
  { name: '2027-01-04 Monday is 2027-W01', instant: '2027-01-04T00:00:00Z', iso: '202701', calendar: '202701' },
  // Mid-year, and single-digit weeks are zero-padded.
  { name: 'mid-year Wednesday', instant: '2025-06-11T12:00:00Z', iso: '202524', calendar: '202524' },
  { name: 'week 5 is written 05', instant: '2025-01-29T12:00:00Z', iso: '202505', calendar: '202505' },
];

describe('isoWeekOf and weekSuffix', () => {
  for (const testCase of WEEK_CASES) {
    it(testCase.name, () => {
      const epochMs = Date.parse(testCase.instant);
      assert.equal(weekSuffix(epochMs, 'iso'), testCase.iso);
      assert.equal(weekSuffix(epochMs, 'calendar'), testCase.calendar);
      assert.deepEqual(isoWeekOf(epochMs), {
        isoYear: Number(testCase.iso.slice(0, 4)),
        week: Number(testCase.iso.slice(4)),
      });
    });
  }
});

interface AcceptedCase {
  name: string;
  instant: string;
  skewSeconds: number;
  expected: WeekCandidate[];
}

const ACCEPTED_CASES: AcceptedCase[] = [
  {
    name: 'mid-week, mid-year: this week and last, rules agree, skew adds nothing',
    instant: '2025-06-11T12:00:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202524', rule: 'iso', instant: 'now' },
      { suffix: '202523', rule: 'iso', instant: 'previous week' },
    ],
  },
  {
    name: 'two hours before the Monday boundary: skew of an hour adds nothing',
    instant: '2025-06-15T22:00:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202524', rule: 'iso', instant: 'now' },
      { suffix: '202523', rule: 'iso', instant: 'previous week' },
    ],
  },
  {
    name: 'half an hour before the Monday boundary: skew rolls into next week',
    instant: '2025-06-15T23:30:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202524', rule: 'iso', instant: 'now' },
      { suffix: '202523', rule: 'iso', instant: 'previous week' },
      { suffix: '202525', rule: 'iso', instant: 'skew' },
    ],
  },
  {
    name: 'skew 0 never adds a week, even a second before the boundary',
    instant: '2025-06-15T23:59:59Z',
    skewSeconds: 0,
    expected: [
      { suffix: '202524', rule: 'iso', instant: 'now' },
      { suffix: '202523', rule: 'iso', instant: 'previous week' },
    ],
  },
  {
    name: '2024-12-30: ISO and calendar rules differ, last week is 2024-W52',
    instant: '2024-12-30T12:00:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202501', rule: 'iso', instant: 'now' },
      { suffix: '202401', rule: 'calendar', instant: 'now' },
      { suffix: '202452', rule: 'iso', instant: 'previous week' },
    ],
  },
  {
    name: '2021-01-01: calendar rule gives 202153, last week 2020-W52',
    instant: '2021-01-01T12:00:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202053', rule: 'iso', instant: 'now' },
      { suffix: '202153', rule: 'calendar', instant: 'now' },
      { suffix: '202052', rule: 'iso', instant: 'previous week' },
    ],
  },
  {
    name: '2020-12-31 23:30: skew crosses New Year, not the ISO week (calendar 202153 added)',
    instant: '2020-12-31T23:30:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202053', rule: 'iso', instant: 'now' },
      { suffix: '202052', rule: 'iso', instant: 'previous week' },
      { suffix: '202153', rule: 'calendar', instant: 'skew' },
    ],
  },
  {
    name: '2022-01-02 23:30: skew rolls into 2022-W01',
    instant: '2022-01-02T23:30:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202152', rule: 'iso', instant: 'now' },
      { suffix: '202252', rule: 'calendar', instant: 'now' },
      { suffix: '202151', rule: 'iso', instant: 'previous week' },
      { suffix: '202201', rule: 'iso', instant: 'skew' },
    ],
  },
  {
    name: '2027-01-01: last week is 2026-W52, calendar rule 202753',
    instant: '2027-01-01T12:00:00Z',
    skewSeconds: 3600,
    expected: [
      { suffix: '202653', rule: 'iso', instant: 'now' },
      { suffix: '202753', rule: 'calendar', instant: 'now' },
      { suffix: '202652', rule: 'iso', instant: 'previous week' },
    ],
  },
];

describe('acceptedWeeks', () => {
  for (const testCase of ACCEPTED_CASES) {
    it(`${testCase.name} (with calendarYearWeeks)`, () => {
      const candidates = acceptedWeeks(Date.parse(testCase.instant), testCase.skewSeconds, true);
      assert.deepEqual(candidates, testCase.expected);
      const suffixes = candidates.map((candidate) => candidate.suffix);
      assert.equal(new Set(suffixes).size, suffixes.length, 'no suffix twice');
    });
    it(`${testCase.name} (default: ISO rule only)`, () => {
      const candidates = acceptedWeeks(Date.parse(testCase.instant), testCase.skewSeconds);
      assert.deepEqual(candidates, testCase.expected.filter((candidate) => candidate.rule === 'iso'));
    });
  }
});

// A link signed in ISO week 1 carries `YYYY01`; date('YW') gives that same key again in
// the last days of December, when the ISO week is already week 1 of the next year.
const REPLAY_CASES: Array<{ signed: string; replayed: string[] }> = [
  { signed: '2024-01-03T12:00:00Z', replayed: ['2024-12-30T00:00:00Z', '2024-12-30T12:00:00Z', '2024-12-31T23:59:59Z'] },
  { signed: '2019-01-02T12:00:00Z', replayed: ['2019-12-31T12:00:00Z'] },
  { signed: '2025-01-01T12:00:00Z', replayed: ['2025-12-30T12:00:00Z'] },
];

describe('week-1 replay at New Year', () => {
  for (const { signed, replayed } of REPLAY_CASES) {
    const key = weekSuffix(Date.parse(signed), 'iso');
    for (const instant of replayed) {
      it(`${key} (signed ${signed}) is refused on ${instant} by default, accepted with calendarYearWeeks`, () => {
        const nowMs = Date.parse(instant);
        assert.ok(!acceptedWeeks(nowMs, 3600).some((week) => week.suffix === key));
        assert.ok(acceptedWeeks(nowMs, 3600, true).some((week) => week.suffix === key && week.rule === 'calendar'));
      });
    }
  }
});

describe('pastWeeks', () => {
  it('lists the weeks before an instant, nearest first, both rules, without repeats', () => {
    // Wednesday 2025-01-01: Monday 2024-12-30 began ISO 2025-W01 (calendar rule: 202401).
    const weeks = pastWeeks(Date.parse('2025-01-01T12:00:00Z'), 3);
    assert.deepEqual(weeks, [
      { suffix: '202501', rule: 'iso', weeksAgo: 0 },
      { suffix: '202401', rule: 'calendar', weeksAgo: 0 },
      { suffix: '202452', rule: 'iso', weeksAgo: 1 },
      { suffix: '202451', rule: 'iso', weeksAgo: 2 },
      { suffix: '202450', rule: 'iso', weeksAgo: 3 },
    ]);
  });

  it('a year back reaches the calendar-rule key of the year-end week', () => {
    const weeks = pastWeeks(Date.parse('2025-06-11T12:00:00Z'), 53);
    assert.ok(weeks.some((week) => week.suffix === '202401' && week.rule === 'calendar'), 'calendar key of 2024-12-30');
    assert.ok(weeks.some((week) => week.suffix === '202501' && week.rule === 'iso'));
    assert.equal(new Set(weeks.map((week) => week.suffix)).size, weeks.length);
    // 2024-06-05, 53 weeks back, is in 2024-W23.
    assert.equal(weeks.at(-1)?.suffix, '202423');
  });
});
