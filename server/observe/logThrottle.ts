/**
 * One log line per interval for an event that comes in floods (`busy` refusals under a
 * burst): the first passes, the rest are counted and the count rides on the next line
 * let through. Pure: the clock is injected. Metrics count every event; the log only
 * says that, and roughly how often, it happens.
 */
export class LogThrottle {
  private nextAtMs = Number.NEGATIVE_INFINITY;
  private suppressed = 0;

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** null: stay quiet; otherwise log, with how many were held back since the last line. */
  pass(): number | null {
    const atMs = this.now();
    if (atMs < this.nextAtMs) {
      this.suppressed += 1;
      return null;
    }
    this.nextAtMs = atMs + this.intervalMs;
    const heldBack = this.suppressed;
    this.suppressed = 0;
    return heldBack;
  }
}
