/**
 * `imageproxy unblock <link-or-url>... | --host <host>... | --from-file F`: reverses
 * `purge --block` (the key's entry and the digests recorded with it) and `block --host`.
 * The next request for an unblocked image fetches it again. Hosts listed in the config's
 * blockedHosts stay blocked until removed there. Appended to the audit log.
 *
 * Exit codes: 0 something was unblocked; 1 nothing to do (not blocked) or some lines
 * failed; 2 usage; 130 interrupted.
 */
import type { Command } from 'commander';
import type { Config } from '../config/config.js';
import { entriesOfKey, removeEntries, type BlockEntry } from '../takedown/blocklist.js';
import type { TakedownStore } from '../takedown/takedownStore.js';
import { UsageError, collect, exitCodeOfItems, loadConfig, withCommon, type CommonOptions } from './common.js';
import { hostsOf } from './block.js';
import { ProgressReporter, interruptOnSignals } from './progress.js';
import { gatewayFailureOf } from './storageTarget.js';
import { currentActor, readTargetFile, resolveTarget, withTakedownStore, type TakedownTarget } from './takedownTargets.js';

const LABEL = 'unblock';

interface UnblockOptions extends CommonOptions {
  host?: string[];
  fromFile?: string;
  note?: string;
}

type UnblockItem =
  | { kind: 'target'; target: TakedownTarget }
  | { kind: 'host'; host: string }
  | { kind: 'problem'; line: number; problem: string };

async function unblock(positional: string[], options: UnblockOptions): Promise<number> {
  const config = loadConfig(options, {}, LABEL);
  const items: UnblockItem[] = [
    ...positional.map((text): UnblockItem => ({ kind: 'target', target: resolveTarget(text, config) })),
    ...(options.host === undefined ? [] : hostsOf(options.host, LABEL).map((host): UnblockItem => ({ kind: 'host', host }))),
  ];
  if (options.fromFile !== undefined) {
    for (const line of await readTargetFile(options.fromFile, config)) {
      items.push(line.target === null ? { kind: 'problem', line: line.line, problem: line.problem ?? '' } : { kind: 'target', target: line.target });
    }
  }
  if (items.length === 0 && options.fromFile === undefined) {
    throw new UsageError('give a link or image URL to unblock, --host HOST, or --from-file FILE');
  }
  return withTakedownStore(LABEL, config, (store) => unblockItems(store, items, config, options));
}

async function unblockItems(store: TakedownStore, items: readonly UnblockItem[], config: Config, options: UnblockOptions): Promise<number> {
  const actor = currentActor();
  const progress = new ProgressReporter({ label: LABEL, total: items.length });
  const interrupt = interruptOnSignals(LABEL);
  const note = options.note === undefined ? {} : { note: options.note };
  try {
    for (const item of items) {
      if (interrupt.signal.aborted) break;
      if (item.kind === 'problem') {
        process.stderr.write(`${LABEL}: line ${item.line}: ${item.problem}\n`);
        progress.tick('failed');
        continue;
      }
      const matches =
        item.kind === 'host'
          ? (entry: BlockEntry): boolean => entry.kind === 'host' && entry.value === item.host
          : entriesOfKey(item.target.key);
      let removed: BlockEntry[];
      try {
        removed = await store.updateBlocklist((list) => {
          const result = removeEntries(list, matches);
          return { list: result.list, result: result.removed };
        });
      } catch (error) {
        if (gatewayFailureOf(error) !== null) throw error;
        process.stderr.write(`${LABEL}: ${item.kind === 'host' ? item.host : item.target.text}: ${(error as Error).message}\n`);
        progress.tick('failed');
        continue;
      }
      const time = new Date().toISOString();
      const digests = removed.filter((entry) => entry.kind === 'digest').map((entry) => entry.value);
      if (item.kind === 'host') {
        await store.appendAudit({ time, action: 'unblock', target: item.host, host: item.host, changed: removed.length, ...note, user: actor.user, argv: actor.argv });
        const stillInConfig = config.blockedHosts.includes(item.host);
        if (removed.length > 0) process.stdout.write(`unblocked host ${item.host}\n`);
        else process.stdout.write(`host ${item.host} was not in the blocklist\n`);
        if (stillInConfig) process.stdout.write(`host ${item.host} stays blocked by the config (blockedHosts): remove it there\n`);
        progress.tick(removed.length > 0 ? 'ok' : 'skipped');
      } else {
        const { target } = item;
        await store.appendAudit({
          time,
          action: 'unblock',
          target: target.text,
          key: target.key,
          url: target.imageUrl,
          digests,
          changed: removed.length,
          ...note,
          user: actor.user,
          argv: actor.argv,
        });
        if (removed.length > 0) process.stdout.write(`unblocked key ${target.key} (${digests.length} digest(s))\n`);
        else process.stdout.write(`not blocked: key ${target.key}\n`);
        progress.tick(removed.length > 0 ? 'ok' : 'skipped');
      }
    }
  } finally {
    progress.stop();
    interrupt.dispose();
  }
  const interrupted = interrupt.signal.aborted;
  process.stdout.write(`${progress.summary(interrupted)}\n`);
  return exitCodeOfItems(progress.counts, interrupted);
}

export function register(program: Command): void {
  withCommon(
    program
      .command('unblock [targets...]')
      .description(
        'reverse purge --block (a link or image URL) or block --host; exit 0 done, 1 nothing to do or some lines failed, 2 usage',
      ),
  )
    .option('--host <host>', 'origin host to unblock (repeatable)', collect)
    .option('--from-file <file>', 'links or image URLs one per line (# comments and blank lines skipped)')
    .option('--note <text>', 'a reason kept in the audit log')
    .action(async (targets: string[], options: UnblockOptions) => {
      process.exitCode = await unblock(targets, options);
    });
}
