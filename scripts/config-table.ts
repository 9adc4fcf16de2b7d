/**
 * `npm run docs:config`: rewrites README.md's configuration table (between
 * `<!-- config-table:start -->` and `<!-- config-table:end -->`) from the config schema,
 * server/config/schema.ts. test/configTable.test.ts fails until it is run after a change.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { replaceConfigTable } from '../server/config/configTable.js';

const README = join(dirname(fileURLToPath(import.meta.url)), '..', 'README.md');
const before = readFileSync(README, 'utf8');
const after = replaceConfigTable(before);
if (after === before) {
  process.stdout.write('README.md: the configuration table is up to date\n');
} else {
  writeFileSync(README, after);
  process.stdout.write('README.md: configuration table rewritten from server/config/schema.ts\n');
}
