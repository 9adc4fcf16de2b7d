// The pure reading of imageproxy-py's tree: names, `.headers`, URL verdicts, report lines.
// Legacy names below were computed with Python's urlsafe_b64encode(sha224(ext_url)), as
// imageproxy-py made them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { storageKey } from '../server/contract/layout.js';
import {
  classifyLegacyName,
  decideLegacyEntry,
  defaultReportName,
  formatReportLine,
  isInsideTree,
  judgeLegacyExtUrl,
  LEGACY_FAILURE_REASONS,
  legacyImageName,
  legacyNameMatches,
  parseLegacyHeaders,
  rerunMightFix,
  type LegacyEntry,
  type LegacyEntryAction,
  type LegacyProblemReason,
} from '../server/ops/legacyTree.js';
import type { TreeEntryType } from '../server/tree/walk.js';

const PY_VECTORS = [
  { extUrl: 'aHR0cHM6Ly9leGFtcGxlLm9yZy9hLmpwZw==', name: 'BgBdGdLFW7BHw8-MrsC13XsMSbAHnYs6gDIN8A==' },
  { extUrl: 'aHR0cHM6Ly9leGFtcGxlLm9yZy9hYi5qcGc=', name: 'EpyWSsg0g0NDaSmPCwHHI9BUrctwIOXXruxQQQ==' },
  { extUrl: 'aHR0cHM6Ly9leGFtcGxlLm9yZy9hYi5qcGc', name: 'dDfcmjhSLlu68m7VlH4E6I32gN2da2G8jrQHmA==' },
];
const NAME = PY_VECTORS[0]?.name ?? '';

describe('legacyImageName', () => {
  for (const vector of PY_VECTORS) {
    it(`is what imageproxy-py named ${vector.extUrl}`, () => {
      assert.equal(legacyImageName(vector.extUrl), vector.name);
    });
  }
});

describe('legacyNameMatches', () => {
  const cases: Array<[string, string, string, boolean]> = [
    ['padded name', NAME, PY_VECTORS[0]?.extUrl ?? '', true],
    ['name without ==', NAME.slice(0, -2), PY_VECTORS[0]?.extUrl ?? '', true],
    ['name of the unpadded link is not the padded one', PY_VECTORS[2]?.name ?? '', PY_VECTORS[1]?.extUrl ?? '', false],
    ['another URL', NAME, PY_VECTORS[1]?.extUrl ?? '', false],
    ['one = only', `${NAME.slice(0, -1)}`, PY_VECTORS[0]?.extUrl ?? '', false],
  ];
  for (const [name, fileName, extUrl, expected] of cases) {
    it(name, () => assert.equal(legacyNameMatches(fileName, extUrl), expected));
  }
});

describe('classifyLegacyName', () => {
  const cases: Array<[string, string, LegacyEntry]> = [
    ['padded image', NAME, { kind: 'image', imageName: NAME }],
    ['unpadded image', NAME.slice(0, -2), { kind: 'image', imageName: NAME.slice(0, -2) }],
    ['headers', `${NAME}.headers`, { kind: 'headers', imageName: NAME }],
    ['backoff record', `${NAME}.err`, { kind: 'err', imageName: NAME }],
    ['unfinished download', `${NAME}.tmp`, { kind: 'tmp', imageName: NAME }],
    ['our own temp file is a tmp too', '.abc.jpg.123.tmp', { kind: 'tmp', imageName: '.abc.jpg.123' }],
    ['too short', NAME.slice(0, 30), { kind: 'unknown', imageName: null }],
    ['one = only', NAME.slice(0, -1), { kind: 'unknown', imageName: null }],
    ['not base64url', `${NAME.slice(0, 37)}+==`, { kind: 'unknown', imageName: null }],
    ['an extension', `${NAME}.jpg`, { kind: 'unknown', imageName: null }],
    ['headers of a name that is not legacy', 'photo.headers', { kind: 'unknown', imageName: null }],
    ['our key (sha256, 43 characters)', `${storageKey(Buffer.from('x'))}`, { kind: 'unknown', imageName: null }],
    ['our sidecar', `${storageKey(Buffer.from('x'))}.json`, { kind: 'unknown', imageName: null }],
  ];
  for (const [name, fileName, expected] of cases) {
    it(name, () => assert.deepEqual(classifyLegacyName(fileName), expected));
  }
});

describe('decideLegacyEntry', () => {
  const cases: Array<[string, { depth: 1 | 2 | 3; name: string; type: TreeEntryType }, LegacyEntryAction['action'], LegacyProblemReason | null]> = [
    ['an image on a regular file', { depth: 3, name: NAME, type: 'file' }, 'import', null],
    ['its .headers, whatever it is', { depth: 3, name: `${NAME}.headers`, type: 'other' }, 'headers', null],
    ['a backoff record', { depth: 3, name: `${NAME}.err`, type: 'file' }, 'ignore', null],
    ['an unfinished download that is a FIFO: still never opened', { depth: 3, name: `${NAME}.tmp`, type: 'other' }, 'ignore', null],
    ['an image name on a FIFO', { depth: 3, name: NAME, type: 'other' }, 'report', 'not_a_regular_file'],
    ['an image name on a directory', { depth: 3, name: NAME, type: 'directory' }, 'report', 'not_a_regular_file'],
    ['an image name on a symlink', { depth: 3, name: NAME, type: 'symlink' }, 'symlink', 'not_a_regular_file'],
    ['a stray regular file', { depth: 3, name: 'notes.txt', type: 'file' }, 'report', 'unknown_file'],
    ['a stray symlink', { depth: 3, name: 'loop', type: 'symlink' }, 'symlink', 'not_a_regular_file'],
    ['a symlink for a shard directory', { depth: 1, name: 'zz', type: 'symlink' }, 'symlink', 'not_a_directory'],
    ['a file for a second-level shard directory', { depth: 2, name: NAME, type: 'file' }, 'report', 'not_a_directory'],
  ];
  for (const [name, entry, action, reason] of cases) {
    it(name, () => {
      const decision = decideLegacyEntry(entry);
      assert.equal(decision.action, action);
      assert.equal('reason' in decision ? decision.reason : null, reason);
    });
  }
});

