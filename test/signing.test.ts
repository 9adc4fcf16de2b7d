// Signatures: the shared vectors, then a table of verification cases.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  computeSignature,
  findSigningWeek,
  signLink,
  signatureMessage,
  verifySignature,
  type SignatureMatch,
  type SignedParts,
  type VerifyRules,
} from '../server/contract/signing.js';
import { weekSuffix } from '../server/contract/weeks.js';
import { VECTORS, ruleOf, type Vector } from './helpers.js';

const DAY_MS = 86_400_000;

/** Signature and signed parts as they stand in a vector's path. */
function partsOf(vector: Vector): { signature: string; parts: SignedParts } {
  const [, bucket = '', , signature = '', extUrl = '', fifth] = vector.path.split('/');
  return { signature, parts: { bucket, extUrl, proxy: fifth === 'proxy' } };
}

function rulesAt(vector: Vector, overrides: Partial<VerifyRules> = {}): VerifyRules {
  return {
    secrets: [vector.secret],
    legacyAllowed: vector.legacy,
    nowMs: vector.at * 1000,
    skewSeconds: 3600,
    calendarYearWeeks: vector.calendarYearWeeks === true,
    ...overrides,
  };
}

/** One character replaced by another of the base64url alphabet. */
function tampered(signature: string, index: number): string {
  const replacement = signature[index] === 'A' ? 'B' : 'A';
  return signature.slice(0, index) + replacement + signature.slice(index + 1);
}

describe('vectors', () => {
  for (const vector of VECTORS) {
    const { signature, parts } = partsOf(vector);
    it(`${vector.name}: the path holds the right bucket, proxy flag and ext_url`, () => {
      assert.equal(parts.bucket, vector.bucket);
      assert.equal(parts.proxy, vector.proxy);
      assert.equal(Buffer.from(parts.extUrl, 'base64url').toString('utf8'), vector.imageUrl);
    });
    it(`${vector.name}: computeSignature with its week suffix gives the path's signature`, () => {
      assert.equal(computeSignature(vector.secret, vector.weekSuffix, signatureMessage(parts, vector.legacy)), signature);
    });
    it(`${vector.name}: verifies at its instant with the right week and scheme`, () => {
      const match = verifySignature(signature, parts, rulesAt(vector));
      assert.ok(match !== null);
      assert.equal(match.secretIndex, 0);
      assert.equal(match.legacy, vector.legacy);
      assert.equal(match.week.suffix, vector.weekSuffix);
    });
    it(`${vector.name}: 14 days later it no longer verifies`, () => {
      assert.equal(verifySignature(signature, parts, rulesAt(vector, { nowMs: vector.at * 1000 + 14 * DAY_MS })), null);
    });
    it(`${vector.name}: at its instant, a signature made two weeks before does not verify (one made a week before does)`, () => {
      const signedWeeksBefore = (weeks: number): string =>
        computeSignature(vector.secret, weekSuffix(vector.at * 1000 - weeks * 7 * DAY_MS, 'iso'), signatureMessage(parts, vector.legacy));
      assert.notEqual(signedWeeksBefore(2), signature);
      assert.equal(verifySignature(signedWeeksBefore(2), parts, rulesAt(vector)), null);
      assert.notEqual(verifySignature(signedWeeksBefore(1), parts, rulesAt(vector)), null);
    });
    it(`${vector.name}: any one character changed does not verify`, () => {
      for (let index = 0; index < signature.length; index += 1) {
        assert.equal(verifySignature(tampered(signature, index), parts, rulesAt(vector)), null, `index ${index}`);
      }
    });
    it(`${vector.name}: a wrong secret does not verify`, () => {
      assert.equal(verifySignature(signature, parts, rulesAt(vector, { secrets: [`${vector.secret}x`] })), null);
    });
    it(`${vector.name}: after key rotation (secrets [new, old]) it verifies with secret #1`, () => {
      const match = verifySignature(signature, parts, rulesAt(vector, { secrets: ['a new secret', vector.secret] }));
      assert.equal(match?.secretIndex, 1);
    });
  }

  it('legacy vector does not verify where legacy is not allowed', () => {
    const legacy = VECTORS.find((vector) => vector.legacy);
    assert.ok(legacy !== undefined);
    const { signature, parts } = partsOf(legacy);
    assert.equal(verifySignature(signature, parts, rulesAt(legacy, { legacyAllowed: false })), null);
  });

  it('the calendar-rule vector verifies only with calendarYearWeeks', () => {
    const calendarVectors = VECTORS.filter((vector) => vector.calendarYearWeeks === true);
    assert.ok(calendarVectors.length > 0);
    for (const vector of calendarVectors) {
      const { signature, parts } = partsOf(vector);
      assert.equal(verifySignature(signature, parts, rulesAt(vector, { calendarYearWeeks: false })), null, vector.name);
      assert.notEqual(verifySignature(signature, parts, rulesAt(vector, { calendarYearWeeks: true })), null, vector.name);
    }
  });

  it('signLink reproduces every vector under the rule of its week suffix', () => {
    for (const vector of VECTORS) {
      const { signature, parts } = partsOf(vector);
      assert.equal(signLink(vector.secret, parts, vector.at * 1000, { legacy: vector.legacy, rule: ruleOf(vector) }), signature, vector.name);
    }
  });
});

