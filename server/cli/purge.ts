/**
 * `imageproxy purge <link-or-url>... [--block]`: removes what is stored for each image
 * (original, thumbnails of every size and every format class, `{key}.{label}.{format}.{ext}`
 * hard links included, sidecar, backoff records: every `{key}.*` file of its directory
 * but the lock of a write in progress). With `--block` it is a takedown that
 * sticks: the key (that image URL, every bucket) and the sha256 of each stored original
 * go into the blocklist first, running servers are given time to load it, then the files
 * go from every bucket, so from then on every link to the image answers 451 `blocked`
 * without contacting the origin, and the same bytes under another URL are refused.
 * `--copies` also removes those bytes where they were stored under other URLs before the
 * block (a walk of the tree reading every sidecar, server/takedown/sidecarSweep.ts).
 * Every purge is appended to the audit log.
 *
 * Exit codes: 0 something was removed or blocked; 1 nothing to do (nothing stored and,
 * with --block, already blocked) or some --from-file lines failed; 2 usage; 130 interrupted.
 */
import type { Command } from 'commander';
import { addEntries, type BlockEntry } from '../takedown/blocklist.js';
import { BLOCKLIST_RECHECK_MS } from '../takedown/blocklistStore.js';
import type { AuditRecord } from '../takedown/audit.js';
import { matchingDigests, type SweepResult } from '../takedown/sidecarSweep.js';
import type { TakedownStore } from '../takedown/takedownStore.js';
import {
  UsageError,
  collect,
  configuredBucket,
  exitCodeOfItems,
  loadConfig,
  withCommon,
  type CommonOptions,
} from './common.js';
import { ProgressReporter, interruptOnSignals } from './progress.js';
import { gatewayFailureOf } from './storageTarget.js';
import {
  currentActor,
  readTargetFile,
  resolveImageUrl,
  resolveTarget,
  waitForRunningServers,
  withTakedownStore,
  type Actor,
  type TakedownTarget,
  type TargetLine,
} from './takedownTargets.js';

const LABEL = 'purge';

interface PurgeOptions extends CommonOptions {
  imageUrl?: string[];
  bucket?: string;
  fromFile?: string;
  block?: boolean;
  copies?: boolean;
  note?: string;
}

/** Every other key whose stored original has one of the blocked digests, removed (a walk of the tree or a listing of the bucket). */
async function removeCopies(store: TakedownStore, buckets: readonly string[], pending: readonly PendingBlock[], signal: AbortSignal): Promise<SweepResult> {
  const digests = new Set(pending.flatMap((item) => item.digests));
  const skipKeys = new Set(pending.map((item) => item.target.key));
  process.stderr.write(`${LABEL}: looking for copies of ${digests.size} digest(s) under other URLs (reading every ${store.sweepReads})\n`);
  const sweep = await store.removeMatching(buckets, matchingDigests(digests), { signal, skipKeys });
  for (const paths of sweep.removedBy.values()) {
    for (const path of paths) process.stdout.write(`removed ${store.shown(path)}\n`);
  }
  return sweep;
}

async function removeStored(store: TakedownStore, buckets: readonly string[], key: string): Promise<string[]> {
  const removed: string[] = [];
  for (const bucket of buckets) {
    for (const name of await store.removeKey(bucket, key)) {
      process.stdout.write(`removed ${store.shown(name)}\n`);
      removed.push(name);
    }
  }
  return removed;
}

interface PendingBlock {
  target: TakedownTarget;
  digests: string[];
  added: number;
}

