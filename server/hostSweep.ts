/**
 * Removes what the tree holds from origin hosts that were just blocked: nginx serves
 * stored files without asking the app, so blocking a host's links is only whole once its
 * stored images are gone. Each original's sidecar names its source URL; the walk is
 * streaming (server/treeWalk.ts), reading one small sidecar at a time.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { normaliseHost } from './blocklist.js';
import { classifyTreeFile } from './layout.js';
import { parseSidecarFields } from './originals.js';
import type { ImageStore } from './store.js';
import { walkShardFiles } from './treeWalk.js';

/** The normalised host of a sidecar's source URL, or null when the sidecar says none. */
export function sourceHostOf(sidecarText: string): string | null {
  const sourceUrl = parseSidecarFields(sidecarText)?.sourceUrl ?? null;
  return sourceUrl !== null && URL.canParse(sourceUrl) ? normaliseHost(new URL(sourceUrl).hostname) : null;
}

export interface HostSweepResult {
  /** Files removed per blocked host, relative paths counted. */
  removedByHost: Map<string, number>;
  sidecarsRead: number;
  interrupted: boolean;
}

/** Walks `buckets` and purges every key whose sidecar names one of `hosts`. */
export async function removeStoredFromHosts(
  store: ImageStore,
  buckets: readonly string[],
  hosts: ReadonlySet<string>,
  options: { signal: AbortSignal; onSidecar?: () => void },
): Promise<HostSweepResult> {
  const removedByHost = new Map<string, number>();
  let sidecarsRead = 0;
  for (const bucket of buckets) {
    for await (const file of walkShardFiles(join(store.root, bucket))) {
      if (options.signal.aborted) return { removedByHost, sidecarsRead, interrupted: true };
      if (classifyTreeFile(file.name) !== 'sidecar') continue;
      const text = await readFile(join(file.directory, file.name), 'utf8').catch(() => null);
      sidecarsRead += 1;
      options.onSidecar?.();
      const host = text === null ? null : sourceHostOf(text);
      if (host === null || !hosts.has(host)) continue;
      const removed = await store.purge(bucket, file.name.slice(0, -'.json'.length));
      removedByHost.set(host, (removedByHost.get(host) ?? 0) + removed.length);
    }
  }
  return { removedByHost, sidecarsRead, interrupted: false };
}
