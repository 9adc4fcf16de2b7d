/**
 * `imageproxy verify <link>`: whether the app would accept a link now, in one line:
 * valid (which secret, week and rule), expired (a secret signed it in an older week:
 * which), wrong (no secret signed it in the past year) or invalid (refused before or
 * after the signature, with the app's error code). Exit 0 valid, 1 anything else.
 */
import type { Command } from 'commander';
import { describeVerdict } from '../contract/linkTools.js';
import { EXIT_FAILURES, EXIT_OK, withCommon } from './common.js';
import { judgeLinkNow, withLinkOptions, type LinkCommandOptions } from './linkOptions.js';

function verify(link: string, options: LinkCommandOptions): number {
  const { verdict } = judgeLinkNow(link, options);
  process.stdout.write(`${describeVerdict(verdict)}\n`);
  return verdict.kind === 'valid' ? EXIT_OK : EXIT_FAILURES;
}

export function register(program: Command): void {
  withLinkOptions(
    withCommon(
      program
        .command('verify <link>')
        .description('say whether a link verifies: valid, expired (and when it was signed), wrong (forged or unknown secret) or invalid; exit 0 only when valid'),
    ),
  ).action((link: string, options: LinkCommandOptions) => {
    process.exitCode = verify(link, options);
  });
}
