/**
 * Progress of a long command (import-legacy, populate, purge, block, unblock, stats, check): a live
 * bar (cli-progress) when stderr is a terminal, else a plain line every few seconds, so a
 * run under systemd, cron or `| tee` logs its pace too; and the one summary line at the end.
 * Also the interrupt handling those commands share.
 */
import cliProgress from 'cli-progress';
import { endBySignal } from './processExit.js';

export type ItemOutcome = 'ok' | 'failed' | 'skipped';

export interface ProgressCounts {
  done: number;
  ok: number;
  failed: number;
  skipped: number;
}

export interface ProgressOptions {
  /** The command's name, first on every line. */
  label: string;
  /** Items to do, when known up front (an ETA needs it). */
  total: number | null;
  /** Where progress goes; stdout stays for the command's own output. */
  stream?: NodeJS.WriteStream;
  /** Plain-line period when the stream is not a terminal. */
  intervalMs?: number;
  /** Force the plain lines even on a terminal (tests, `--no-progress-bar`). */
  plain?: boolean;
  /** What an item is, plural (`shard directories`); default `entries`. */
  unit?: string;
}

const DEFAULT_INTERVAL_MS = 5000;

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

export class ProgressReporter {
  readonly counts: ProgressCounts = { done: 0, ok: 0, failed: 0, skipped: 0 };
  private total: number | null;
  private readonly startedMs = Date.now();
  private readonly stream: NodeJS.WriteStream;
  private readonly bar: cliProgress.SingleBar | null;
  private readonly timer: NodeJS.Timeout | null;

  constructor(private readonly options: ProgressOptions) {
    this.total = options.total;
    this.stream = options.stream ?? process.stderr;
    if (this.stream.isTTY === true && options.plain !== true) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: this.stream,
          format: `${options.label} [{bar}] {value}/{total} ${options.unit ?? 'entries'} | ok {ok} failed {failed} skipped {skipped} | {rate}/s | ETA {eta_formatted}`,
          etaBuffer: 200,
          hideCursor: true,
          clearOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(this.total ?? 0, 0, this.payload());
      this.timer = null;
    } else {
      this.bar = null;
      this.timer = setInterval(() => this.stream.write(`${this.line()}\n`), options.intervalMs ?? DEFAULT_INTERVAL_MS);
      this.timer.unref();
    }
  }

  /** Items per second since the start. */
  rate(): number {
    const seconds = (Date.now() - this.startedMs) / 1000;
    return seconds > 0 ? this.counts.done / seconds : 0;
  }

  elapsedSeconds(): number {
    return (Date.now() - this.startedMs) / 1000;
  }

  private payload(): Record<string, string | number> {
    return { ...this.counts, rate: Math.round(this.rate()) };
  }

  setTotal(total: number): void {
    this.total = total;
    this.bar?.setTotal(total);
  }

  tick(outcome: ItemOutcome): void {
    this.counts.done += 1;
    this.counts[outcome] += 1;
    if (this.bar !== null) {
      if (this.total === null) this.bar.setTotal(this.counts.done);
      this.bar.update(this.counts.done, this.payload());
    }
  }

  /** The plain progress line: done/total, ok, failed, skipped, rate, ETA. */
  line(): string {
    const { done, ok, failed, skipped } = this.counts;
    const rate = this.rate();
    const of = this.total === null ? `${done}` : `${done}/${this.total}`;
    const eta = this.total === null || rate === 0 ? '' : `, ETA ${formatSeconds((this.total - done) / rate)}`;
    return `${this.options.label}: ${of} ${this.unit()} done, ok ${ok}, failed ${failed}, skipped ${skipped}, ${rate.toFixed(0)}/s${eta}`;
  }

  private unit(): string {
    return this.options.unit ?? 'entries';
  }

  /** Stops the bar or the timer; call once, before printing the summary. */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.bar?.stop();
  }

  /** The summary line: counts, time and rate. */
  summary(interrupted: boolean): string {
    const { done, ok, failed, skipped } = this.counts;
    const seconds = this.elapsedSeconds();
    return (
      `${this.options.label}: ${interrupted ? 'interrupted after' : 'done:'} ${done} ${this.unit()} in ${seconds.toFixed(1)} s ` +
      `(${this.rate().toFixed(0)}/s): ok ${ok}, failed ${failed}, skipped ${skipped}`
    );
  }
}

export interface Interrupt {
  /** Aborted at the first SIGINT or SIGTERM: stop taking new work, finish what runs. */
  signal: AbortSignal;
  dispose(): void;
}

/** How long a command winds down after the first SIGINT/SIGTERM before it stops anyway. */
export const WIND_DOWN_MS = 5000;

export interface InterruptOptions {
  stream?: NodeJS.WriteStream;
  /** After the first signal, stop at once if the command has not ended within this time. */
  windDownMs?: number;
}

/**
 * First SIGINT/SIGTERM: the signal aborts and the command winds down (work in flight
 * finishes, files it writes stay true, the summary is printed, exit 130). A second one,
 * or `windDownMs` without the command ending (a fetch that takes its time, a disk that
 * stopped answering), ends the process at once by the signal (status 130 or 143, no
 * summary): atomic writes leave nothing half-written either way. Not process.exit(),
 * which would wait for a stuck file operation for ever (server/cli/processExit.ts).
 */
export function interruptOnSignals(label: string, options: InterruptOptions = {}): Interrupt {
  const stream = options.stream ?? process.stderr;
  const windDownMs = options.windDownMs ?? WIND_DOWN_MS;
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) {
      stream.write(`\n${label}: ${signal} again, stopping now\n`);
      endBySignal(signal);
      return;
    }
    stream.write(`\n${label}: ${signal}: finishing the entries in progress (press Ctrl-C again to stop at once)\n`);
    controller.abort();
    setTimeout(() => {
      stream.write(`\n${label}: not done ${Math.round(windDownMs / 1000)} s after ${signal}; stopping now (run it again to finish)\n`);
      endBySignal(signal);
    }, windDownMs).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      // The wind-down timer stays (unref'd: it keeps nothing alive): if a stuck file
      // operation keeps the process from ending once the command is done, it still ends.
    },
  };
}
