/**
 * Shared parts of the fault suite (test/fault*.test.ts, test/fuzzPaths.test.ts,
 * test/soak.test.ts): `imageproxy serve` as a real process with its pid and addresses,
 * what /proc says about it (resident memory, open files), light HTTP requests over a
 * keep-alive agent, and a listing of every file under a tree.
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { startCli } from './cliProcess.js';
import { until } from './helpers.js';

export interface ServeProcess {
  pid: number;
  /** The public listener, `http://127.0.0.1:port`. */
  url: string;
  /** The admin listener, or null when the config turns it off. */
  adminUrl: string | null;
  /** Log lines at level error (50) or above, as parsed JSON. */
  errorLines(): Array<Record<string, unknown>>;
  /** Sends `signal` and waits for the process to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Writes `{work}/config.json` for serve on free loopback ports (public and admin), its
 * tree in `{work}/tree`, origins on loopback allowed; `layer` adds or replaces keys.
 */
export async function writeServeConfig(work: string, layer: Record<string, unknown>): Promise<string> {
  const configPath = join(work, 'config.json');
  await writeFile(
    configPath,
    JSON.stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      root: join(work, 'tree'),
      allowPrivateNetworks: true,
      logLevel: 'info',
      ...layer,
    }),
    // Private: a config holding secrets that every user can read is refused.
    { mode: 0o600 },
  );
  return configPath;
}

/**
 * `imageproxy serve --config FILE` (built CLI), resolved once it logs `listening on`, or,
 * when `publicUrl` is given (a config whose logLevel hides that line), once its
 * `/healthz` answers. A process that does not get there is killed.
 */
export async function startServe(configPath: string, cwd: string, options: { publicUrl?: string; startWithinMs?: number } = {}): Promise<ServeProcess> {
  const startWithinMs = options.startWithinMs ?? 60_000;
  const child: ChildProcessWithoutNullStreams = startCli(['serve', '--config', configPath], { cwd });
  const exited = new Promise<void>((done) => child.once('close', () => done()));
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const errors: Array<Record<string, unknown>> = [];
  const listening = new Promise<{ url: string; adminUrl: string | null }>((resolve) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      let log: { level?: number; msg?: string; address?: string; admin?: string | null };
      try {
        log = JSON.parse(line) as typeof log;
      } catch {
        return;
      }
      if ((log.level ?? 0) >= 50) errors.push(log);
      if (log.msg?.startsWith('listening on ') === true && log.address !== undefined) resolve({ url: log.address, adminUrl: log.admin ?? null });
    });
  });
  const answering = async (url: string): Promise<{ url: string; adminUrl: null }> => {
    const agent = new Agent({ keepAlive: false });
    await until(() => lightRequest(url, '/healthz', agent, { timeoutMs: 5000 }), {
      message: `${url}/healthz answering`,
      done: (answer) => answer.status === 200,
      timeoutMs: startWithinMs,
      intervalMs: 100,
    });
    return { url, adminUrl: null };
  };
  // Handled here too: once started, the process exiting later is not an error of the start.
  const exitedEarly = exited.then(() => Promise.reject(new Error(`serve exited: ${stderr}`)));
  exitedEarly.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  let addresses: { url: string; adminUrl: string | null };
  try {
    addresses = await Promise.race([
      options.publicUrl === undefined ? listening : answering(options.publicUrl),
      exitedEarly,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`serve did not listen within ${startWithinMs} ms: ${stderr}`)), startWithinMs);
      }),
    ]);
  } catch (error) {
    child.kill('SIGKILL');
    await exited;
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return {
    pid: child.pid ?? 0,
    ...addresses,
    errorLines: () => errors,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** Resident memory of a process in KiB (VmRSS), 0 once it is gone. */
export async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return match === null ? 0 : Number(match[1]);
}

/** Open file descriptors of a process (entries of /proc/PID/fd). */
export async function openFileCount(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

export interface LightAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Body bytes received (the body itself is dropped). */
  bodyBytes: number;
  /** The first bytes of the body, enough to check an error's text. */
  bodyStart: string;
}

/**
 * One request over `agent` (keep-alive in the fault tests), body counted and dropped.
 * `path` is sent as it is: node:http only refuses characters outside U+0021–U+00FF.
 */
export function lightRequest(
  baseUrl: string,
  path: string,
  agent: Agent,
  options: { method?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<LightAnswer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ hostname, port, path, agent, method: options.method ?? 'GET', headers: options.headers }, (incoming) => {
      let bodyBytes = 0;
      let bodyStart = '';
      incoming.on('data', (chunk: Buffer) => {
        if (bodyStart.length < 200) bodyStart += chunk.subarray(0, 200).toString('utf8');
        bodyBytes += chunk.length;
      });
      incoming.on('error', reject);
      incoming.on('end', () => resolve({ status: incoming.statusCode ?? 0, headers: incoming.headers, bodyBytes, bodyStart }));
    });
    outgoing.setTimeout(options.timeoutMs ?? 30_000, () => outgoing.destroy(new Error(`no answer within ${options.timeoutMs ?? 30_000} ms: ${path}`)));
    outgoing.on('error', reject);
    outgoing.end();
  });
}

/** Every file and directory under `root`, as sorted paths relative to it (directories end in `/`). */
export async function listTree(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .map((entry) => {
      const path = relative(root, join(entry.parentPath, entry.name));
      return entry.isDirectory() ? `${path}/` : path;
    })
    .sort();
}

/** Runs `work` over `items` with at most `concurrency` at once, results in order. */
export async function mapConcurrently<T, R>(items: readonly T[], concurrency: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await work(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}
