/**
 * What `sign`, `verify` and `decode` share: the config as their flags make it (the
 * calendar-year option included), the secrets, the link policy of server/contract/linkTools.ts,
 * and for `verify` and `decode` the verdict line and its exit code.
 */
import type { Command } from 'commander';
import type { Config } from '../config/config.js';
import { linkPathOf } from '../contract/link.js';
import { describeVerdict, judgeLink, type LinkPolicy, type LinkVerdict } from '../contract/linkTools.js';
import { resolveSecrets } from '../config/secrets.js';
import { EXIT_FAILURES, EXIT_OK, configFlagLayer, loadConfig, parseInstant, withCommon, withConfigFlags, type CommonOptions } from './common.js';

export type LinkCommandOptions = CommonOptions & {
  at?: string;
  calendarYearWeeks?: boolean;
};

/** The config keys the link commands mirror as flags. */
const LINK_CONFIG_FLAGS = ['calendarYearWeeks'] as const;

export function withLinkOptions(command: Command): Command {
  return withConfigFlags(command.option('--at <when>', 'as of this instant (ISO date or epoch seconds; default now)'), LINK_CONFIG_FLAGS);
}

export function loadLinkConfig(options: LinkCommandOptions): Config {
  // Links need the secrets and the buckets, never the images: any storage will do.
  return loadConfig(options, configFlagLayer(options, LINK_CONFIG_FLAGS), 'any');
}

export function policyOf(config: Config): LinkPolicy {
  return {
    buckets: config.buckets,
    sizes: config.sizes,
    skewSeconds: config.skewSeconds,
    calendarYearWeeks: config.calendarYearWeeks,
  };
}

/** The configured secrets, never generating one: a CLI that signs must use the site's. */
export function configuredSecrets(config: Config): string[] {
  return resolveSecrets(config, false).secrets;
}

/** The verdict on a pasted link (path or URL) at `--at` (default now), with the config it was judged under. */
export function judgeLinkNow(text: string, options: LinkCommandOptions): { config: Config; verdict: LinkVerdict } {
  const config = loadLinkConfig(options);
  const verdict = judgeLink(linkPathOf(text), { policy: policyOf(config), secrets: configuredSecrets(config), nowMs: parseInstant(options.at) });
  return { config, verdict };
}

/** Prints the verdict line `verify` prints; the exit code: 0 only when the link is valid. */
export function printVerdict(verdict: LinkVerdict): number {
  process.stdout.write(`${describeVerdict(verdict)}\n`);
  return verdict.kind === 'valid' ? EXIT_OK : EXIT_FAILURES;
}

/** Registers `<name> <link>` (verify, decode) with the common and link options; `run` gives the exit code. */
export function registerLinkCommand(
  program: Command,
  name: string,
  description: string,
  run: (link: string, options: LinkCommandOptions) => number | Promise<number>,
): void {
  withLinkOptions(withCommon(program.command(`${name} <link>`).description(description))).action(async (link: string, options: LinkCommandOptions) => {
    process.exitCode = await run(link, options);
  });
}
