/**
 * A throwaway Ceph RADOS Gateway (a real S3 server) for tests and benchmarks: one monitor,
 * one OSD on the in-memory object store and one gateway, on 127.0.0.1 with ports of their
 * own, everything (config, keyring, sockets, logs, data) under one temp dir; a user with
 * static keys and a bucket. No systemd, mounts or privileges; nothing listens beyond
 * loopback and nothing is looked up beyond it. Stopped by pid (SIGKILL), its dir removed.
 * Facts behind the configuration: ../shared/reference/ceph-rgw.md (the install, the
 * start sequence, the monitor commit interval, tcp_nodelay, log paths).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { S3StoreSettings } from '../server/storage/s3Store.js';
import { commandWorks, freePort } from './nginxHarness.js';
import { makeTempRoot, removeTempRoot, until } from './helpers.js';

const execFileAsync = promisify(execFile);

export const CEPH_INSTALL_HINT = 'apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common';
const CEPH_PROGRAMS = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'];

/** The Ceph programs the harness runs, or why not (the message names the packages). */
export function cephMissing(): string | null {
  for (const program of CEPH_PROGRAMS) {
    if (!commandWorks(program, ['--version'])) return `${program} not found: ${CEPH_INSTALL_HINT}`;
  }
  return null;
}

/** Settings of an object store on the gateway's bucket, with its static keys (nothing looked up beyond loopback). */
export function gatewayStoreSettings(gateway: RunningGateway, prefix: string): S3StoreSettings {
  return {
    endpoint: gateway.endpoint,
    bucket: gateway.bucket,
    region: gateway.region,
    prefix,
    forcePathStyle: true,
    credentials: gateway.credentials,
  };
}

/**
 * The environment of a built command on the gateway: its keys through the AWS SDK's chain
 * (as an operator's command finds them), no shared credentials or config file (names under
 * `work` that do not exist), no instance metadata: nothing looked up beyond loopback.
 */
export function gatewayCliEnv(gateway: RunningGateway, work: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: gateway.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: gateway.credentials.secretAccessKey,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-credentials'),
    AWS_CONFIG_FILE: join(work, 'no-config'),
    ...overrides,
  };
}

/** Stops the gateway alone, runs `work` (what happens without it), and starts it again whatever `work` did. */
export async function withGatewayStopped<T>(gateway: RunningGateway, work: () => Promise<T>): Promise<T> {
  await gateway.stopGateway();
  try {
    return await work();
  } finally {
    await gateway.startGateway();
  }
}

/** Generous: a loaded 2-core machine may take many times the ~2 s of an idle one. */
const START_DEADLINE_MS = 120_000;

export interface RunningGateway {
  /** `http://127.0.0.1:{port}` */
  endpoint: string;
  port: number;
  region: string;
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  directory: string;
  /** Kills the gateway alone (a crash: monitor and OSD keep the data) and waits for it to exit. */
  stopGateway(): Promise<void>;
  /** Starts the gateway again on the same port and waits until it answers. */
  startGateway(): Promise<void>;
  /** SIGSTOP / SIGCONT: the gateway keeps its port but answers nothing (a hung server). */
  pauseGateway(): void;
  resumeGateway(): void;
  /** Stops everything and removes the dir. */
  stop(): Promise<void>;
}

interface Daemon {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
  stderrTail(): string;
}

/** Daemons of this process, killed if the process exits without stopping them (a crashed test). */
const liveDaemons = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveDaemons) child.kill('SIGKILL');
});

/** A cephx secret as Ceph encodes it: type AES (1), creation time, length 16, 16 random bytes; base64. */
function cephSecret(): string {
  const encoded = Buffer.alloc(28);
  encoded.writeUInt16LE(1, 0);
  encoded.writeUInt32LE(Math.floor(Date.now() / 1000), 2);
  encoded.writeUInt32LE(0, 6);
  encoded.writeUInt16LE(16, 10);
  randomBytes(16).copy(encoded, 12);
  return encoded.toString('base64');
}

