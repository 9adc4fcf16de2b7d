/**
 * Which queued job may start now, with a bound on jobs running in total and per origin
 * host. Pure: the caller queues jobs, asks which to start, and reports each one finished.
 *
 * Jobs of one host start in the order they were queued; hosts take turns (the host served
 * last goes to the back), so a long run of lines for one slow host does not hold back the
 * lines of other hosts behind it.
 */

export interface ConcurrencyLimits {
  /** Jobs running at once, all hosts together. */
  total: number;
  /** Jobs running at once for one host. */
  perHost: number;
}

export interface StartedJob<T> {
  host: string;
  job: T;
}

export class HostScheduler<T> {
  private readonly queues = new Map<string, T[]>();
  private readonly runningByHost = new Map<string, number>();
  private runningTotal = 0;
  private queuedTotal = 0;

  constructor(private readonly limits: ConcurrencyLimits) {
    if (!(limits.total >= 1 && limits.perHost >= 1)) throw new RangeError('limits must be at least 1');
  }

  get queued(): number {
    return this.queuedTotal;
  }

  get running(): number {
    return this.runningTotal;
  }

  runningFor(host: string): number {
    return this.runningByHost.get(host) ?? 0;
  }

  enqueue(host: string, job: T): void {
    const queue = this.queues.get(host);
    if (queue === undefined) this.queues.set(host, [job]);
    else queue.push(job);
    this.queuedTotal += 1;
  }

  /**
   * The jobs that may start now, marked running. One job per host per round, rounds until
   * nothing more fits, so free slots are shared among the hosts that have work.
   */
  takeStartable(): StartedJob<T>[] {
    const started: StartedJob<T>[] = [];
    let progressed = true;
    while (progressed && this.runningTotal < this.limits.total && this.queuedTotal > 0) {
      progressed = false;
      for (const [host, queue] of [...this.queues]) {
        if (this.runningTotal >= this.limits.total) break;
        if (this.runningFor(host) >= this.limits.perHost) continue;
        const job = queue.shift() as T;
        // The host served last goes to the back of the line.
        this.queues.delete(host);
        if (queue.length > 0) this.queues.set(host, queue);
        this.queuedTotal -= 1;
        this.runningTotal += 1;
        this.runningByHost.set(host, this.runningFor(host) + 1);
        started.push({ host, job });
        progressed = true;
      }
    }
    return started;
  }

  /** A job of `host` has finished: its slot is free. */
  finish(host: string): void {
    const running = this.runningFor(host);
    if (running === 0) throw new Error(`no job of ${host} is running`);
    if (running === 1) this.runningByHost.delete(host);
    else this.runningByHost.set(host, running - 1);
    this.runningTotal -= 1;
  }
}
