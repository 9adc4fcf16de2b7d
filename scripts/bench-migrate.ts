/**
 * `imageproxy migrate-storage` on a tree of small objects, against a throwaway Ceph RGW
 * (test/rgwHarness.ts): objects per second into the bucket at several concurrencies, a
 * rerun that finds everything there, and back into a fresh tree. Rounds alternate the
 * concurrencies so each sees the same machine load; each copy goes under a prefix of its
 * own. Runs the built command (`npm run build` first), as an operator would.
 *
 *   node --import tsx scripts/bench-migrate.ts [--keys 1000] [--rounds 2]
 */
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { runCli, type CliRun } from '../test/cliProcess.js';
import { makeTempRoot, removeTempRoot } from '../test/helpers.js';
import { migrationImages, plantMigrationTree } from '../test/migrationTree.js';
import { startGateway } from '../test/rgwHarness.js';
import { median } from './benchMeasure.js';
import { printBenchTable, type BenchRow } from './benchTable.js';

const { values: args } = parseArgs({ options: { keys: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '2' } } });
const keys = Number(args.keys);
const rounds = Number(args.rounds);
const CONCURRENCIES = [1, 4, 16];
const loadAtStart = loadavg().map((value) => value.toFixed(2));

const gateway = await startGateway();
const work = await makeTempRoot('imageproxy-bench-migrate-');
const env = {
  AWS_ACCESS_KEY_ID: gateway.credentials.accessKeyId,
  AWS_SECRET_ACCESS_KEY: gateway.credentials.secretAccessKey,
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_SHARED_CREDENTIALS_FILE: join(work, 'none'),
  AWS_CONFIG_FILE: join(work, 'none'),
};

/** Objects per second of one run, by the wall clock around the whole command (start and count included). */
async function timedRun(name: string, root: string, prefix: string, extra: string[]): Promise<{ rate: number; run: CliRun; objects: number }> {
  const config = join(work, `${name}.json`);
  await writeFile(config, JSON.stringify({ root, storage: { endpoint: gateway.endpoint, bucket: gateway.bucket, prefix } }));
  const started = process.hrtime.bigint();
  const run = await runCli(['migrate-storage', '--config', config, ...extra], { cwd: work, env, timeoutMs: 600_000 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const match = /copied (\d+), already there (\d+), failed (\d+)/.exec(run.stdout);
  if (run.code !== 0 || match === null) throw new Error(`${name}: exit ${run.code}: ${run.stderr.slice(-500)}`);
  const objects = Number(match[1]) + Number(match[2]);
  return { rate: objects / seconds, run, objects };
}

const rates = new Map<string, number[]>();
const record = (name: string, rate: number): void => void rates.set(name, [...(rates.get(name) ?? []), rate]);
let objects = 0;
try {
  const root = join(work, 'tree');
  await plantMigrationTree(root, keys, await migrationImages(), { classFiles: true });
  for (let round = 0; round < rounds; round += 1) {
    const order = round % 2 === 0 ? CONCURRENCIES : [...CONCURRENCIES].reverse();
    for (const concurrency of order) {
      const prefix = `r${round}c${concurrency}/`;
      const copy = await timedRun(`copy-${round}-${concurrency}`, root, prefix, ['--to', 's3', '--concurrency', String(concurrency)]);
      objects = copy.objects;
      record(`tree → bucket, --concurrency ${concurrency}`, copy.rate);
      if (concurrency === 4) {
        record('rerun, all there (HEAD each), --concurrency 4', (await timedRun(`rerun-${round}`, root, prefix, ['--to', 's3', '--concurrency', '4'])).rate);
        record('rerun --verify (GET each), --concurrency 4', (await timedRun(`verify-${round}`, root, prefix, ['--to', 's3', '--concurrency', '4', '--verify'])).rate);
        record('bucket → fresh tree, --concurrency 4', (await timedRun(`back-${round}`, join(work, `back-${round}`), prefix, ['--to', 'tree', '--concurrency', '4'])).rate);
      }
    }
  }
} finally {
  await gateway.stop();
  await removeTempRoot(work);
}

const reference = median(rates.get('tree → bucket, --concurrency 1') ?? []);
const rows: BenchRow[] = [...rates].map(([name, values]) => ({
  section: `migrate-storage, ${objects} objects (${keys} keys: original, thumbnail, class file)`,
  name,
  value: median(values),
  unit: 'objects/s',
  ratio: median(values) / reference,
  note: `${values.length} runs: ${values.map((value) => value.toFixed(0)).join(', ')}`,
}));
console.log(`${cpus().length} cores; load average ${loadAtStart.join(' ')} at start, ${loadavg().map((value) => value.toFixed(2)).join(' ')} at end; node ${process.version}`);
printBenchTable(rows);
