/**
 * What `purge`, `unblock` take as targets: a link (a path or a pasted URL, any signature,
 * even expired: admins act on old links) or an image URL, given as arguments or one per
 * line of a file (`--from-file`, `#` comments and blank lines skipped); and the little
 * the three takedown commands share (audit identity, the wait for running servers).
 */
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { commandLineOf, redactArgv } from '../takedown/audit.js';
import type { Config } from '../config/config.js';
import { isImageproxyError } from '../errors.js';
import { storageKey } from '../contract/layout.js';
import { decodeImageUrl, imageUrlBytes, linkPathOf, linkRulesOf, parseLink } from '../contract/link.js';
import { bucketTakedownStore, treeTakedownStore, type TakedownStore } from '../takedown/takedownStore.js';
import { UsageError } from './common.js';
import { withBucket } from './storageTarget.js';

export interface TakedownTarget {
  /** As the operator wrote it. */
  text: string;
  key: string;
  /** The image URL, decoded. */
  imageUrl: string;
  /** The link's bucket; null for an image URL (every bucket). */
  bucket: string | null;
}

/** A line of a --from-file list; `problem` set when the line is neither a link nor an image URL. */
export interface TargetLine {
  line: number;
  text: string;
  target: TakedownTarget | null;
  problem: string | null;
}

function asLink(text: string, config: Config): TakedownTarget | null {
  const segments = linkPathOf(text).split('/');
  // The size does not matter here: every size of the image goes.
  if (segments.length > 2) segments[2] = 'full';
  try {
    const link = parseLink(segments.join('/'), linkRulesOf(config));
    return { text, key: storageKey(imageUrlBytes(link.extUrl)), imageUrl: decodeImageUrl(link.extUrl).href, bucket: link.bucket };
  } catch (error) {
    if (isImageproxyError(error)) return null;
    throw error;
  }
}

/** Reads a link or an image URL; throws UsageError saying why neither. */
export function resolveTarget(text: string, config: Config): TakedownTarget {
  const trimmed = text.trim();
  const link = trimmed.startsWith('/') || /^https?:\/\//i.test(trimmed) ? asLink(trimmed, config) : null;
  if (link !== null) return link;
  return resolveImageUrl(trimmed);
}

/** An image URL as given (its bytes make the key, exactly as a link to it would). */
export function resolveImageUrl(text: string): TakedownTarget {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${text}: neither a link (/{bucket}/{size}/{signature}/{ext_url}) nor an http(s) image URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${text}: the image URL must be http or https`);
  return { text, key: storageKey(Buffer.from(text, 'utf8')), imageUrl: text, bucket: null };
}

/** The lines of a target list; unreadable lines are reported, not fatal. */
export async function readTargetFile(path: string, config: Config): Promise<TargetLine[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`--from-file: cannot read ${path}: ${(error as Error).message}`);
  }
  const lines: TargetLine[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    try {
      lines.push({ line: index + 1, text: line, target: resolveTarget(line, config), problem: null });
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      lines.push({ line: index + 1, text: line, target: null, problem: error.message });
    }
  });
  return lines;
}

/** Who ran the command and how, for the audit log and the blocklist's `by`. */
export interface Actor {
  user: string;
  argv: string[];
  commandLine: string;
}

export function currentActor(): Actor {
  let user = process.env.SUDO_USER ?? '';
  if (user === '') {
    try {
      user = userInfo().username;
    } catch {
      user = `uid ${process.getuid?.() ?? '?'}`;
    }
  }
  const argv = redactArgv(process.argv.slice(2));
  return { user, argv, commandLine: commandLineOf(argv) };
}

/**
 * After a block is written and before its files go: a running server looks at the file
 * again at most one recheck period (server/takedown/blocklistStore.ts) after its last look, so
 * once that period has passed every request it answers sees the block, and none can
 * fetch and store the image again after the removal. The margin covers a look in flight.
 */
const RECHECK_MARGIN_MS = 250;

export function waitForRunningServers(recheckMs: number): Promise<void> {
  return sleep(recheckMs + RECHECK_MARGIN_MS);
}

/**
 * Runs a takedown command's work where the config's storage is: the tree under its root,
 * or the bucket (a gateway failure then ends the command with one line, server/cli/storageTarget.ts).
 */
export function withTakedownStore(label: string, config: Config, work: (store: TakedownStore) => Promise<number>): Promise<number> {
  if (config.storage.type === 'tree') return work(treeTakedownStore(resolve(config.root)));
  return withBucket(label, config, ({ store, where }) => work(bucketTakedownStore(store, where)));
}
