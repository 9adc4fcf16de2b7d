/**
 * `imageproxy systemd-unit`: prints the systemd unit of `serve` for this config and this
 * checkout (server/deploy/systemdUnit.ts renders it). Writes nothing: the admin redirects it
 * into /etc/systemd/system/imageproxy.service.
 */
import { basename, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { ConfigError } from '../config/config.js';
import { DEBIAN_UNIT_INPUT, renderSystemdUnit, type SystemdUnitInput } from '../deploy/systemdUnit.js';
import { UsageError, loadConfig, withCommon, type CommonOptions } from './common.js';

interface SystemdUnitOptions extends CommonOptions {
  installDir?: string;
  node?: string;
  user: string;
  group?: string;
}

/** The flag behind each input of the renderer (root and shutdownGraceMs come from the config). */
const FLAG_OF_INPUT: Partial<Record<keyof SystemdUnitInput, string>> = {
  installDir: '--install-dir',
  nodePath: '--node',
  configPath: '--config',
  user: '--user',
  group: '--group',
};

/** The checkout this command runs from: above dist/ when built, above server/ under tsx. */
function thisCheckout(): string {
  const serverDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const above = resolve(serverDir, '..');
  return basename(above) === 'dist' ? resolve(above, '..') : above;
}

function systemdUnit(options: SystemdUnitOptions): void {
  if (options.config === undefined) throw new UsageError('--config FILE is needed: the unit runs `serve --config FILE` and the tree it names is the one path it may write');
  const config = loadConfig(options);
  const installDir = resolve(options.installDir ?? thisCheckout());
  let unit: string;
  try {
    unit = renderSystemdUnit({
      installDir,
      nodePath: resolve(options.node ?? process.execPath),
      configPath: resolve(options.config),
      // serve resolves a relative root against its working directory, the checkout.
      root: resolve(installDir, config.root),
      user: options.user,
      group: options.group ?? options.user,
      shutdownGraceMs: config.shutdownGraceMs,
    });
  } catch (error) {
    const flag = error instanceof ConfigError ? FLAG_OF_INPUT[error.key as keyof SystemdUnitInput] : undefined;
    if (flag === undefined) throw error;
    throw new UsageError(`${flag}: ${(error as ConfigError).message.slice(`config ${(error as ConfigError).key}: `.length)}`);
  }
  process.stdout.write(unit);
}

export function register(program: Command): void {
  withCommon(
    program
      .command('systemd-unit')
      .description("print the systemd unit of `serve` for this config and checkout (its tree the only writable path)"),
  )
    .option('--install-dir <dir>', 'the checkout the service runs (default: the one running this command)')
    .option('--node <path>', 'the node binary (default: the one running this command)')
    .option('--user <name>', 'the account the service runs as', DEBIAN_UNIT_INPUT.user)
    .option('--group <name>', 'its group (default: the same name as --user)')
    .action(systemdUnit);
}
