// The README's configuration table is the schema's: generated, never edited by hand.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TABLE_END, TABLE_START, renderConfigTable, replaceConfigTable } from '../server/config/configTable.js';
import { SETTINGS } from '../server/config/schema.js';

const README = new URL('../README.md', import.meta.url);
/** A row's doc is one short line; the long story goes to docs/configuration.md. */
const MAX_DOC_LENGTH = 120;

describe('README configuration table', () => {
  it('is the one the schema makes', () => {
    const readme = readFileSync(README, 'utf8');
    // Not deepEqual: the whole README in a failure message would hide the one line that matters.
    assert.ok(
      replaceConfigTable(readme) === readme,
      "README.md's configuration table differs from server/config/schema.ts: run `npm run docs:config` and commit README.md",
    );
  });

  it('has one row per setting, each with its key, variable and default', () => {
    const rows = renderConfigTable().split('\n').slice(2);
    assert.equal(rows.length, SETTINGS.length);
    const maxBytes = rows.find((row) => row.startsWith('| `limits.maxBytes` |'));
    assert.equal(maxBytes, '| `limits.maxBytes` | `IMAGEPROXY_MAX_BYTES` | `--max-bytes` | `2097152` | 1 or more | largest image accepted from an origin, in bytes |');
    const admin = rows.find((row) => row.startsWith('| `admin.listen` |'));
    assert.ok(admin?.includes('`IMAGEPROXY_ADMIN_LISTEN` (`off` or empty: null) | `--admin-listen` | `127.0.0.1:9091` | host:port or null |'), admin);
    const wait = rows.find((row) => row.startsWith('| `limits.maxQueueWaitMs` |'));
    assert.ok(wait?.includes('| 1 to 119999 |'), wait);
  });
});

describe('setting docs', () => {
  for (const setting of SETTINGS) {
    it(`${setting.key}: one short line`, () => {
      assert.ok(!/[\r\n]/.test(setting.meta.doc), 'one line');
      assert.ok(setting.meta.doc.length <= MAX_DOC_LENGTH, `${setting.meta.doc.length} characters, at most ${MAX_DOC_LENGTH}`);
    });
  }

  it('variables and flags are each named once', () => {
    const envs = SETTINGS.flatMap((setting) => (setting.meta.env === undefined ? [] : [setting.meta.env]));
    const flags = SETTINGS.flatMap((setting) => (setting.meta.flag === undefined ? [] : [setting.meta.flag.split(' ')[0]]));
    assert.equal(new Set(envs).size, envs.length);
    assert.equal(new Set(flags).size, flags.length);
    assert.ok(envs.every((name) => /^IMAGEPROXY_[A-Z_]+$/.test(name)));
  });
});

describe('replaceConfigTable', () => {
  const CASES: Array<{ name: string; text: string; expected: string | null }> = [
    { name: 'fills empty markers', text: `a\n${TABLE_START}\n${TABLE_END}\nb\n`, expected: `a\n${TABLE_START}\nT\n${TABLE_END}\nb\n` },
    { name: 'replaces an old table', text: `${TABLE_START}\n| old |\n${TABLE_END}`, expected: `${TABLE_START}\nT\n${TABLE_END}` },
    { name: 'no markers', text: 'a table nowhere', expected: null },
    { name: 'markers in the wrong order', text: `${TABLE_END}\n${TABLE_START}`, expected: null },
  ];
  for (const testCase of CASES) {
    it(testCase.name, () => {
      if (testCase.expected === null) assert.throws(() => replaceConfigTable(testCase.text, 'T'), /markers/);
      else assert.equal(replaceConfigTable(testCase.text, 'T'), testCase.expected);
    });
  }
});
