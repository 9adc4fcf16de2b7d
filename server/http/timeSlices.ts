/**
 * Requests worked through in time slices. A burst of hundreds of links arriving at once
 * would otherwise be handled in one turn of the event loop, each request's routing,
 * checks and lookups one after the other, while nothing else is polled: a load
 * balancer's /healthz probe (answered at once, outside this queue) would wait for the
 * whole burst. Here each turn works for about `sliceMs`, then lets the loop poll its
 * sockets and timers before the next slice. Bounded in count: past `maxQueued` waiting,
 * `offer` says no and the caller answers `busy` without queueing.
 *
 * No I/O: the clock and the deferral are injected (setImmediate in the server), so the
 * order and the slices are tested step by step.
 */

export interface TimeSlicedQueueOptions {
  /** Work done per turn of the loop before yielding (measured on the synchronous part). */
  sliceMs: number;
  /** Work items waiting at most; past it `offer` refuses. */
  maxQueued: number;
  now?: () => number;
  /** Runs a function on a later turn of the event loop (setImmediate). */
  defer?: (run: () => void) => void;
  /** A work item that threw (it should not: the app answers its own errors). */
  onError?: (error: unknown) => void;
}

export class TimeSlicedQueue {
  private readonly waiting: Array<() => void> = [];
  private scheduled = false;
  private readonly now: () => number;
  private readonly defer: (run: () => void) => void;

  constructor(private readonly options: TimeSlicedQueueOptions) {
    this.now = options.now ?? (() => performance.now());
    this.defer = options.defer ?? ((run) => setImmediate(run));
  }

  get length(): number {
    return this.waiting.length;
  }

  /** Queues `work` to run in order on a coming slice; false (nothing queued) when full. */
  offer(work: () => void): boolean {
    if (this.waiting.length >= this.options.maxQueued) return false;
    this.waiting.push(work);
    if (!this.scheduled) {
      this.scheduled = true;
      this.defer(this.runSlice);
    }
    return true;
  }

  private readonly runSlice = (): void => {
    this.scheduled = false;
    const started = this.now();
    while (this.waiting.length > 0) {
      const work = this.waiting.shift() as () => void;
      try {
        work();
      } catch (error) {
        this.options.onError?.(error);
      }
      if (this.now() - started >= this.options.sliceMs) break;
    }
    if (this.waiting.length > 0 && !this.scheduled) {
      this.scheduled = true;
      this.defer(this.runSlice);
    }
  };
}
