/**
 * Admission before work: a counting semaphore with a bounded FIFO queue and a deadline
 * per waiter. Pure (no I/O; timers are injected), so its behaviour is tested step by step.
 *
 * Two phases, so a request can be refused before it has done anything: `enter()` takes a
 * place (running or waiting) at once or throws `busy`; `place.start()` waits, in order,
 * for one of `maxActive` running slots, at most `maxWaitMs`, then `busy`. A thumbnail
 * enters the resize gate before its original is fetched and starts after: refused, it
 * fetched nothing; admitted, it holds no running slot while it waits for the fetch.
 *
 * An optional observer sees every wait and refusal (the metrics' queue wait, server/observe/metrics.ts).
 * The gate keeps no clock: the observer measures a wait between its begin and its end.
 */
import { ImageproxyError } from '../errors.js';

/** The message of every `busy` answer, from a gate or from the server's own slice queue. */
export const BUSY_MESSAGE = 'too busy, try again';
/** Retry-After of a `busy` answer: a queue drains within seconds, not minutes. */
export const BUSY_RETRY_AFTER_SECONDS = 2;

export interface GateOptions {
  /** Names the gate and its config keys in log details (`fetch`, `resize`). */
  name: string;
  /** Work running at once. */
  maxActive: number;
  /** Places beyond the running ones: entered and not yet running. */
  maxQueued: number;
  /** Longest wait for a running slot once started. */
  maxWaitMs: number;
  /** Sent as Retry-After with `busy`. */
  retryAfterSeconds: number;
  /** Told of each wait for a running slot and of each refusal at once. */
  observer?: GateObserver;
}

/** How a wait for a running slot ended: the slot, `busy` past maxWaitMs, or the place released while it waited. */
type WaitEnd = 'admitted' | 'timed_out' | 'left';

export interface GateObserver {
  /**
   * A start(): the wait begins (a start with a free slot too, ending at once). The
   * returned function is called once, when the wait ends.
   */
  waitBegins(gate: string): (end: WaitEnd) => void;
  /** An enter() refused `busy` at once: every running slot and queue place was taken. */
  refusedFull(gate: string): void;
}

/** Schedules `callback` after `ms`; returns a function that cancels it. */
export type ScheduleTimer = (callback: () => void, ms: number) => () => void;

const realTimer: ScheduleTimer = (callback, ms) => {
  const handle = setTimeout(callback, ms);
  return () => clearTimeout(handle);
};

/** A place taken in a gate. `release` is idempotent and frees whatever the place holds. */
export interface GatePlace {
  /** Resolves once running; rejects `busy` after `maxWaitMs` in the queue (the place is then released). */
  start(): Promise<void>;
  /** Whether start() would wait now (every running slot taken, or others waiting first). */
  wouldWait(): boolean;
  release: () => void;
}

interface Waiter {
  resolve: () => void;
  cancelTimer: () => void;
}

export interface GateFigures {
  running: number;
  /** Places taken and not running (waiting for a slot, or not started yet). */
  waiting: number;
}

export class AdmissionGate {
  private running = 0;
  private places = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    private readonly options: GateOptions,
    private readonly schedule: ScheduleTimer = realTimer,
  ) {}

  get figures(): GateFigures {
    return { running: this.running, waiting: this.places - this.running };
  }

  /** A place, or `busy` at once when every running slot and queue place is taken. */
  enter(): GatePlace {
    const { maxActive, maxQueued, name } = this.options;
    if (this.places >= maxActive + maxQueued) {
      this.options.observer?.refusedFull(name);
      throw this.busy(`${name} queue full: ${this.running} running, ${this.places - this.running} waiting`);
    }
    this.places += 1;
    let state: 'entered' | 'waiting' | 'running' | 'released' = 'entered';
    let waiter: Waiter | undefined;
    // The observer's end of the current wait; told once (a timeout's release is no `left`).
    let waitEnds: ((end: WaitEnd) => void) | undefined;
    const endWait = (end: WaitEnd): void => {
      const ends = waitEnds;
      waitEnds = undefined;
      ends?.(end);
    };
    const release = (): void => {
      if (state === 'released') return;
      if (state === 'running') this.finishRunning();
      if (state === 'waiting' && waiter !== undefined) {
        this.leaveQueue(waiter);
        endWait('left');
      }
      state = 'released';
      this.places -= 1;
    };
    const wouldWait = (): boolean => !(this.running < maxActive && this.queue.length === 0);
    const start = (): Promise<void> => {
      if (state !== 'entered') return Promise.reject(new Error(`${name} gate: start() on a place that is ${state}`));
      waitEnds = this.options.observer?.waitBegins(name);
      if (!wouldWait()) {
        this.running += 1;
        state = 'running';
        endWait('admitted');
        return Promise.resolve();
      }
      state = 'waiting';
      return new Promise<void>((resolve, reject) => {
        const entry: Waiter = {
          resolve: () => {
            state = 'running';
            endWait('admitted');
            resolve();
          },
          cancelTimer: () => undefined,
        };
        entry.cancelTimer = this.schedule(() => {
          endWait('timed_out');
          release();
          reject(this.busy(`waited ${this.options.maxWaitMs} ms in the ${name} queue`));
        }, this.options.maxWaitMs);
        waiter = entry;
        this.queue.push(entry);
      });
    };
    return { start, wouldWait, release };
  }

  /** enter() and start() in one: resolves with the release function. */
  async admit(): Promise<() => void> {
    const place = this.enter();
    await place.start();
    return () => place.release();
  }

  /** A running slot freed: hand it to the first waiter, or count it free. */
  private finishRunning(): void {
    const next = this.queue.shift();
    if (next === undefined) {
      this.running -= 1;
      return;
    }
    next.cancelTimer();
    next.resolve();
  }

  private leaveQueue(waiter: Waiter): void {
    waiter.cancelTimer();
    const index = this.queue.indexOf(waiter);
    if (index >= 0) this.queue.splice(index, 1);
  }

  private busy(detail: string): ImageproxyError {
    return new ImageproxyError('busy', BUSY_MESSAGE, {
      retryAfterSeconds: this.options.retryAfterSeconds,
      detail,
    });
  }
}
