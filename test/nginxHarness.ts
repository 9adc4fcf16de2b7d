/**
 * Runs a real nginx for tests and benchmarks: free loopback port, the standalone config
 * under a temp prefix, nginx in the foreground, stopped by pid. Also says, with the
 * packages to install, when nginx, its njs module or the njs CLI is missing.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_MODULE_NAME, NJS_MODULE_PATH, renderConfigModule, type NginxRenderInput } from '../server/deploy/nginxConfig.js';
import { until } from './helpers.js';

/** A render input with production-like paths, for tests of the rendered text; `overrides` replaces keys. */
export function exampleRenderInput(overrides: Partial<NginxRenderInput> = {}): NginxRenderInput {
  return {
    nginxListen: '127.0.0.1:8080',
    appListen: '127.0.0.1:8091',
    root: '/srv/imageproxy/data',
    internalPrefix: '/_imageproxy',
    njsDir: '/opt/imageproxy/nginx',
    configModuleDir: '/etc/imageproxy',
    buckets: { i: { legacySignatures: false } },
    sizes: [150, 250],
    skewSeconds: 3600,
    secrets: ['1234'],
    ...overrides,
  };
}

export const NGINX_INSTALL_HINT = 'apt-get install nginx libnginx-mod-http-js njs';
export const NJS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'nginx');
const NGINX_BINARY = 'nginx';

export function commandWorks(command: string, args: string[]): boolean {
  const result = spawnSync(command, args, { stdio: 'ignore' });
  return result.error === undefined && result.status === 0;
}

/** nginx with the njs module, or why not (the message names the packages). */
export function nginxMissing(): string | null {
  if (!commandWorks(NGINX_BINARY, ['-v'])) return `nginx not found: ${NGINX_INSTALL_HINT}`;
  if (!existsSync(NJS_MODULE_PATH)) return `${NJS_MODULE_PATH} not found: ${NGINX_INSTALL_HINT}`;
  return null;
}

/** The `njs` command-line tool, or why not. */
export function njsMissing(): string | null {
  return commandWorks('njs', ['-v']) ? null : `njs command not found: ${NGINX_INSTALL_HINT}`;
}

/**
 * Runs `driver` (an njs script importing imageproxy.js) with the real njs, beside the
 * module rendered from a small test config with `overrides`, both written to `workDir`.
 * Returns its stdout; fails the test when njs fails.
 */
export async function runNjsDriver(workDir: string, driver: string, overrides: Partial<NginxRenderInput> = {}): Promise<string> {
  const input: NginxRenderInput = {
    nginxListen: '127.0.0.1:8080',
    appListen: '127.0.0.1:8091',
    root: '/srv/imageproxy',
    internalPrefix: '/_imageproxy',
    njsDir: NJS_DIR,
    configModuleDir: workDir,
    buckets: { i: { legacySignatures: false } },
    sizes: [150],
    skewSeconds: 3600,
    secrets: ['1234'],
    ...overrides,
  };
  await writeFile(join(workDir, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
  await writeFile(join(workDir, 'driver.js'), driver);
  const run = spawnSync('njs', ['-p', workDir, '-p', NJS_DIR, join(workDir, 'driver.js')], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  assert.equal(run.status, 0, `njs failed: ${run.stderr}${run.stdout.slice(0, 2000)}`);
  return run.stdout;
}

/** A loopback TCP port free right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * `user` for the standalone config: as root, the workers run as root too so they can
 * read a private temp dir (tests and benchmarks only); otherwise none (nginx would ignore it).
 */
export function testWorkerUser(): string | undefined {
  return process.getuid?.() === 0 ? userInfo().username : undefined;
}

export interface RunningNginx {
  prefixDir: string;
  process: ChildProcess;
  /** Stops nginx (SIGTERM to the master, SIGKILL after 3 s) and waits for it to exit. */
  stop(): Promise<void>;
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function readOr(path: string, fallback: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return fallback;
  }
}

/**
 * Writes `confText` to {prefixDir}/nginx.conf and runs nginx in the foreground
 * (`daemon off`) until `port` accepts connections. Throws with nginx's error log when it
 * does not start.
 */
export async function startNginx(
  prefixDir: string,
  confText: string,
  port: number,
  options: { asUser?: { uid: number; gid: number } } = {},
): Promise<RunningNginx> {
  const confPath = join(prefixDir, 'nginx.conf');
  const errorLog = join(prefixDir, 'error.log');
  await writeFile(confPath, confText);
  const child = spawn(NGINX_BINARY, ['-p', prefixDir, '-c', confPath, '-e', errorLog], {
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(options.asUser === undefined ? {} : { uid: options.asUser.uid, gid: options.asUser.gid }),
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  };
  // A generous deadline: a loaded machine may take seconds to start nginx and its workers.
  const state = await until(async () => (child.exitCode !== null ? 'exited' : (await canConnect(port)) ? 'accepting' : null), {
    message: `nginx accepting connections on port ${port}`,
    timeoutMs: 30_000,
    intervalMs: 50,
  }).catch(() => 'not accepting');
  if (state === 'accepting') return { prefixDir, process: child, stop };
  await stop();
  const log = await readOr(errorLog, '');
  throw new Error(`nginx did not start: ${stderr.trim()} ${log.trim()}`);
}


const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'server', 'cli.js');

/**
 * Renders the standalone config as an admin does, with the built CLI from a config file:
 * `imageproxy nginx-config --config FILE --standalone-conf --out PREFIX` (with `--user`
 * when the tests run as root), `env` added to this process's environment (nginx's S3 keys).
 * Returns the written nginx.conf; the secrets module is written beside it.
 */
export async function renderStandaloneWithCli(configPath: string, prefixDir: string, env: Record<string, string> = {}): Promise<string> {
  const args = [CLI, 'nginx-config', '--config', configPath, '--standalone-conf', '--out', prefixDir];
  const user = testWorkerUser();
  if (user !== undefined) args.push('--user', user);
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nginx-config exited ${code}: ${stderr}`))));
  });
  return readFile(join(prefixDir, 'nginx.conf'), 'utf8');
}
