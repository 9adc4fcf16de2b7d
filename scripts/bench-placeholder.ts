/**
 * What config `placeholder` costs a hit in nginx: two nginx (1 worker each) on the same
 * stored ~60 KB file, one rendered with the option off and one with it on (its njs
 * module imported, its maps and error branches rendered), `wrk -t2 -c64` on each in
 * turn, rounds alternating. Measured as the worker's CPU time per request (from /proc),
 * steadier than the rate on a shared machine; medians and their ratio.
 *
 *   node --import tsx scripts/bench-placeholder.ts [--rounds N] [--seconds S]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import { signLink } from '../server/contract/signing.js';
import { CONFIG_MODULE_NAME, renderConfigModule, renderStandaloneConf } from '../server/deploy/nginxConfig.js';
import { exampleRenderInput, freePort, NJS_DIR, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from '../test/nginxHarness.js';
import { median } from './benchMeasure.js';

const SECRET = 'bench-secret';
// Linux counts process CPU time in clock ticks of 1/100 s (USER_HZ).
const TICK_MICROS = 10_000;

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index === -1 ? fallback : Number(process.argv[index + 1]);
}

/** CPU ticks (user + system) of the nginx workers under `master`. */
function workerTicks(master: number): number {
  const listed = spawnSync('pgrep', ['-P', String(master)], { encoding: 'utf8' }).stdout.trim();
  return listed
    .split('\n')
    .map(Number)
    .reduce((sum, pid) => {
      const fields = (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] ?? '').split(' ');
      return sum + Number(fields[11]) + Number(fields[12]);
    }, 0);
}

async function main(): Promise<void> {
  const missing = nginxMissing();
  if (missing !== null) throw new Error(missing);
  const rounds = option('--rounds', 8);
  const seconds = option('--seconds', 4);
  const prefix = await mkdtemp(join(tmpdir(), 'imageproxy-bench-placeholder-'));
  const running: RunningNginx[] = [];
  try {
    const root = join(prefix, 'root');
    const imageUrl = 'https://example.com/bench.jpg';
    const key = storageKey(Buffer.from(imageUrl));
    await mkdir(join(root, keyDirectory('i', key)), { recursive: true });
    await writeFile(join(root, keyDirectory('i', key), `${key}.jpg`), randomBytes(60_000));
    const extUrl = encodeImageUrl(imageUrl);
    const signature = signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, Date.now(), { legacy: false });
    const path = formatLink({ bucket: 'i', size: 'full', signature, extUrl, proxy: false });
    const targets: Array<{ name: string; url: string; master: number; microsPerHit: number[] }> = [];
    for (const [name, placeholder] of [['off', false], ['on', true]] as const) {
      const dir = join(prefix, name);
      await mkdir(dir, { recursive: true });
      const port = await freePort();
      const input = exampleRenderInput({
        nginxListen: `127.0.0.1:${port}`,
        appListen: `127.0.0.1:${await freePort()}`,
        root,
        njsDir: NJS_DIR,
        configModuleDir: dir,
        secrets: [SECRET],
        placeholder,
      });
      await writeFile(join(dir, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
      const user = testWorkerUser();
      const conf = renderStandaloneConf(input, dir, { workerProcesses: 1, ...(user === undefined ? {} : { user }) }).replace(/access_log [^;]*;/, 'access_log off;');
      const nginx = await startNginx(dir, conf, port);
      running.push(nginx);
      targets.push({ name, url: `http://127.0.0.1:${port}${path}`, master: nginx.process.pid ?? 0, microsPerHit: [] });
    }
    for (let round = 0; round < rounds; round++) {
      for (const target of round % 2 === 0 ? targets : [...targets].reverse()) {
        const before = workerTicks(target.master);
        const output = spawnSync('wrk', ['-t2', '-c64', `-d${seconds}s`, target.url], { encoding: 'utf8' }).stdout;
        if (/Non-2xx/.test(output)) throw new Error(`not every hit answered 200: ${output}`);
        const requests = Number(/(\d+) requests in/.exec(output)?.[1]);
        target.microsPerHit.push(((workerTicks(target.master) - before) * TICK_MICROS) / requests);
      }
    }
    const [off, on] = targets.map((target) => median(target.microsPerHit));
    process.stdout.write(
      `nginx worker CPU per hit, median of ${rounds} × wrk -t2 -c64 -d${seconds}s, 1 worker: ` +
        `placeholder off ${off?.toFixed(1)} µs, on ${on?.toFixed(1)} µs, on/off ${((on ?? 0) / (off ?? 1)).toFixed(3)}\n`,
    );
  } finally {
    for (const nginx of running) await nginx.stop();
    await rm(prefix, { recursive: true, force: true });
  }
}

await main();
