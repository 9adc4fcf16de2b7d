/**
 * What `sign`, `verify` and `decode` share: the config as their flags make it (the
 * calendar-year option included), the secrets, and the link policy of server/contract/linkTools.ts.
 */
import type { Command } from 'commander';
import type { Config } from '../config/config.js';
import { linkPathOf } from '../contract/link.js';
import { judgeLink, type LinkPolicy, type LinkVerdict } from '../contract/linkTools.js';
import { resolveSecrets } from '../config/secrets.js';
import { configFlagLayer, loadConfig, parseInstant, withConfigFlags, type CommonOptions } from './common.js';

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
  return loadConfig(options, configFlagLayer(options, LINK_CONFIG_FLAGS));
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