const KEYRING_ENTITIES: Array<[string, Record<string, string>]> = [
  ['mon.', { mon: 'allow *' }],
  ['client.admin', { mon: 'allow *', osd: 'allow *', mgr: 'allow *', mds: 'allow *' }],
  ['osd.0', { mon: 'allow profile osd', osd: 'allow *', mgr: 'allow profile osd' }],
  ['client.rgw.a', { mon: 'allow rw', osd: 'allow rwx', mgr: 'allow rw' }],
];

function keyringText(): string {
  return KEYRING_ENTITIES.map(
    ([entity, caps]) =>
      `[${entity}]\n\tkey = ${cephSecret()}\n${Object.entries(caps)
        .map(([service, cap]) => `\tcaps ${service} = "${cap}"\n`)
        .join('')}`,
  ).join('');
}

function cephConf(dir: string, fsid: string, monPort: number, gatewayPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
mon initial members = a
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = ${dir}/keyring
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
crash dir = ${dir}/log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon max pg per osd = 1000
mon osd full ratio = .99
mon osd nearfull ratio = .99
mon osd backfillfull ratio = .99
osd failsafe full ratio = .99
mon warn on pool no redundancy = false
[mon]
mon data = ${dir}/mon.$id
mon allow pool delete = true
mon cluster log file = ${dir}/log/$cluster.$channel.log
auth allow insecure global id reclaim = false
paxos propose interval = 0.05
mon data avail warn = 1
mon data avail crit = 0
[osd]
osd data = ${dir}/osd.$id
osd objectstore = memstore
memstore device bytes = 1G
[client.rgw.a]
rgw data = ${dir}/rgw.a
rgw frontends = beast endpoint=127.0.0.1:${gatewayPort} tcp_nodelay=1
rgw thread pool size = 32
`;
}

async function tailOf(path: string, chars = 2000): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.slice(-chars);
  } catch {
    return '';
  }
}

/** The gateway's answer to an anonymous `GET /` (200: it serves), or null while it does not accept. */
function gatewayStatus(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const request = httpRequest({ host: '127.0.0.1', port, path: '/', method: 'GET', agent: false, timeout: 2_000 }, (response) => {
      response.resume();
      resolve(response.statusCode ?? null);
    });
    request.once('timeout', () => request.destroy());
    request.once('error', () => resolve(null));
    request.end();
  });
}

/**
 * Starts the cluster and the gateway, creates the user and the bucket. Throws with the
 * daemons' stderr and log tails when a step fails, after stopping what it started.
 */
export async function startGateway(options: { bucket?: string } = {}): Promise<RunningGateway> {
  const dir = await makeTempRoot('imageproxy-rgw-');
  const [monPort, port] = [await freePort(), await freePort()];
  const env = { ...process.env, CEPH_CONF: join(dir, 'ceph.conf') };
  const daemons = new Map<string, Daemon>();
  const region = 'us-east-1';
  const bucket = options.bucket ?? 'imageproxy-test';
  const credentials = { accessKeyId: `AK${randomBytes(9).toString('hex').toUpperCase()}`, secretAccessKey: randomBytes(30).toString('base64url') };

  const run = async (program: string, args: string[]): Promise<string> => {
    try {
      const { stdout } = await execFileAsync(program, args, { env, timeout: START_DEADLINE_MS, maxBuffer: 4 * 1024 * 1024 });
      return stdout;
    } catch (error) {
      const stderr = typeof error === 'object' && error !== null && 'stderr' in error ? String(error.stderr) : '';
      throw new Error(`${program} ${args.join(' ')} failed: ${stderr.slice(-2000)}`, { cause: error });
    }
  };

  const launch = (name: string, program: string, args: string[]): Daemon => {
    const child = spawn(program, [...args, '-f'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    liveDaemons.add(child);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        liveDaemons.delete(child);
        resolve();
      });
      child.once('error', () => resolve());
    });
    const daemon = { name, child, exited, stderrTail: () => stderr };
    daemons.set(name, daemon);
    return daemon;
  };

  const isRunning = (daemon: Daemon | undefined): boolean => daemon !== undefined && daemon.child.exitCode === null && daemon.child.signalCode === null;

  // SIGKILL: the cluster is a throwaway whose data lives in RAM, so there is nothing to
  // flush, and a graceful stop costs seconds per daemon.
  const kill = async (daemon: Daemon | undefined): Promise<void> => {
    if (daemon === undefined || !isRunning(daemon)) return;
    daemon.child.kill('SIGKILL');
    await daemon.exited;
  };

  const stopAll = async (): Promise<void> => {
    await Promise.all([...daemons.values()].map(kill));
    await removeTempRoot(dir);
  };

  const describeFailure = async (): Promise<string> => {
    const parts: string[] = [];
    for (const daemon of daemons.values()) {
      const state = isRunning(daemon) ? 'running' : `exited ${daemon.child.exitCode ?? daemon.child.signalCode}`;
      parts.push(`${daemon.name} ${state}: ${daemon.stderrTail().trim()}`);
    }
    parts.push(`radosgw log: ${await tailOf(join(dir, 'log', 'client.rgw.a.log'))}`);
    return parts.join('\n');
  };

  const waitForGateway = async (): Promise<void> => {
    const state = await until(
      async () => {
        for (const daemon of daemons.values()) if (!isRunning(daemon)) return `${daemon.name} exited`;
        return (await gatewayStatus(port)) === 200 ? 'serving' : null;
      },
      { message: `radosgw answering on 127.0.0.1:${port}`, timeoutMs: START_DEADLINE_MS, intervalMs: 50 },
    ).catch(() => 'not serving');
    if (state !== 'serving') throw new Error(`radosgw did not start (${state})\n${await describeFailure()}`);
  };

  try {
    await Promise.all(['run', 'log', 'mon.a', 'osd.0', 'rgw.a'].map((name) => mkdir(join(dir, name))));
    const fsid = randomUUID();
    await writeFile(env.CEPH_CONF, cephConf(dir, fsid, monPort, port));
    await writeFile(join(dir, 'keyring'), keyringText(), { mode: 0o600 });
    const osdUuid = randomUUID();
    // The OSD's store is made while the monitor comes up: neither needs the other for it.
    await Promise.all([
      (async () => {
        await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')]);
        await run('ceph-mon', ['-i', 'a', '--mkfs', '--monmap', join(dir, 'monmap'), '--keyring', join(dir, 'keyring')]);
        launch('ceph-mon', 'ceph-mon', ['-i', 'a']);
        await run('ceph', ['--connect-timeout', String(START_DEADLINE_MS / 1000), 'osd', 'new', osdUuid, '0']);
      })(),
      run('ceph-osd', ['-i', '0', '--mkfs', '--osd-uuid', osdUuid]),
    ]);
    launch('ceph-osd', 'ceph-osd', ['-i', '0']);
    launch('radosgw', 'radosgw', ['-n', 'client.rgw.a']);
    await waitForGateway();
    await run('radosgw-admin', [
      '-n',
      'client.admin',
      'user',
      'create',
      '--uid=imageproxy-test',
      '--display-name=imageproxy test',
      `--access-key=${credentials.accessKeyId}`,
      `--secret-key=${credentials.secretAccessKey}`,
    ]);
    const endpoint = `http://127.0.0.1:${port}`;
    const client = new S3Client({ endpoint, region, forcePathStyle: true, credentials, maxAttempts: 5 });
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
    } finally {
      client.destroy();
    }
    return {
      endpoint,
      port,
      region,
      bucket,
      credentials,
      directory: dir,
      stopGateway: () => kill(daemons.get('radosgw')),
      startGateway: async () => {
        if (isRunning(daemons.get('radosgw'))) return;
        launch('radosgw', 'radosgw', ['-n', 'client.rgw.a']);
        await waitForGateway();
      },
      pauseGateway: () => void daemons.get('radosgw')?.child.kill('SIGSTOP'),
      resumeGateway: () => void daemons.get('radosgw')?.child.kill('SIGCONT'),
      stop: stopAll,
    };
  } catch (error) {
    const failure = error instanceof Error && error.message.includes('did not start') ? error : new Error(`${String(error)}\n${await describeFailure()}`, { cause: error });
    await stopAll();
    throw failure;
  }
}