async function purge(positional: string[], options: PurgeOptions): Promise<number> {
  const config = loadConfig(options, {}, LABEL);
  const block = options.block === true;
  const allBuckets = Object.keys(config.buckets);
  if (block && options.bucket !== undefined) {
    throw new UsageError('--bucket does not go with --block: a blocked image is removed from every bucket');
  }
  if (options.copies === true && !block) throw new UsageError('--copies goes with --block: copies are found by the digests a block records');
  if (options.bucket !== undefined) configuredBucket(config, '--bucket', options.bucket);

  const targets: TakedownTarget[] = [
    ...positional.map((text) => resolveTarget(text, config)),
    ...(options.imageUrl ?? []).map((text) => resolveImageUrl(text)),
  ];
  const fileLines = options.fromFile === undefined ? [] : await readTargetFile(options.fromFile, config);
  if (targets.length === 0 && options.fromFile === undefined) {
    throw new UsageError('give a link or image URL to purge, --image-url URL, or --from-file FILE');
  }
  return withTakedownStore(LABEL, config, (store) => purgeTargets(store, { targets, fileLines, options, allBuckets, maxImageBytes: config.limits.maxBytes }));
}

interface PurgeRun {
  targets: readonly TakedownTarget[];
  fileLines: readonly TargetLine[];
  options: PurgeOptions;
  allBuckets: readonly string[];
  maxImageBytes: number;
}

