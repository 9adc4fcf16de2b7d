/**
 * `imageproxy block --host <host>...`: refuses every link to an origin host with 451
 * `blocked`, without any fetch, from running servers within a couple of seconds (they
 * reload the blocklist, server/takedown/blocklistStore.ts), then removes the images already
 * stored from those hosts (server/takedown/sidecarSweep.ts), which nginx would otherwise go on
 * serving. Images (a link or image URL) are blocked with `purge --block`. Appended to
 * the audit log.
 *
 * Exit codes: 0 a host was added or files of it removed; 1 nothing to do (every host
 * already blocked, nothing stored) or a host failed (an unreadable blocklist); 2 usage;
 * 130 interrupted.
 */
import type { Command } from 'commander';
import type { Config } from '../config/config.js';
import { addEntries, normaliseHost } from '../takedown/blocklist.js';
import { BLOCKLIST_RECHECK_MS } from '../takedown/blocklistStore.js';
import { matchingHosts, type SweepResult } from '../takedown/sidecarSweep.js';
import type { TakedownStore } from '../takedown/takedownStore.js';
import { UsageError, collect, exitCodeOfItems, loadConfig, withCommon, type CommonOptions } from './common.js';
import { ProgressReporter, interruptOnSignals } from './progress.js';
import { gatewayFailureOf } from './storageTarget.js';
import { currentActor, waitForRunningServers, withTakedownStore } from './takedownTargets.js';

const LABEL = 'block';

interface BlockOptions extends CommonOptions {
  host?: string[];
  note?: string;
}

/** Hosts from --host, normalised; a value that is not a bare host is a usage error. */
export function hostsOf(values: readonly string[] | undefined, command: string): string[] {
  if (values === undefined || values.length === 0) throw new UsageError(`${command}: give --host HOST (repeatable)`);
  return values.map((value) => {
    const host = normaliseHost(value);
    if (host === null) throw new UsageError(`--host: ${value} is not a host name or IP address (no scheme, port or path)`);
    return host;
  });
}

async function block(options: BlockOptions): Promise<number> {
  const config = loadConfig(options, {}, LABEL);
  const hosts = hostsOf(options.host, 'block');
  return withTakedownStore(LABEL, config, (store) => blockHosts(store, hosts, config, options));
}

async function blockHosts(store: TakedownStore, hosts: readonly string[], config: Config, options: BlockOptions): Promise<number> {
  const actor = currentActor();
  const progress = new ProgressReporter({ label: LABEL, total: hosts.length });
  const interrupt = interruptOnSignals(LABEL);
  const blocked: Array<{ host: string; at: string; added: number }> = [];
  let sweep: SweepResult | null = null;
  try {
    for (const host of hosts) {
      if (interrupt.signal.aborted) break;
      const at = new Date().toISOString();
      try {
        const added = await store.updateBlocklist((list) => {
          const result = addEntries(list, [
            { kind: 'host', value: host, at, by: actor.commandLine, ...(options.note === undefined ? {} : { note: options.note }) },
          ]);
          return { list: result.list, result: result.added.length };
        });
        blocked.push({ host, at, added });
      } catch (error) {
        if (gatewayFailureOf(error) !== null) throw error;
        process.stderr.write(`${LABEL}: ${host}: ${(error as Error).message}\n`);
        progress.tick('failed');
      }
    }
    if (blocked.length > 0 && !interrupt.signal.aborted) {
      // Once running servers have the new list, none can store an image of these hosts
      // again; then what is stored goes, so nginx has nothing of theirs left to serve.
      await waitForRunningServers(BLOCKLIST_RECHECK_MS);
      sweep = await store.removeMatching(Object.keys(config.buckets), matchingHosts(new Set(blocked.map((entry) => entry.host))), {
        signal: interrupt.signal,
      });
    }
    for (const { host, at, added } of blocked) {
      const removed = sweep?.removedBy.get(host)?.length ?? 0;
      await store.appendAudit({
        time: at,
        action: 'block',
        target: host,
        host,
        changed: added,
        removedCount: removed,
        ...(options.note === undefined ? {} : { note: options.note }),
        user: actor.user,
        argv: actor.argv,
      });
      const fromConfig = config.blockedHosts.includes(host) ? ' (also in the config blockedHosts)' : '';
      const state = added > 0 ? `blocked host ${host}${fromConfig}` : `host ${host} already blocked${fromConfig}`;
      process.stdout.write(`${state}; removed ${removed} stored file(s) from it\n`);
      progress.tick(added > 0 || removed > 0 ? 'ok' : 'skipped');
    }
  } finally {
    progress.stop();
    interrupt.dispose();
  }
  const interrupted = interrupt.signal.aborted || sweep?.interrupted === true;
  process.stdout.write(`${progress.summary(interrupted)}\n`);
  if (sweep !== null) {
    process.stdout.write(
      `${LABEL}: read ${sweep.sidecarsRead} ${store.sweepReads}${sweep.interrupted ? ' before the interrupt: run it again to finish removing stored files' : ''}; ` +
        'links to these hosts answer 451 from running servers within seconds\n',
    );
  }
  return exitCodeOfItems(progress.counts, interrupted);
}

export function register(program: Command): void {
  withCommon(
    program
      .command('block')
      .description(
        'refuse every link to an origin host with 451, without fetching (images: purge --block); exit 0 added, 1 nothing to do, 2 usage',
      ),
  )
    .option('--host <host>', 'origin host to block (repeatable)', collect)
    .option('--note <text>', 'a reason kept in the blocklist and the audit log')
    .action(async (options: BlockOptions) => {
      process.exitCode = await block(options);
    });
}
