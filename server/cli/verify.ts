/**
 * `imageproxy verify <link>`: whether the app would accept a link now, in one line:
 * valid (which secret, week and rule), expired (a secret signed it in an older week:
 * which), wrong (no secret signed it in the past year) or invalid (refused before or
 * after the signature, with the app's error code). Exit 0 valid, 1 anything else.
 */
import type { Command } from 'commander';
import { judgeLinkNow, printVerdict, registerLinkCommand } from './linkOptions.js';

export function register(program: Command): void {
  registerLinkCommand(
    program,
    'verify',
    'say whether a link verifies: valid, expired (and when it was signed), wrong (forged or unknown secret) or invalid; exit 0 only when valid',
    (link, options) => printVerdict(judgeLinkNow(link, options).verdict),
  );
}