// ---- verification table --------------------------------------------------------

const SECRET = 'table secret';
const EXT_URL = Buffer.from('https://example.com/a.png').toString('base64url');
const PARTS: SignedParts = { bucket: 'i', extUrl: EXT_URL, proxy: false };
/** Wednesday 2025-06-11 12:00 UTC, ISO 2025-W24. */
const MIDWEEK = Date.parse('2025-06-11T12:00:00Z');
/** Monday 2025-06-16 00:00 UTC: 2025-W25 begins. */
const NEXT_MONDAY = Date.parse('2025-06-16T00:00:00Z');
const YEAR_END = Date.parse('2024-12-30T12:00:00Z');

const signedAt = (atMs: number, parts: SignedParts = PARTS, legacy = false): string =>
  signLink(SECRET, parts, atMs, { legacy });

interface VerifyCase {
  name: string;
  signature: string;
  parts?: SignedParts;
  nowMs: number;
  skewSeconds?: number;
  legacyAllowed?: boolean;
  secrets?: string[];
  calendarYearWeeks?: boolean;
  expected: Pick<SignatureMatch, 'secretIndex' | 'legacy'> & { suffix: string; instant: string } | null;
}

const VERIFY_CASES: VerifyCase[] = [
  { name: 'signed now', signature: signedAt(MIDWEEK), nowMs: MIDWEEK, expected: { secretIndex: 0, legacy: false, suffix: '202524', instant: 'now' } },
  { name: 'signed last week', signature: signedAt(MIDWEEK - 7 * DAY_MS), nowMs: MIDWEEK, expected: { secretIndex: 0, legacy: false, suffix: '202523', instant: 'previous week' } },
  { name: 'signed two weeks ago', signature: signedAt(MIDWEEK - 14 * DAY_MS), nowMs: MIDWEEK, expected: null },
  { name: 'signed next week (far from the boundary)', signature: signedAt(MIDWEEK + 7 * DAY_MS), nowMs: MIDWEEK, expected: null },
  {
    name: 'skew: next week verifies 30 minutes before Monday 00:00 UTC',
    signature: signedAt(NEXT_MONDAY),
    nowMs: NEXT_MONDAY - 30 * 60_000,
    expected: { secretIndex: 0, legacy: false, suffix: '202525', instant: 'skew' },
  },
  { name: 'skew: next week does not verify 2 h before the boundary', signature: signedAt(NEXT_MONDAY), nowMs: NEXT_MONDAY - 2 * 3_600_000, expected: null },
  { name: 'skew 0: next week does not verify a minute before', signature: signedAt(NEXT_MONDAY), nowMs: NEXT_MONDAY - 60_000, skewSeconds: 0, expected: null },
  {
    name: 'year end: ISO rule 202501 on 2024-12-30',
    signature: computeSignature(SECRET, '202501', signatureMessage(PARTS, false)),
    nowMs: YEAR_END,
    expected: { secretIndex: 0, legacy: false, suffix: '202501', instant: 'now' },
  },
  {
    name: 'year end: calendar rule 202401 on 2024-12-30, with calendarYearWeeks',
    signature: computeSignature(SECRET, '202401', signatureMessage(PARTS, false)),
    nowMs: YEAR_END,
    calendarYearWeeks: true,
    expected: { secretIndex: 0, legacy: false, suffix: '202401', instant: 'now' },
  },
  {
    name: 'year end: calendar rule 202401 on 2024-12-30 is refused by default',
    signature: computeSignature(SECRET, '202401', signatureMessage(PARTS, false)),
    nowMs: YEAR_END,
    expected: null,
  },
  {
    name: 'replay: signed 2024-01-03 (ISO 202401), refused on 2024-12-31 by default',
    signature: signedAt(Date.parse('2024-01-03T12:00:00Z')),
    nowMs: Date.parse('2024-12-31T12:00:00Z'),
    expected: null,
  },
  {
    name: 'replay: signed 2024-01-03 (ISO 202401), accepted on 2024-12-31 with calendarYearWeeks',
    signature: signedAt(Date.parse('2024-01-03T12:00:00Z')),
    nowMs: Date.parse('2024-12-31T12:00:00Z'),
    calendarYearWeeks: true,
    expected: { secretIndex: 0, legacy: false, suffix: '202401', instant: 'now' },
  },
  {
    name: 'year end: last week 202452 on 2024-12-30',
    signature: computeSignature(SECRET, '202452', signatureMessage(PARTS, false)),
    nowMs: YEAR_END,
    expected: { secretIndex: 0, legacy: false, suffix: '202452', instant: 'previous week' },
  },
  { name: 'signed for bucket i, checked for bucket f', signature: signedAt(MIDWEEK), parts: { ...PARTS, bucket: 'f' }, nowMs: MIDWEEK, expected: null },
  { name: 'signed without /proxy, checked with it', signature: signedAt(MIDWEEK), parts: { ...PARTS, proxy: true }, nowMs: MIDWEEK, expected: null },
  { name: 'signed with /proxy, checked without it', signature: signedAt(MIDWEEK, { ...PARTS, proxy: true }), nowMs: MIDWEEK, expected: null },
  { name: 'signed over ext_url without padding, checked with padding', signature: signedAt(MIDWEEK), parts: { ...PARTS, extUrl: `${EXT_URL}=` }, nowMs: MIDWEEK, expected: null },
  {
    name: 'legacy signature in a legacy bucket',
    signature: signedAt(MIDWEEK, PARTS, true),
    legacyAllowed: true,
    nowMs: MIDWEEK,
    expected: { secretIndex: 0, legacy: true, suffix: '202524', instant: 'now' },
  },
  { name: 'legacy signature in a bucket without legacy', signature: signedAt(MIDWEEK, PARTS, true), nowMs: MIDWEEK, expected: null },
  {
    name: 'bucket signature in a legacy bucket is still the bucket scheme',
    signature: signedAt(MIDWEEK),
    legacyAllowed: true,
    nowMs: MIDWEEK,
    expected: { secretIndex: 0, legacy: false, suffix: '202524', instant: 'now' },
  },
  {
    name: 'second of three secrets',
    signature: signedAt(MIDWEEK),
    secrets: ['one', SECRET, 'three'],
    nowMs: MIDWEEK,
    expected: { secretIndex: 1, legacy: false, suffix: '202524', instant: 'now' },
  },
  { name: 'no secrets at all', signature: signedAt(MIDWEEK), secrets: [], nowMs: MIDWEEK, expected: null },
  { name: 'too short', signature: signedAt(MIDWEEK).slice(0, 15), nowMs: MIDWEEK, expected: null },
  { name: 'too long', signature: `${signedAt(MIDWEEK)}A`, nowMs: MIDWEEK, expected: null },
  { name: 'empty', signature: '', nowMs: MIDWEEK, expected: null },
  {
    // latin1 keeps only the low byte: U+0100 + c would compare equal to c without an alphabet check.
    name: 'a look-alike beyond latin1 in place of a valid character',
    signature: ((valid: string) => String.fromCharCode(0x100 + valid.charCodeAt(0)) + valid.slice(1))(signedAt(MIDWEEK)),
    nowMs: MIDWEEK,
    expected: null,
  },
];

