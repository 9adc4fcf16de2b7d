/**
 * A /healthz prober in a process of its own, as a load balancer is: a probe measured from
 * the process that fires a burst of requests would time that process's own stall too.
 * After one warm-up probe it prints `ready`, then probes every `intervalMs` (a new
 * connection each time) until its stdin closes, then
 * prints one JSON line: probes, slowest answer, answers over 100 ms, non-200 answers.
 *
 *   node scripts/healthProbe.ts <base-url> [intervalMs=50]   (spawned by scripts/bench-memory.ts)
 */
import { spawn } from 'node:child_process';
import { get } from 'node:http';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface HealthFigures {
  probes: number;
  maxMs: number;
  over100Ms: number;
  failed: number;
}

/**
 * Starts a prober process against `baseUrl` and resolves once it has made its first
 * probe (not counted: a new process's first request pays for loading its own code);
 * `stop()` ends it and resolves with its figures.
 */
export async function startHealthProbe(baseUrl: string, intervalMs = 50): Promise<{ stop(): Promise<HealthFigures> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), baseUrl, String(intervalMs)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let output = '';
  let announceReady: () => void = () => undefined;
  const ready = new Promise<void>((done) => {
    announceReady = done;
  });
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
    if (output.startsWith(`${READY_LINE}\n`)) {
      output = output.slice(READY_LINE.length + 1);
      announceReady();
    }
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  await Promise.race([ready, exited]);
  return {
    async stop() {
      child.stdin.end();
      await exited;
      return JSON.parse(output) as HealthFigures;
    },
  };
}

const READY_LINE = 'ready';

function probeOnce(url: string): Promise<{ ms: number; ok: boolean }> {
  const started = performance.now();
  return new Promise((done) => {
    get(url, { agent: false }, (incoming) => {
      incoming.resume();
      incoming.on('end', () => done({ ms: performance.now() - started, ok: incoming.statusCode === 200 }));
      incoming.on('error', () => done({ ms: performance.now() - started, ok: false }));
    }).on('error', () => done({ ms: performance.now() - started, ok: false }));
  });
}

async function main(baseUrl: string, intervalMs: number): Promise<void> {
  let running = true;
  process.stdin.on('end', () => {
    running = false;
  });
  process.stdin.resume();
  const figures: HealthFigures = { probes: 0, maxMs: 0, over100Ms: 0, failed: 0 };
  const probeUrl = new URL('/healthz', baseUrl).href;
  await probeOnce(probeUrl);
  process.stdout.write(`${READY_LINE}\n`);
  while (running) {
    const { ms, ok } = await probeOnce(probeUrl);
    figures.probes += 1;
    figures.maxMs = Math.max(figures.maxMs, ms);
    if (ms > 100) figures.over100Ms += 1;
    if (!ok) figures.failed += 1;
    await new Promise((wait) => setTimeout(wait, intervalMs));
  }
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main(process.argv[2] as string, Number(process.argv[3] ?? 50));
}
