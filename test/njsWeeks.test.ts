/**
 * nginx/imageproxy.js week logic, under the real njs: the cheaper visitor (calendar year
 * looked at only in ISO weeks 1, 52 and 53, the skew instant only when it falls on
 * another day, no arrays per request) accepts exactly the suffixes, in the same order,
 * as the former array-building logic, kept below as the oracle.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { njsMissing, runNjsDriver } from './nginxHarness.js';

/** The former week logic of nginx/imageproxy.js, verbatim in substance: the oracle. */
const ORACLE = String.raw`
var DAY_SECONDS = 86400;
var WEEK_SECONDS = 7 * DAY_SECONDS;
function yearOfDay(day) {
    var z = day + 719468;
    var era = (z / 146097) | 0;
    var dayOfEra = z - era * 146097;
    var yearOfEra = ((dayOfEra - ((dayOfEra / 1460) | 0) + ((dayOfEra / 36524) | 0) - ((dayOfEra / 146096) | 0)) / 365) | 0;
    var dayOfYear = dayOfEra - (365 * yearOfEra + ((yearOfEra / 4) | 0) - ((yearOfEra / 100) | 0));
    var marchBasedMonth = ((5 * dayOfYear + 2) / 153) | 0;
    return yearOfEra + era * 400 + (marchBasedMonth >= 10 ? 1 : 0);
}
function firstDayOfYear(year) {
    var y = year - 1;
    var era = (y / 400) | 0;
    var yearOfEra = y - era * 400;
    return era * 146097 + 365 * yearOfEra + ((yearOfEra / 4) | 0) - ((yearOfEra / 100) | 0) + 306 - 719468;
}
function twoDigits(week) { return week < 10 ? '0' + week : '' + week; }
function instantSuffixes(seconds) {
    var day = Math.floor(seconds / DAY_SECONDS);
    var thursday = day - (day + 3) % 7 + 3;
    var isoYear = yearOfDay(thursday);
    var ww = twoDigits((((thursday - firstDayOfYear(isoYear)) / 7) | 0) + 1);
    return [isoYear + ww, yearOfDay(day) + ww];
}
function acceptedInstant(index, nowSeconds, skewSeconds) {
    if (index === 0) return nowSeconds;
    return index === 1 ? nowSeconds + skewSeconds : nowSeconds - WEEK_SECONDS;
}
function oracleWeekSuffixes(nowSeconds, skewSeconds, calendarYearWeeks) {
    var out = [];
    var rules = calendarYearWeeks === true ? 2 : 1;
    for (var i = 0; i < 3; i++) {
        var pair = instantSuffixes(acceptedInstant(i, nowSeconds, skewSeconds));
        for (var j = 0; j < rules; j++) {
            if (out.indexOf(pair[j]) < 0) out.push(pair[j]);
        }
    }
    return out;
}
`;

const INSTANTS = 100_000;
const SKEWS = [0, 3600, 86_400];

/**
 * The njs driver: INSTANTS instants (a third spread from 1970 to 2105 by a fixed LCG, a
 * sixth in the last seconds before a UTC midnight or an hour before one, the rest within
 * two days of each New Year from 1999 to 2040, where the rules differ), each with every
 * skew and both rules. Prints counts and the first few differences.
 */
const DRIVER = `import ip from 'imageproxy.js';
${ORACLE}
var seed = 12345;
function next() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed; }
var compared = 0, differing = 0, examples = [];
var skews = ${JSON.stringify(SKEWS)};
for (var n = 0; n < ${INSTANTS}; n++) {
    var now;
    if (n % 3 === 0) now = next() * 2;
    else if (n % 3 === 2 && n % 2 === 0) {
        // The last seconds before a UTC midnight, or before the skewed one.
        var midnight = ((Date.UTC(2000 + (n % 40), n % 12, 1 + (n % 28)) / 1000) | 0) - (n % 4 === 0 ? 0 : 3600);
        now = midnight - 1 - (next() % 8);
    } else {
        var year = 1999 + (n % 42);
        var newYear = (Date.UTC(year, 0, 1) / 1000) | 0;
        now = newYear - 2 * DAY_SECONDS + (next() % (4 * DAY_SECONDS));
    }
    for (var k = 0; k < skews.length; k++) {
        for (var c = 0; c < 2; c++) {
            var calendar = c === 1;
            var expected = oracleWeekSuffixes(now, skews[k], calendar).join(',');
            var actual = ip.weekSuffixes(now, skews[k], calendar).join(',');
            compared++;
            if (expected !== actual) {
                differing++;
                if (examples.length < 5) examples.push(now + ' skew ' + skews[k] + ' ' + calendar + ': ' + expected + ' vs ' + actual);
            }
        }
    }
}
console.log(JSON.stringify({ compared: compared, differing: differing, examples: examples }));
`;

interface DriverResult {
  compared: number;
  differing: number;
  examples: string[];
}

describe('njs week suffixes against the former logic', { skip: njsMissing() ?? false }, () => {
  let workDir = '';
  let result: DriverResult | null = null;

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'imageproxy-njs-weeks-'));
    const stdout = await runNjsDriver(workDir, DRIVER);
    const line = stdout.split('\n').find((candidate) => candidate.startsWith('{'));
    assert.ok(line !== undefined, stdout);
    result = JSON.parse(line) as DriverResult;
  });

  after(async () => {
    if (workDir !== '') await rm(workDir, { recursive: true, force: true });
  });

  it(`accepts the same suffixes in the same order at ${INSTANTS * SKEWS.length * 2} (instant, skew, rule) cases`, () => {
    assert.ok(result !== null);
    assert.equal(result.compared, INSTANTS * SKEWS.length * 2);
    assert.deepEqual(result.examples, []);
    assert.equal(result.differing, 0);
  });
});