describe('verifySignature', () => {
  for (const testCase of VERIFY_CASES) {
    it(testCase.name, () => {
      const match = verifySignature(testCase.signature, testCase.parts ?? PARTS, {
        secrets: testCase.secrets ?? [SECRET],
        legacyAllowed: testCase.legacyAllowed ?? false,
        nowMs: testCase.nowMs,
        skewSeconds: testCase.skewSeconds ?? 3600,
        calendarYearWeeks: testCase.calendarYearWeeks ?? false,
      });
      const summary =
        match === null
          ? null
          : { secretIndex: match.secretIndex, legacy: match.legacy, suffix: match.week.suffix, instant: match.week.instant };
      assert.deepEqual(summary, testCase.expected);
    });
  }
});

describe('findSigningWeek', () => {
  const search = (signature: string, nowMs: number, overrides: { secrets?: string[]; legacyAllowed?: boolean } = {}) =>
    findSigningWeek(signature, PARTS, { secrets: overrides.secrets ?? [SECRET], legacyAllowed: overrides.legacyAllowed ?? false, nowMs, weeks: 53 });

  it('finds the week of a link signed three weeks ago', () => {
    const found = search(signedAt(MIDWEEK - 21 * DAY_MS), MIDWEEK);
    assert.deepEqual(found, { secretIndex: 0, legacy: false, week: { suffix: '202521', rule: 'iso', weeksAgo: 3 } });
  });

  it('finds a link of 50 weeks ago with the second secret', () => {
    const found = search(signedAt(MIDWEEK - 50 * 7 * DAY_MS), MIDWEEK, { secrets: ['newer', SECRET] });
    assert.equal(found?.secretIndex, 1);
    assert.equal(found?.week.weeksAgo, 50);
  });

  it('finds a legacy signature only where the bucket allows it', () => {
    const legacy = signedAt(MIDWEEK - 21 * DAY_MS, PARTS, true);
    assert.equal(search(legacy, MIDWEEK), null);
    assert.equal(search(legacy, MIDWEEK, { legacyAllowed: true })?.legacy, true);
  });

  it('finds a calendar-rule key from the days around New Year', () => {
    const found = search(computeSignature(SECRET, '202401', signatureMessage(PARTS, false)), Date.parse('2025-03-05T12:00:00Z'));
    assert.equal(found?.week.suffix, '202401');
    assert.equal(found?.week.rule, 'calendar');
  });

  it('finds nothing for a link older than a year, a tampered one, or another secret', () => {
    assert.equal(search(signedAt(MIDWEEK - 60 * 7 * DAY_MS), MIDWEEK), null);
    const signature = signedAt(MIDWEEK - 21 * DAY_MS);
    assert.equal(search(`${signature.slice(0, -1)}${signature.endsWith('A') ? 'B' : 'A'}`, MIDWEEK), null);
    assert.equal(search(signature, MIDWEEK, { secrets: ['other'] }), null);
  });
});