async function purgeTargets(store: TakedownStore, { targets, fileLines, options, allBuckets, maxImageBytes }: PurgeRun): Promise<number> {
  const block = options.block === true;

  const actor: Actor = currentActor();
  const progress = new ProgressReporter({ label: LABEL, total: targets.length + fileLines.length });
  const interrupt = interruptOnSignals(LABEL);
  const totals = { removed: 0, keys: 0, digests: 0 };
  const pending: PendingBlock[] = [];

  /** One audit line per target, whatever the action. */
  const audit = (action: 'purge' | 'block', target: TakedownTarget, outcome: Pick<AuditRecord, 'digests' | 'removed' | 'changed'>): Promise<void> =>
    store.appendAudit({
      time: new Date().toISOString(),
      action,
      target: target.text,
      key: target.key,
      url: target.imageUrl,
      ...outcome,
      ...(options.note === undefined ? {} : { note: options.note }),
      user: actor.user,
      argv: actor.argv,
    });

  const bucketsOf = (target: TakedownTarget): readonly string[] =>
    block ? allBuckets : target.bucket !== null ? [target.bucket] : options.bucket !== undefined ? [options.bucket] : allBuckets;

  const handle = async (target: TakedownTarget): Promise<void> => {
    const buckets = bucketsOf(target);
    if (!block) {
      const removed = await removeStored(store, buckets, target.key);
      totals.removed += removed.length;
      await audit('purge', target, { removed });
      if (removed.length === 0) process.stdout.write(`nothing stored for key ${target.key} in ${buckets.join(', ')}\n`);
      else process.stdout.write(`purged key ${target.key}\n`);
      progress.tick(removed.length > 0 ? 'ok' : 'skipped');
      return;
    }
    // Block first, remove later: the digests are read from the files before they go. An
    // image blocked before has its digests in the list already (its files are gone):
    // they are taken from the list under its lock, so --copies looks for those too.
    const stored = await store.storedDigests(buckets, target.key, maxImageBytes);
    const at = new Date().toISOString();
    const common = { at, by: actor.commandLine, ...(options.note === undefined ? {} : { note: options.note }) };
    const { added, digests } = await store.updateBlocklist((list) => {
      const recorded = list.entries.filter((entry) => entry.kind === 'digest' && entry.key === target.key).map((entry) => entry.value);
      const digests = [...new Set([...stored, ...recorded])].sort();
      const entries: BlockEntry[] = [
        { kind: 'key', value: target.key, ...common, url: target.imageUrl },
        ...digests.map((digest): BlockEntry => ({ kind: 'digest', value: digest, ...common, key: target.key })),
      ];
      const result = addEntries(list, entries);
      return { list: result.list, result: { added: result.added, digests } };
    });
    totals.keys += added.filter((entry) => entry.kind === 'key').length;
    totals.digests += added.filter((entry) => entry.kind === 'digest').length;
    pending.push({ target, digests, added: added.length });
  };

  try {
    const work: Array<TakedownTarget | { line: number; problem: string }> = [
      ...targets,
      ...fileLines.map((line) => line.target ?? { line: line.line, problem: line.problem ?? 'unreadable' }),
    ];
    for (const item of work) {
      if (interrupt.signal.aborted) break;
      if ('problem' in item) {
        process.stderr.write(`${LABEL}: line ${item.line}: ${item.problem}\n`);
        progress.tick('failed');
        continue;
      }
      try {
        await handle(item);
      } catch (error) {
        // The gateway failing ends the run (one line, server/cli/storageTarget.ts): the next target would fail the same way.
        if (gatewayFailureOf(error) !== null) throw error;
        process.stderr.write(`${LABEL}: ${item.text}: ${(error as Error).message}\n`);
        progress.tick('failed');
      }
    }

    if (pending.length > 0) {
      // Whatever was blocked is also removed, interrupted or not: a blocked image left on
      // disk would still be served by nginx.
      if (pending.some((item) => item.added > 0)) {
        process.stderr.write(`${LABEL}: blocked; waiting for running servers to load the blocklist before removing files\n`);
        await waitForRunningServers(BLOCKLIST_RECHECK_MS);
      }
      const removedOf = new Map<TakedownTarget, string[]>();
      for (const { target } of pending) {
        const removed = await removeStored(store, allBuckets, target.key);
        totals.removed += removed.length;
        removedOf.set(target, removed);
      }
      // Copies: the same bytes stored under other URLs before the block. Their links would
      // answer 451 from the app, but nginx serves a stored file without asking it.
      const copies = options.copies === true ? await removeCopies(store, allBuckets, pending, interrupt.signal) : null;
      for (const { target, digests, added } of pending) {
        const copiesRemoved = digests.flatMap((digest) => copies?.removedBy.get(digest) ?? []);
        const removed = [...(removedOf.get(target) ?? []), ...copiesRemoved];
        totals.removed += copiesRemoved.length;
        await audit('block', target, { digests, removed, changed: added });
        const digestText = digests.length === 0 ? 'no stored original, so no digest: blocked by key only' : `${digests.length} digest(s)`;
        const copiesText = copies === null ? '' : `, ${copiesRemoved.length} of them copies under other URLs`;
        if (added === 0 && removed.length === 0) {
          process.stdout.write(`already blocked and nothing stored: key ${target.key}\n`);
        } else {
          process.stdout.write(`blocked key ${target.key} (${digestText}); removed ${removed.length} file(s)${copiesText}\n`);
        }
        progress.tick(added > 0 || removed.length > 0 ? 'ok' : 'skipped');
      }
      if (copies !== null) {
        process.stdout.write(
          `${LABEL}: --copies read ${copies.sidecarsRead} ${store.sweepReads}` +
            (copies.interrupted ? ' before the interrupt: run it again to finish removing copies' : '') +
            '\n',
        );
      }
    }
  } finally {
    progress.stop();
    interrupt.dispose();
  }

  const interrupted = interrupt.signal.aborted;
  process.stdout.write(`${progress.summary(interrupted)}\n`);
  process.stdout.write(
    `${LABEL}: removed ${totals.removed} file(s)` +
      (block ? `; blocklist: added ${totals.keys} key(s), ${totals.digests} digest(s)` : '') +
      '\n',
  );
  return exitCodeOfItems(progress.counts, interrupted);
}

export function register(program: Command): void {
  withCommon(
    program
      .command('purge [targets...]')
      .description(
        'remove stored images with all their thumbnails (every size and format); with --block, also refuse them from now on (exit 0 done, 1 nothing to do or some lines failed, 2 usage, 130 interrupted)',
      ),
  )
    .option('--image-url <url>', 'an image URL to purge (repeatable; any target may also be an image URL)', collect)
    .option('--bucket <bucket>', 'image URLs: only this bucket (default: all; not with --block)')
    .option('--from-file <file>', 'targets one per line (links or image URLs; # comments and blank lines skipped)')
    .option('--block', 'also block: every link to the image and the same bytes under any URL answer 451 from now on')
    .option('--copies', 'with --block: also remove the same bytes stored under other URLs before the block (walks the tree, reading every sidecar)')
    .option('--note <text>', 'a reason kept in the blocklist and the audit log (e.g. a ticket number)')
    .action(async (targets: string[], options: PurgeOptions) => {
      process.exitCode = await purge(targets, options);
    });
}
