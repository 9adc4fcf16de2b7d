/**
 * Child processes for the bench scripts: any server that says where it listens, and
 * `imageproxy serve` on free loopback ports (public and admin) with a count of its error
 * log lines, its environment cleaned of the developer's IMAGEPROXY_* (`env` adds the
 * bench's own). Also the signed link of a cold miss and a timed GET.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { request as httpRequest, type Agent } from 'node:http';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import { signLink } from '../server/contract/signing.js';

export interface ServeChild {
  child: ChildProcessWithoutNullStreams;
  url: string;
  adminUrl: string;
  errorLines: () => number;
  stop: () => Promise<void>;
}

/** A child process, resolved once a line of its output matches `ready` (with the match). */
export function startChild(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
  onLine: (line: string) => void = () => undefined,
): Promise<{ child: ChildProcessWithoutNullStreams; match: RegExpExecArray }> {
  const child = spawn(process.execPath, args, { env });
  let pending = '';
  return new Promise((done, fail) => {
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        onLine(line);
        const match = ready.exec(line);
        if (match !== null) done({ child, match });
      }
    });
    child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    child.once('exit', (code) => fail(new Error(`${args.join(' ')} exited ${code}`)));
  });
}

/** Stops a child with SIGTERM and waits for its exit (at once if it is gone). */
export async function stopChild(child: ChildProcessWithoutNullStreams): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((done) => child.once('exit', done));
  child.kill('SIGTERM');
  await exited;
}

/** The environment without the developer's IMAGEPROXY_*. */
export function benchEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_'))), ...extra };
}

export async function startServeChild(cli: string, args: readonly string[], env: Record<string, string> = {}): Promise<ServeChild> {
  let errors = 0;
  const { child, match } = await startChild(
    [cli, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...args],
    benchEnv({ IMAGEPROXY_STATS_REFRESH_SECONDS: '0', ...env }),
    /listening on (http:\/\/[0-9.:]+), admin \(metrics, readiness\) on (http:\/\/[0-9.:]+)/,
    (line) => {
      if (line.includes('"level":50')) errors += 1;
    },
  );
  return { child, url: match[1] as string, adminUrl: match[2] as string, errorLines: () => errors, stop: () => stopChild(child) };
}

/** The path of a link in bucket `i` to `imageUrl` at `size` (`full`, `250x250`), signed at `atMs`. */
export function coldMissPath(secret: string, imageUrl: string, size: string, atMs: number): string {
  const extUrl = encodeImageUrl(imageUrl);
  const signature = signLink(secret, { bucket: 'i', extUrl, proxy: false }, atMs);
  return formatLink({ bucket: 'i', size, signature, extUrl, proxy: false });
}

/** What timedGet saw of an answer. */
export interface TimedAnswer {
  /** -1: no answer. */
  status: number;
  /** X-Imageproxy-Error, or empty. */
  code: string;
  contentType: string;
  /** Body bytes read. */
  bytes: number;
  ms: number;
}

/** A GET read to its end: status, the X-Imageproxy-Error code, type, body size and the time taken. */
export function timedGet(
  baseUrl: string,
  path: string,
  agent: Agent,
  headers: Record<string, string> = {},
): Promise<TimedAnswer> {
  const started = performance.now();
  return new Promise((done) => {
    const { hostname, port } = new URL(baseUrl);
    const outgoing = httpRequest({ hostname, port, path, agent, headers }, (incoming) => {
      let bytes = 0;
      incoming.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      incoming.on('end', () =>
        done({
          status: incoming.statusCode ?? 0,
          code: String(incoming.headers['x-imageproxy-error'] ?? ''),
          contentType: String(incoming.headers['content-type'] ?? ''),
          bytes,
          ms: performance.now() - started,
        }),
      );
      incoming.on('error', () => done({ status: -1, code: 'reset', contentType: '', bytes, ms: performance.now() - started }));
    });
    outgoing.on('error', (error: NodeJS.ErrnoException) => done({ status: -1, code: error.code ?? 'error', contentType: '', bytes: 0, ms: performance.now() - started }));
    outgoing.end();
  });
}
