// The pure blocklist (server/takedown/blocklist.ts) and audit line (server/takedown/audit.ts): tables of cases.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandLineOf, formatAuditLine, redactArgv } from '../server/takedown/audit.js';
import {
  BlocklistFormatError,
  addEntries,
  emptyBlocklist,
  entriesOfKey,
  formatBlocklist,
  isBlocked,
  normaliseHost,
  parseBlocklist,
  removeEntries,
  withConfigHosts,
  type BlockEntry,
  type Blocklist,
  type BlockQuery,
} from '../server/takedown/blocklist.js';

const KEY_A = 'A'.repeat(43);
const KEY_B = 'B'.repeat(42) + '_';
const DIGEST_A = 'a'.repeat(64);
const DIGEST_B = '0123456789abcdef'.repeat(4);

describe('normaliseHost', () => {
  const cases: Array<[string, string | null]> = [
    ['example.org', 'example.org'],
    ['EXAMPLE.Org', 'example.org'],
    ['example.org.', 'example.org'],
    ['  example.org  ', 'example.org'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['XN--BCHER-KVA.example', 'xn--bcher-kva.example'],
    ['127.0.0.2', '127.0.0.2'],
    ['127.1', '127.0.0.1'],
    ['0x7f.0.0.1', '127.0.0.1'],
    ['::1', '[::1]'],
    ['[::1]', '[::1]'],
    ['[2001:DB8::1]', '[2001:db8::1]'],
    ['', null],
    ['.', null],
    ['example.org:8080', null],
    ['http://example.org', null],
    ['example.org/path', null],
    ['user@example.org', null],
    ['exa mple.org', null],
    ['exa%41mple.org', null],
    ['[::1]:80', null],
  ];
  for (const [input, expected] of cases) {
    it(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => {
      assert.equal(normaliseHost(input), expected);
    });
  }
});

const entry = (kind: BlockEntry['kind'], value: string, extra: Partial<BlockEntry> = {}): BlockEntry => ({
  kind,
  value,
  at: '2026-01-01T00:00:00.000Z',
  by: 'imageproxy purge --block x',
  ...extra,
});

describe('parseBlocklist / formatBlocklist', () => {
  const lists: Array<[string, Blocklist]> = [
    ['empty', emptyBlocklist()],
    [
      'every kind, optional fields',
      {
        version: 1,
        entries: [
          entry('key', KEY_A, { url: 'https://example.org/a.jpg', note: 'ticket 12' }),
          entry('digest', DIGEST_A, { key: KEY_A }),
          entry('host', 'xn--bcher-kva.example'),
        ],
      },
    ],
  ];
  for (const [name, list] of lists) {
    it(`round trip: ${name}`, () => {
      const text = formatBlocklist(list);
      assert.deepEqual(parseBlocklist(text), list);
      assert.equal(formatBlocklist(parseBlocklist(text)), text);
      assert.ok(text.endsWith('\n'));
    });
  }

  it('normalises values it reads (host case, digest case)', () => {
    const text = JSON.stringify({
      version: 1,
      entries: [
        { kind: 'host', value: 'Example.ORG.', at: '', by: '' },
        { kind: 'digest', value: DIGEST_B.toUpperCase(), at: '', by: '' },
      ],
    });
    assert.deepEqual(
      parseBlocklist(text).entries.map((item) => item.value),
      ['example.org', DIGEST_B],
    );
  });

  const bad: Array<[string, string, RegExp]> = [
    ['not JSON', '{', /not valid JSON/],
    ['an array', '[]', /JSON object/],
    ['wrong version', '{"version":2,"entries":[]}', /version must be 1/],
    ['entries not a list', '{"version":1,"entries":{}}', /entries must be a list/],
    ['unknown kind', '{"version":1,"entries":[{"kind":"url","value":"x"}]}', /entries\[0\]\.kind/],
    ['short key', '{"version":1,"entries":[{"kind":"key","value":"abc"}]}', /entries\[0\]\.value is not a valid key/],
    ['bad digest', '{"version":1,"entries":[{"kind":"digest","value":"zz"}]}', /not a valid digest/],
    ['host with port', '{"version":1,"entries":[{"kind":"host","value":"a.org:80"}]}', /not a valid host/],
    ['note not a string', `{"version":1,"entries":[{"kind":"key","value":"${KEY_A}","note":5}]}`, /entries\[0\]\.note/],
    ['digest with a bad key', `{"version":1,"entries":[{"kind":"digest","value":"${DIGEST_A}","key":"x"}]}`, /entries\[0\]\.key/],
  ];
  for (const [name, text, message] of bad) {
    it(`refuses ${name}`, () => {
      assert.throws(() => parseBlocklist(text), (error: unknown) => error instanceof BlocklistFormatError && message.test(error.message));
    });
  }
});

describe('addEntries / removeEntries / entriesOfKey', () => {
  it('adds only what is new, keeps order', () => {
    const first = addEntries(emptyBlocklist(), [entry('key', KEY_A), entry('digest', DIGEST_A, { key: KEY_A })]);
    assert.equal(first.added.length, 2);
    const second = addEntries(first.list, [entry('key', KEY_A, { at: 'later' }), entry('host', 'example.org'), entry('host', 'example.org')]);
    assert.deepEqual(second.added.map((item) => item.kind), ['host']);
    assert.deepEqual(second.list.entries.map((item) => item.value), [KEY_A, DIGEST_A, 'example.org']);
    assert.equal(second.list.entries[0]?.at, '2026-01-01T00:00:00.000Z');
  });

  it('unblocking a key removes its entry and the digests recorded with it, nothing else', () => {
    const list: Blocklist = {
      version: 1,
      entries: [
        entry('key', KEY_A),
        entry('digest', DIGEST_A, { key: KEY_A }),
        entry('key', KEY_B),
        entry('digest', DIGEST_B, { key: KEY_B }),
        entry('host', 'example.org'),
      ],
    };
    const { list: after, removed } = removeEntries(list, entriesOfKey(KEY_A));
    assert.deepEqual(removed.map((item) => item.value), [KEY_A, DIGEST_A]);
    assert.deepEqual(after.entries.map((item) => item.value), [KEY_B, DIGEST_B, 'example.org']);
    assert.equal(removeEntries(after, entriesOfKey(KEY_A)).removed.length, 0);
  });
});

describe('isBlocked', () => {
  const list = withConfigHosts(
    {
      version: 1,
      entries: [entry('key', KEY_A), entry('digest', DIGEST_A, { key: KEY_A }), entry('host', 'blocked.example')],
    },
    ['config.example', 'blocked.example'],
  );
  const cases: Array<[string, BlockQuery, string | null]> = [
    ['the blocked key', { key: KEY_A }, `key ${KEY_A}`],
    ['another key', { key: KEY_B }, null],
    ['a blocked digest among others', { key: KEY_B, digests: [DIGEST_B, DIGEST_A] }, `digest ${DIGEST_A}`],
    ['a digest in capitals', { digests: [DIGEST_A.toUpperCase()] }, `digest ${DIGEST_A}`],
    ['other digests', { digests: [DIGEST_B] }, null],
    ['a blocked host', { host: 'blocked.example' }, 'host blocked.example'],
    ['a blocked host, other spelling', { host: 'BLOCKED.example.' }, 'host blocked.example'],
    ['a host from the config', { host: 'config.example' }, 'host config.example'],
    ['a subdomain is another host', { host: 'cdn.blocked.example' }, null],
    ['nothing asked', {}, null],
    ['key wins over host', { key: KEY_A, host: 'blocked.example' }, `key ${KEY_A}`],
  ];
  for (const [name, query, expected] of cases) {
    it(name, () => {
      const match = isBlocked(list, query);
      assert.equal(match === null ? null : `${match.kind} ${match.value}`, expected);
    });
  }

  it('config hosts are marked as such and not duplicated', () => {
    const hosts = list.entries.filter((item) => item.kind === 'host');
    assert.deepEqual(
      hosts.map((item) => [item.value, item.by]),
      [
        ['blocked.example', 'imageproxy purge --block x'],
        ['config.example', 'config blockedHosts'],
      ],
    );
  });
});

describe('audit line', () => {
  const redactions: Array<[string[], string[]]> = [
    [['purge', '--block', '/i/full/x/y'], ['purge', '--block', '/i/full/x/y']],
    [['purge', '--secret', 's3cret', 'link'], ['purge', '--secret', '<redacted>', 'link']],
    [['purge', '--secret=s3cret'], ['purge', '--secret=<redacted>']],
    [['purge', '--secret'], ['purge', '--secret']],
  ];
  for (const [argv, expected] of redactions) {
    it(`redacts ${argv.join(' ')}`, () => {
      assert.deepEqual(redactArgv(argv), expected);
    });
  }

  it('command line quotes what a shell would split', () => {
    assert.equal(commandLineOf(['block', '--host', 'a.org', '--note', 'DMCA 12']), 'imageproxy block --host a.org --note "DMCA 12"');
  });

  it('one JSON object per line', () => {
    const line = formatAuditLine({ time: 't', action: 'block', target: 'x\ny', user: 'u', argv: ['a'] });
    assert.equal(line.split('\n').length, 2);
    assert.deepEqual(JSON.parse(line), { time: 't', action: 'block', target: 'x\ny', user: 'u', argv: ['a'] });
  });
});
