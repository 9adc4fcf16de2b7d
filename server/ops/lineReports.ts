/**
 * Report files of a bulk command that stay true while it runs: each file lists the
 * lines finished so far, in input order, and is rewritten whole (server/tree/atomicFile.ts, so
 * a reader or an interrupted run never sees half a file) at most about once a second
 * and at the end.
 */
import { asError } from '../errors.js';
import { writeFileAtomic } from '../tree/atomicFile.js';

interface NumberedLine {
  /** Position in the input: the files keep input order whatever order work finishes in. */
  index: number;
  text: string;
}

// Rewriting grows with the number of lines: never spend more than a tenth of the time on it.
const WRITE_TIME_FACTOR = 10;

export class LineReports<Name extends string> {
  private readonly lines = new Map<Name, NumberedLine[]>();
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  private nextWriteAtMs = 0;
  private failure: Error | null = null;

  /**
   * @param paths where each report goes
   * @param minIntervalMs shortest time between two rewrites
   */
  constructor(
    private readonly paths: Readonly<Record<Name, string>>,
    private readonly minIntervalMs = 1000,
  ) {
    for (const name of Object.keys(paths) as Name[]) this.lines.set(name, []);
  }

  add(name: Name, index: number, text: string): void {
    (this.lines.get(name) as NumberedLine[]).push({ index, text });
    this.dirty = true;
    if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.writing = this.writing.then(() => this.writeAll()).catch((error: unknown) => {
          this.failure = asError(error);
        });
      }, Math.max(0, this.nextWriteAtMs - Date.now()));
    }
  }

  private async writeAll(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    const started = Date.now();
    for (const [name, entries] of this.lines) {
      entries.sort((a, b) => a.index - b.index);
      await writeFileAtomic(this.paths[name], entries.map((entry) => `${entry.text}\n`).join(''));
    }
    const finished = Date.now();
    this.nextWriteAtMs = finished + Math.max(this.minIntervalMs, (finished - started) * WRITE_TIME_FACTOR);
  }

  /** Writes every file one last time (also the empty ones) and stops. Throws a write's failure. */
  async close(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.dirty = true;
    await this.writing;
    await this.writeAll();
    if (this.failure !== null) throw this.failure;
  }
}
