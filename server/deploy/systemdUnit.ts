/**
 * The systemd unit of `imageproxy serve`, rendered from the admin's paths: the checkout,
 * the node binary, the config file, the tree, the account and the stop grace. Pure:
 * returns text, writes nothing. `imageproxy systemd-unit` fills it from the config and
 * its flags; contrib/imageproxy.service is its rendering of the Debian layout of docs/deploy.md.
 *
 * The sandbox is as tight as Node, sharp's libvips threads, jimp's worker threads and the
 * single-flight lock (an abstract Unix socket) allow; each directive left out says why.
 */
import { ConfigError } from '../config/config.js';

export interface SystemdUnitInput {
  /** The checkout holding dist/server/cli.js (WorkingDirectory). */
  installDir: string;
  /** The node binary ExecStart runs. */
  nodePath: string;
  /** The config file `serve --config` reads. */
  configPath: string;
  /** The bucket tree: the one path the service may write. */
  root: string;
  /** The account the service runs as, and its group. */
  user: string;
  group: string;
  /** The config's shutdownGraceMs: systemd waits that long and a margin before SIGKILL. */
  shutdownGraceMs: number;
}

/** The layout of docs/deploy.md ("nginx + systemd on Debian"): what contrib/imageproxy.service renders. */
export const DEBIAN_UNIT_INPUT: SystemdUnitInput = {
  installDir: '/opt/imageproxy',
  nodePath: '/usr/bin/node',
  configPath: '/etc/imageproxy/config.json',
  root: '/srv/imageproxy',
  user: 'imageproxy',
  group: 'imageproxy',
  shutdownGraceMs: 10_000,
};

/** Time after the grace period for the 503s to be written and the process to exit. */
const STOP_MARGIN_SECONDS = 5;

// Absolute paths that need no quoting or escaping in a unit file: no space, quote,
// backslash, `%` (a specifier) or `$` (a variable in ExecStart), no `..` segment.
const UNIT_PATH_PATTERN = /^\/[A-Za-z0-9._/+@,:~=-]*$/;
const ACCOUNT_PATTERN = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
/** What ProtectHome= hides: a path below one of them needs it read-only instead. */
const HOME_DIRECTORIES = ['/home', '/root', '/run/user'];

/** The environment file beside the config file: where the bucket's credentials go. */
function environmentFileOf(configPath: string): string {
  return `${configPath.slice(0, configPath.lastIndexOf('/'))}/environment`;
}

function checkPath(key: string, value: string): string {
  if (!UNIT_PATH_PATTERN.test(value) || value.split('/').includes('..')) {
    throw new ConfigError(key, `must be an absolute path of letters, digits and ._/+@,:~=- (no space, no ..), got ${JSON.stringify(value)}`);
  }
  return value.length > 1 && value.endsWith('/') ? value.slice(0, -1) : value;
}

function checkAccount(key: string, value: string): string {
  if (!ACCOUNT_PATTERN.test(value)) throw new ConfigError(key, `must be a user or group name, got ${JSON.stringify(value)}`);
  return value;
}

function isBelowHome(path: string): boolean {
  return HOME_DIRECTORIES.some((home) => path === home || path.startsWith(`${home}/`));
}

/** The unit file's text; throws ConfigError naming the input that cannot be written into it. */
export function renderSystemdUnit(input: SystemdUnitInput): string {
  const installDir = checkPath('installDir', input.installDir);
  const nodePath = checkPath('nodePath', input.nodePath);
  const configPath = checkPath('configPath', input.configPath);
  const root = checkPath('root', input.root);
  const user = checkAccount('user', input.user);
  const group = checkAccount('group', input.group);
  if (!Number.isInteger(input.shutdownGraceMs) || input.shutdownGraceMs < 0) {
    throw new ConfigError('shutdownGraceMs', `must be an integer from 0, got ${JSON.stringify(input.shutdownGraceMs)}`);
  }
  const stopSeconds = Math.ceil(input.shutdownGraceMs / 1000) + STOP_MARGIN_SECONDS;
  const homeUsed = [installDir, nodePath, configPath, root].some(isBelowHome);
  return [
    '# systemd unit for the imageproxy app (the part behind nginx that handles misses).',
    '# Rendered by `imageproxy systemd-unit` (server/deploy/systemdUnit.ts) for the checkout',
    `# ${installDir}, the config ${configPath} and the tree ${root}:`,
    '# render it again after moving any of them. Install: docs/deploy.md, "nginx + systemd on Debian".',
    '[Unit]',
    'Description=imageproxy: signed image cache and proxy (app behind nginx)',
    `Documentation=file://${installDir}/docs/deploy.md`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `User=${user}`,
    `Group=${group}`,
    `WorkingDirectory=${installDir}`,
    `ExecStart=${nodePath} ${installDir}/dist/server/cli.js serve --config ${configPath}`,
    'Environment=NODE_ENV=production',
    '# With storage.type "s3": AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (never in the',
    '# config), one VAR=value per line, mode 0600; optional (the leading -).',
    `EnvironmentFile=-${environmentFileOf(configPath)}`,
    'Restart=on-failure',
    'RestartSec=2s',
    '# SIGHUP (systemctl reload imageproxy) re-reads the config and secrets without a restart.',
    'ExecReload=/bin/kill -HUP $MAINPID',
    '# On stop the app lets requests in flight finish for shutdownGraceMs, answers the rest',
    '# 503 shutting_down and exits: systemd waits that long and a margin before SIGKILL.',
    `TimeoutStopSec=${stopSeconds}s`,
    '# Stored files 0644, directories 0755: nginx (another user) reads them.',
    'UMask=0022',
    '# A miss waiting in a queue holds two descriptors: its socket and its single-flight lock.',
    'LimitNOFILE=65536',
    '',
    '# Hardening: the app needs the network, its tree and nothing else.',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    `ReadWritePaths=${root}`,
    ...(homeUsed
      ? ['# A path of this unit lies below a home directory: homes are read-only, not hidden.', 'ProtectHome=read-only']
      : ['ProtectHome=yes']),
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'DevicePolicy=closed',
    'PrivateMounts=yes',
    '# The tree and the secret file belong to this user and group, which stay mapped.',
    'PrivateUsers=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    '# Only /proc/self and the like: libvips counts CPUs with sched_getaffinity, not /proc.',
    'ProtectProc=invisible',
    'ProcSubset=pid',
    'RemoveIPC=yes',
    '# AF_INET/AF_INET6: origins and the listeners; AF_UNIX: the single-flight lock (an',
    '# abstract socket) and the cluster workers. Not PrivateNetwork= nor IPAddressDeny=:',
    '# origins are anywhere on the internet (server/fetch/netPolicy.ts refuses private addresses).',
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
    'RestrictNamespaces=yes',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'SystemCallArchitectures=native',
    "# What a service uses, and pkey_* (V8 asks for memory protection keys for its code).",
    'SystemCallFilter=@system-service pkey_alloc pkey_free pkey_mprotect',
    'SystemCallFilter=~@privileged @resources',
    '# A refused call fails with EPERM instead of killing the service.',
    'SystemCallErrorNumber=EPERM',
    'CapabilityBoundingSet=',
    'AmbientCapabilities=',
    "# Not MemoryDenyWriteExecute=: V8's JIT writes the machine code it then runs.",
    '# Not RootDirectory=: node, the checkout and its node_modules (libvips) come from the host.',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}
