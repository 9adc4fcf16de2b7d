/**
 * The built command as a child process (`npm run build` first): run it to completion, or
 * start it and talk to it (signals, output as it comes). The environment is cleaned of
 * any IMAGEPROXY_* the developer may have set; tests add their own.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../dist/server/cli.js', import.meta.url));
/** A kill deadline, not a wait: generous, as a loaded machine may take seconds to start node. */
const DEFAULT_TIMEOUT_MS = 60_000;

/** The environment without any IMAGEPROXY_* the developer may have set, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_')));
  return { ...env, ...extra };
}

export interface CliOptions {
  cwd: string;
  env?: Record<string, string>;
  /** Run as this user and group (the test must run as root). */
  uid?: number;
  gid?: number;
  /** Options for node itself, before the script (e.g. `--import` of a probe). */
  nodeArgs?: string[];
}

export interface CliRun {
  code: number | null;
  /** The signal that ended the process, when one did (code is then null). */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function startCli(args: string[], options: CliOptions): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [...(options.nodeArgs ?? []), CLI, ...args], {
    cwd: options.cwd,
    env: cleanEnv(options.env),
    ...(options.uid === undefined ? {} : { uid: options.uid }),
    ...(options.gid === undefined ? {} : { gid: options.gid }),
  });
}

/** Waits for a started command to exit (killed after `timeoutMs`) and collects its output. */
export function finishCli(child: ChildProcessWithoutNullStreams, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Why another user cannot run the built CLI from `cwd` (a checkout below a 0700
 * directory, as `mktemp -d` makes), or null when it can: a test that runs the CLI as
 * that user skips with the reason instead of failing on the module not found.
 */
export function whyUserCannotRunCli(uid: number, gid: number, cwd: string): string | null {
  try {
    execFileSync(process.execPath, [CLI, '--version'], { uid, gid, cwd, stdio: 'ignore' });
    return null;
  } catch {
    return `uid ${uid} cannot run ${process.execPath} ${CLI} here`;
  }
}

export function runCli(args: string[], options: CliOptions & { timeoutMs?: number }): Promise<CliRun> {
  return finishCli(startCli(args, options), options.timeoutMs);
}

/** The non-empty lines of an output. */
export function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

/** What a started `serve` logged when it listened: its addresses and storage. */
export interface ServeListening {
  address: string;
  admin: string;
  storage: string;
}

export interface StartedServe {
  listening: ServeListening;
  child: ChildProcessWithoutNullStreams;
  stderr(): string;
  /** SIGTERM, then its exit code once it has exited. */
  stop(): Promise<number | null>;
}

/**
 * Starts the built `serve` and waits (polling its output, up to `timeoutMs`) for the
 * "listening on" log line; throws with its stderr when it exits first or never says it.
 */
export async function startServeCli(args: string[], options: CliOptions, timeoutMs = 120_000): Promise<StartedServe> {
  const child = startCli(['serve', ...args], options);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const stop = async (): Promise<number | null> => {
    child.kill('SIGTERM');
    return exited;
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = stdout.split('\n').find((text) => text.includes('"listening on'));
    if (line !== undefined) return { listening: JSON.parse(line) as ServeListening, child, stderr: () => stderr, stop };
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`serve exited ${child.exitCode ?? child.signalCode}: ${stderr}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`serve did not listen within ${timeoutMs} ms: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
