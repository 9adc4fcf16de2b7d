/**
 * The server's heal pass: one at start (what a crash left: temp files, stale locks,
 * originals without sidecars), then one `healIntervalSeconds` after the previous ended,
 * so passes never overlap. The locks of a holder that died just before the start are
 * not stale yet when the first pass sees them: they are looked at again once they could
 * be, and removed if nobody refreshed them. Each is `check --repair` without decoding
 * (server/tree/healthWalk.ts), followed by the sample: the next `verifyPerPass` images
 * read whole and checked against their digests (server/tree/verify.ts). Errors are
 * logged, never thrown: a tree the pass cannot read must not take the server down.
 */
import type { Logger } from '../observe/log.js';
import { LOCK_STALE_MS } from '../fetch/singleFlight.js';
import { removeUnrefreshedLocks, walkTreeHealth, type FindingReport, type TreeHealthResult } from './healthWalk.js';
import { repeatPass, type RepeatingPass } from './repeatingPass.js';
import { verifyTreeSample } from './verify.js';

export interface TreeHealingOptions {
  root: string;
  buckets: readonly string[];
  /** Pause between the end of one pass and the start of the next; 0: no pass at all. */
  intervalSeconds: number;
  tempMaxAgeMs: number;
  /** limits.maxBytes: the most bytes of an image the pass reads whole. */
  maxImageBytes: number;
  /** Images each pass reads whole (healVerifyPerPass); 0: none. */
  verifyPerPass: number;
  logger: Logger;
  /** Each damaged file a pass moved aside (the damaged-file metric). */
  onDamaged?: (report: FindingReport) => void;
}

/** firstPass includes the second look at the locks the pass at start saw fresh; stop() ends a pass after its current shard directory. */
export type TreeHealing = RepeatingPass;

export function startTreeHealing(options: TreeHealingOptions): TreeHealing {
  const logFinding = (report: FindingReport): void => {
    const fields = { kind: report.kind, path: report.relativePath, detail: report.detail, repair: report.repairDetail };
    if (report.repair === 'failed') options.logger.error(fields, 'tree heal: repair failed');
    else if (report.kind === 'damaged-original' || report.kind === 'damaged-thumbnail') {
      options.logger.warn(fields, 'tree heal: damaged file moved aside');
      options.onDamaged?.(report);
    } else if (report.kind === 'not-regular') options.logger.warn(fields, 'tree heal: irregular entry moved aside or left alone');
    else options.logger.info(fields, 'tree heal: repaired');
  };

  const healOnce = async (signal: AbortSignal, first: boolean): Promise<void> => {
    let result: TreeHealthResult;
    const freshLocks: Array<{ path: string; modifiedMs: number }> = [];
    try {
      result = await walkTreeHealth({
        root: options.root,
        buckets: options.buckets,
        tempMaxAgeMs: options.tempMaxAgeMs,
        maxImageBytes: options.maxImageBytes,
        repair: true,
        signal,
        ...(first ? { onFreshLock: (lock: { path: string; modifiedMs: number }) => freshLocks.push(lock) } : {}),
        onFinding: logFinding,
      });
    } catch (error) {
      options.logger.error({ err: error }, 'tree heal pass failed');
      return;
    }
    options.logger.debug({ ...result.found, repaired: result.repaired, failed: result.repairFailed, complete: result.complete }, 'tree heal pass done');
    if (options.verifyPerPass > 0 && !signal.aborted) {
      try {
        const sample = await verifyTreeSample({
          root: options.root,
          buckets: options.buckets,
          limit: options.verifyPerPass,
          signal,
          onFinding: logFinding,
        });
        options.logger.info(
          { verified: sample.verified, damaged: sample.damaged, recorded: sample.recorded, failed: sample.repairFailed, wrapped: sample.wrapped },
          'tree heal: sample verified',
        );
      } catch (error) {
        options.logger.error({ err: error }, 'tree heal: sample verification failed');
      }
    }
    if (freshLocks.length === 0) return;
    await new Promise<void>((done) => {
      const wait = setTimeout(done, LOCK_STALE_MS + 1000);
      signal.addEventListener('abort', () => {
        clearTimeout(wait);
        done();
      });
    });
    if (signal.aborted) return;
    try {
      const removed = await removeUnrefreshedLocks(freshLocks);
      if (removed > 0) options.logger.info({ removed }, 'tree heal: removed locks nobody refreshed since the start');
    } catch (error) {
      options.logger.error({ err: error }, 'tree heal: second look at locks failed');
    }
  };
  return repeatPass(options.intervalSeconds, healOnce);
}
