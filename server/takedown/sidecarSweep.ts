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

/** What a stored original says of itself (a tree's sidecar, a bucket object's metadata): null when unknown. */
interface StoredFacts {
  sourceUrl: string | null;
  sha256: string | null;
}

/** What a stored original is matched on: the value it matched (a host, a digest), or null. */
export type StoredMatch = (facts: StoredFacts) => string | null;

/** Originals whose source URL's host is one of `hosts` (normalised). */
export function matchingHosts(hosts: ReadonlySet<string>): StoredMatch {
  return ({ sourceUrl }) => {
    const host = sourceUrl !== null && URL.canParse(sourceUrl) ? normaliseHost(new URL(sourceUrl).hostname) : null;
    return host !== null && hosts.has(host) ? host : null;
  };
}

/** Originals whose stored bytes' sha256 is one of `digests` (lower-case hex). */
export function matchingDigests(digests: ReadonlySet<string>): StoredMatch {
  return ({ sha256 }) => (sha256 !== null && digests.has(sha256) ? sha256 : null);
}

export interface SweepResult {
  /** Files (objects) removed per matched value, as paths relative to the root (object names), in walk order. */
  removedBy: Map<string, string[]>;
  /** Sidecars read (in a bucket: originals' metadata). */
  sidecarsRead: number;
  interrupted: boolean;
}

/** An original found by a sweep: its key, and how to read what it says of itself (null: unreadable or gone). */
export interface SweptOriginal {
  key: string;
  readFacts(): Promise<StoredFacts | null>;
}

/** What a sweep needs of a store: its originals bucket by bucket, and how a key's images go. */
export interface SweepSource {
  originals(bucket: string): AsyncIterable<SweptOriginal>;
  /** Removes the key's images; the names removed (relative to the root, or object names). */
  removeKey(bucket: string, key: string): Promise<string[]>;
}

export interface SweepOptions {
  signal: AbortSignal;
  /** Keys already handled by the caller. */
  skipKeys?: ReadonlySet<string>;
}

/** Goes through the originals of `buckets` and removes every key whose facts `match` names. */
export async function sweepStored(source: SweepSource, buckets: readonly string[], match: StoredMatch, options: SweepOptions): Promise<SweepResult> {
  const removedBy = new Map<string, string[]>();
  let sidecarsRead = 0;
  for (const bucket of buckets) {
    for await (const original of source.originals(bucket)) {
      if (options.signal.aborted) return { removedBy, sidecarsRead, interrupted: true };
      if (options.skipKeys?.has(original.key) === true) continue;
      const facts = await original.readFacts();
      sidecarsRead += 1;
      const matched = facts === null ? null : match(facts);
      if (matched === null) continue;
      const removed = await source.removeKey(bucket, original.key);
      removedBy.set(matched, [...(removedBy.get(matched) ?? []), ...removed]);
    }
  }
  return { removedBy, sidecarsRead, interrupted: false };
}

/** The tree's originals, by their sidecars: a streaming walk, one small sidecar read at a time. */
async function* treeOriginals(store: ImageStore, bucket: string): AsyncIterable<SweptOriginal> {
  for await (const file of walkShardFiles(join(store.root, bucket))) {
    if (classifyTreeFile(file.name) !== 'sidecar') continue;
    yield {
      key: file.name.slice(0, -'.json'.length),
      readFacts: async () => {
        // Gone, over the cap, or replaced by something that is no regular file since the listing: nothing to match.
        const text = await readRegularText(join(file.directory, file.name)).catch(() => null);
        return text === null ? null : parseSidecarFields(text);
      },
    };
  }
}

/** Walks `buckets` of the tree and purges every key whose sidecar `match` names, except `skipKeys`. */
export function removeStoredMatching(store: ImageStore, buckets: readonly string[], match: StoredMatch, options: SweepOptions): Promise<SweepResult> {
  return sweepStored(
    {
      originals: (bucket) => treeOriginals(store, bucket),
      removeKey: async (bucket, key) => (await store.purge(bucket, key)).map((path) => relative(store.root, path)),
    },
    buckets,
    match,
    options,
  );
}