describe('isInsideTree', () => {
  const cases: Array<[string, string, string, boolean]> = [
    ['a file below', '/srv/py', '/srv/py/i/a/b/x', true],
    ['the root itself', '/srv/py', '/srv/py', true],
    ['a sibling sharing the prefix', '/srv/py', '/srv/py-old/i', false],
    ['/dev/zero', '/srv/py', '/dev/zero', false],
    ['the root /', '/', '/etc/shadow', true],
  ];
  for (const [name, root, path, expected] of cases) {
    it(name, () => assert.equal(isInsideTree(root, path), expected));
  }
});

describe('rerunMightFix', () => {
  it('only for a failed read or write: every other reason is in the tree, the config or the blocklist', () => {
    assert.deepEqual(LEGACY_FAILURE_REASONS.filter(rerunMightFix), ['io_error']);
  });
});

describe('parseLegacyHeaders', () => {
  const cases: Array<[string, string, ReturnType<typeof parseLegacyHeaders>]> = [
    [
      'as imageproxy-py wrote it',
      'content-type image/jpeg\nx-original-url aHR0cA==\n',
      { contentType: 'image/jpeg', extUrl: 'aHR0cA==' },
    ],
    ['CRLF and capitals', 'Content-Type image/png\r\nX-Original-URL aHR0cA\r\n', { contentType: 'image/png', extUrl: 'aHR0cA' }],
    ['a value with spaces', 'content-type text/html; charset=utf-8\n', { contentType: 'text/html; charset=utf-8', extUrl: null }],
    ['no URL line', 'content-type image/gif\n', { contentType: 'image/gif', extUrl: null }],
    ['empty URL', 'x-original-url \n', { contentType: null, extUrl: null }],
    ['lines without a space and unknown names ignored', 'garbage\nserver nginx\nx-original-url abc\n', { contentType: null, extUrl: 'abc' }],
    ['last repeated name wins', 'x-original-url a\nx-original-url b\n', { contentType: null, extUrl: 'b' }],
    ['empty file', '', { contentType: null, extUrl: null }],
  ];
  for (const [name, text, expected] of cases) {
    it(name, () => assert.deepEqual(parseLegacyHeaders(text), expected));
  }
});

describe('judgeLegacyExtUrl', () => {
  const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64url');
  const good: Array<[string, string, string]> = [
    ['unpadded', b64('https://example.org/ab.jpg'), 'https://example.org/ab.jpg'],
    ['padded', 'aHR0cHM6Ly9leGFtcGxlLm9yZy9hYi5qcGc=', 'https://example.org/ab.jpg'],
    ['http with port and query', b64('http://127.0.0.1:9/x.png?a=1'), 'http://127.0.0.1:9/x.png?a=1'],
  ];
  for (const [name, extUrl, imageUrl] of good) {
    it(`accepts ${name}, keyed by the decoded bytes`, () => {
      assert.deepEqual(judgeLegacyExtUrl(extUrl), { ok: true, imageUrl, key: storageKey(Buffer.from(imageUrl, 'utf8')) });
    });
  }
  it('padded and unpadded forms share one key', () => {
    const padded = judgeLegacyExtUrl('aHR0cHM6Ly9leGFtcGxlLm9yZy9hYi5qcGc=');
    const bare = judgeLegacyExtUrl('aHR0cHM6Ly9leGFtcGxlLm9yZy9hYi5qcGc');
    assert.ok(padded.ok && bare.ok);
    assert.equal(padded.key, bare.key);
  });
  const bad: Array<[string, string, RegExp]> = [
    ['not base64url (a raw URL)', 'https://example.org/a.jpg', /not base64url/],
    ['standard base64 characters', 'aHR0c+/=', /not base64url/],
    ['too long', 'A'.repeat(8193), /not base64url/],
    ['not a URL', b64('just words'), /not a valid URL/],
    ['ftp', b64('ftp://example.org/a.jpg'), /http or https/],
    ['javascript', b64('javascript:alert(1)'), /http or https/],
    ['credentials', b64('https://user:pw@example.org/a.jpg'), /credentials/],
  ];
  for (const [name, extUrl, detail] of bad) {
    it(`refuses ${name}`, () => {
      const verdict = judgeLegacyExtUrl(extUrl);
      assert.equal(verdict.ok, false);
      assert.match(verdict.ok ? '' : verdict.detail, detail);
    });
  }
});

describe('report lines', () => {
  it('are path, reason, detail separated by tabs, one line each, whatever the detail holds', () => {
    assert.equal(formatReportLine('i/a/b/x', 'bad_url', 'one\ttwo\r\nthree'), 'i/a/b/x\tbad_url\tone two three\n');
  });
  it('default name carries the UTC time, sortable', () => {
    assert.equal(defaultReportName(Date.UTC(2026, 10, 28, 12, 3, 4, 567)), 'import-legacy-20261128T120304Z.tsv');
  });
});
