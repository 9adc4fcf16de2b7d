#!/usr/bin/env node
/**
 * The `imageproxy` command. Wires config, secrets, store and HTTP; holds no logic of
 * its own beyond turning flags into a config layer and results into lines and exit codes.
 */
import { Command, CommanderError } from 'commander';
import { resolve } from 'node:path';
import { ConfigError } from './config/config.js';
import { EXIT_USAGE, UsageError, loadConfig, withCommon, type CommonOptions } from './cli/common.js';
import { ImageStore } from './tree/store.js';
import { packageVersion } from './observe/packageVersion.js';
import { register as registerServe } from './cli/serve.js';
import { register as registerNginxConfig } from './cli/nginxConfig.js';
import { register as registerSystemdUnit } from './cli/systemdUnit.js';
import { register as registerSign } from './cli/sign.js';
import { register as registerVerify } from './cli/verify.js';
import { register as registerDecode } from './cli/decode.js';
import { register as registerImportLegacy } from './cli/importLegacy.js';
import { register as registerPurge } from './cli/purge.js';
import { register as registerBlock } from './cli/block.js';
import { register as registerUnblock } from './cli/unblock.js';
import { register as registerStats } from './cli/stats.js';
import { register as registerPopulate } from './cli/populate.js';
import { register as registerCheck } from './cli/check.js';
import { register as registerMigrateStorage } from './cli/migrateStorage.js';

async function initBuckets(options: CommonOptions): Promise<void> {
  const config = loadConfig(options);
  const buckets = Object.keys(config.buckets);
  const created = await new ImageStore(resolve(config.root)).initBuckets(buckets);
  process.stdout.write(`${resolve(config.root)}: ${buckets.join(', ')}: created ${created} of ${buckets.length * 64 * 64} directories\n`);
}

export function buildProgram(): Command {
  const program = new Command('imageproxy')
    .description('Signed image cache and proxy for Gazelle-based sites')
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride()
    .showSuggestionAfterError()
    // One line per error: commander puts its suggestion on a line of its own. Help (a
    // bare `imageproxy` prints it to stderr and exits 2) keeps its lines.
    .configureOutput({ outputError: (text, write) => write(`${text.trim().replace(/\s*\n\s*/g, ' ')}\n`) });

  registerServe(program);

  registerSign(program);
  registerVerify(program);
  registerDecode(program);

  registerNginxConfig(program);
  registerSystemdUnit(program);

  withCommon(program.command('init-buckets').description('create the 64 × 64 directories of each bucket (idempotent)')).action(
    initBuckets,
  );

  // Operations commands, one file each in server/cli/ (each exports register(program)).
  registerPurge(program);
  registerBlock(program);
  registerUnblock(program);
  registerImportLegacy(program);
  registerStats(program);
  registerPopulate(program);
  registerCheck(program);
  registerMigrateStorage(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not errors; commander already printed its message.
      process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`imageproxy: ${error.message}\n`);
      process.exit(EXIT_USAGE);
    }
    throw error;
  }
}

await main(process.argv);
