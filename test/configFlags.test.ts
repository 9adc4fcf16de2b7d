// Flags that mirror config keys come from the schema: name, help (the key's doc), choices, value.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { UsageError, configFlagLayer, withConfigFlags } from '../server/cli/common.js';
import { register as registerServe } from '../server/cli/serve.js';
import { ConfigError, buildConfig } from '../server/config/config.js';
import { SETTINGS, settingOf } from '../server/config/schema.js';

const SERVE_KEYS = ['listen', 'admin.listen', 'delivery', 'engine', 'allowPrivateNetworks', 'calendarYearWeeks', 'limits.maxBytes', 'workers', 'logLevel', 'root'];

describe('serve flags', () => {
  const program = new Command();
  registerServe(program);
  const serve = program.commands.find((command) => command.name() === 'serve');

  for (const key of SERVE_KEYS) {
    it(`${key}: the schema's flag, with the key's doc as help`, () => {
      const { meta, choices } = settingOf(key);
      const option = serve?.options.find((candidate) => candidate.flags === meta.flag);
      assert.ok(option !== undefined, `serve has ${meta.flag ?? '(no flag)'}`);
      assert.equal(option.description, meta.doc);
      assert.deepEqual(option.argChoices ?? null, choices);
    });
  }

  it('every flag the schema declares is on serve', () => {
    const declared = SETTINGS.filter((setting) => setting.meta.flag !== undefined).map((setting) => setting.key);
    assert.deepEqual([...declared].sort(), [...SERVE_KEYS].sort());
  });
});

interface FlagCase {
  name: string;
  argv: string[];
  expected: Record<string, unknown> | { usageError: RegExp } | { configErrorKey: string };
}

const CASES: FlagCase[] = [
  { name: 'none', argv: [], expected: {} },
  { name: 'listen', argv: ['--listen', '127.0.0.1:0'], expected: { listen: '127.0.0.1:0' } },
  { name: 'admin off', argv: ['--admin-listen', 'off'], expected: { admin: { listen: null } } },
  { name: 'admin address', argv: ['--admin-listen', '127.0.0.1:9'], expected: { admin: { listen: '127.0.0.1:9' } } },
  { name: 'max bytes in limits', argv: ['--max-bytes', '1000'], expected: { limits: { maxBytes: 1000 } } },
  { name: 'booleans only turn on', argv: ['--allow-private-networks', '--calendar-year-weeks'], expected: { allowPrivateNetworks: true, calendarYearWeeks: true } },
  { name: 'a choice', argv: ['--engine', 'jimp', '--log-level', 'warn'], expected: { engine: 'jimp', logLevel: 'warn' } },
  { name: 'max bytes 0', argv: ['--max-bytes', '0'], expected: { usageError: /^--max-bytes: 0 is not a positive integer$/ } },
  { name: 'workers not digits', argv: ['--workers', '2x'], expected: { usageError: /^--workers: 2x is not a positive integer$/ } },
  { name: 'workers above the range: the config names the key', argv: ['--workers', '300'], expected: { configErrorKey: 'workers' } },
];

describe('configFlagLayer', () => {
  for (const testCase of CASES) {
    it(testCase.name, () => {
      const command = withConfigFlags(new Command().exitOverride(), SERVE_KEYS);
      command.parse(testCase.argv, { from: 'user' });
      const make = (): Record<string, unknown> => configFlagLayer(command.opts(), SERVE_KEYS);
      const { expected } = testCase;
      if ('usageError' in expected && expected.usageError instanceof RegExp) {
        assert.throws(make, (error: unknown) => error instanceof UsageError && (expected.usageError as RegExp).test(error.message));
      } else if ('configErrorKey' in expected) {
        assert.throws(() => buildConfig({ flags: make() }), (error: unknown) => error instanceof ConfigError && error.key === expected.configErrorKey);
      } else {
        assert.deepEqual(make(), expected);
      }
    });
  }

  it('a bad choice is refused by commander', () => {
    const command = withConfigFlags(new Command().exitOverride().configureOutput({ writeErr: () => undefined }), ['delivery']);
    assert.throws(() => command.parse(['--delivery', 'bogus'], { from: 'user' }), /bogus/);
  });
});
