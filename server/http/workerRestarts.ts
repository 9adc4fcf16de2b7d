/**
 * When to restart a worker that exited unexpectedly: at once after a run long enough to
 * count as healthy, then with a doubling delay for each crash that follows quickly, so a
 * worker that cannot start (a broken config file, a full disk) does not spin the CPU.
 * Pure: the caller measures how long the worker lived.
 */

export interface RestartPolicy {
  /** A worker that lived at least this long crashed for a reason of its own: restart at once. */
  healthyRunMs: number;
  /** Delay after the second quick crash in a row; doubled after each further one. */
  firstDelayMs: number;
  maxDelayMs: number;
}

// A worker that served for half a minute was working; the cap keeps a crash loop to a
// couple of attempts a minute while still retrying on its own once the cause is fixed.
const RESTART_POLICY: RestartPolicy = { healthyRunMs: 30_000, firstDelayMs: 250, maxDelayMs: 30_000 };

export interface RestartDecision {
  /** Quick crashes in a row, this one included (the next decision's `previousCrashes`). */
  crashes: number;
  delayMs: number;
}

export function nextRestart(previousCrashes: number, livedMs: number, policy: RestartPolicy = RESTART_POLICY): RestartDecision {
  const crashes = livedMs >= policy.healthyRunMs ? 1 : previousCrashes + 1;
  if (crashes <= 1) return { crashes, delayMs: 0 };
  const delayMs = Math.min(policy.maxDelayMs, policy.firstDelayMs * 2 ** (crashes - 2));
  return { crashes, delayMs };
}
