/**
 * Removes stored images a takedown names by what their sidecars say: nginx serves stored
 * files without asking the app, so a block is only whole once they are gone. Each
 * original's sidecar names its source URL and the sha256 of the stored bytes; the walk
 * is streaming (server/tree/walk.ts), reading one small sidecar at a time.
 *
 * Two uses: `block --host` (every image fetched from the host) and `purge --block
 * --copies` (the same bytes stored under other URLs before the block).
 */
import { join, relative } from 'node:path';
import { normaliseHost } from './blocklist.js';
import { classifyTreeFile } from '../contract/layout.js';
import { parseSidecarFields } from '../tree/originals.js';
import { readRegularText } from '../tree/regularFile.js';
import type { ImageStore } from '../tree/store.js';
import { walkShardFiles } from '../tree/walk.js';

/** The normalised host of a sidecar's source URL, or null when the sidecar says none. */
function sourceHostOf(sidecarText: string): string | null {
  const sourceUrl = parseSidecarFields(sidecarText)?.sourceUrl ?? null;
  return sourceUrl !== null && URL.canParse(sourceUrl) ? normaliseHost(new URL(sourceUrl).hostname) : null;
}

/** What a sidecar is matched on: the value it matched (a host, a digest), or null. */
export type SidecarMatch = (sidecarText: string) => string | null;

/** Sidecars whose source URL's host is one of `hosts` (normalised). */
export function matchingHosts(hosts: ReadonlySet<string>): SidecarMatch {
  return (text) => {
    const host = sourceHostOf(text);
    return host !== null && hosts.has(host) ? host : null;
  };
}

/** Sidecars whose stored bytes' sha256 is one of `digests` (lower-case hex). */
export function matchingDigests(digests: ReadonlySet<string>): SidecarMatch {
  return (text) => {
    const digest = parseSidecarFields(text)?.sha256 ?? null;
    return digest !== null && digests.has(digest) ? digest : null;
  };
}

export interface SweepResult {
  /** Files removed per matched value, as paths relative to the root, in walk order. */
  removedBy: Map<string, string[]>;
  sidecarsRead: number;
  interrupted: boolean;
}

/**
 * Walks `buckets` and purges every key whose sidecar `match` names, except `skipKeys`
 * (already handled by the caller).
 */
export async function removeStoredMatching(
  store: ImageStore,
  buckets: readonly string[],
  match: SidecarMatch,
  options: { signal: AbortSignal; skipKeys?: ReadonlySet<string> },
): Promise<SweepResult> {
  const removedBy = new Map<string, string[]>();
  let sidecarsRead = 0;
  for (const bucket of buckets) {
    for await (const file of walkShardFiles(join(store.root, bucket))) {
      if (options.signal.aborted) return { removedBy, sidecarsRead, interrupted: true };
      if (classifyTreeFile(file.name) !== 'sidecar') continue;
      const key = file.name.slice(0, -'.json'.length);
      if (options.skipKeys?.has(key) === true) continue;
      // Gone, over the cap, or replaced by something that is no regular file since the listing: nothing to match.
      const text = await readRegularText(join(file.directory, file.name)).catch(() => null);
      sidecarsRead += 1;
      const matched = text === null ? null : match(text);
      if (matched === null) continue;
      const removed = (await store.purge(bucket, key)).map((path) => relative(store.root, path));
      removedBy.set(matched, [...(removedBy.get(matched) ?? []), ...removed]);
    }
  }
  return { removedBy, sidecarsRead, interrupted: false };
}
