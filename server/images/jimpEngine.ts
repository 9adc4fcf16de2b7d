/**
 * The jimp engine: pure JavaScript (no native binary), for hosts where sharp cannot
 * load. jimp decodes on the thread that calls it and is much slower than sharp (figures:
 * docs/benchmarks.md), so it never runs on the event loop: a pool of `concurrency` worker threads
 * (jimpWorker.ts) each resize one image at a time; further requests wait in a queue.
 *
 * Before a job reaches a worker, the header is read here (image-size, no decoding) and
 * an original above `maxPixels` is refused, so a decompression bomb is never decoded.
 * A worker that throws, crashes or runs past the timeout fails only its own job
 * (`bad_image`); it is replaced and the process stays up.
 */
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { ImageproxyError } from '../errors.js';
import { inspectImage, pixelCount } from './sniff.js';
import { badImage, pixelCountDetail, tooManyPixels } from './engine.js';
import type { Conversion, ConvertRequest, EngineOptions, ResizeEngine, ResizeRequest, ResizeResult } from './engine.js';
import type { EncodedThumbnail } from './formatEncode.js';
import type { WorkerJob, WorkerMessage } from './jimpWorker.js';

/** A worker that dies before loading this many times in a row means it cannot start at all. */
const MAX_STARTUP_FAILURES = 3;

interface WorkerEntry {
  /** What `new Worker` runs: the compiled file, or a bootstrap script (eval) for the source. */
  script: URL | string;
  eval: boolean;
  /** For messages: the worker module finally loaded. */
  moduleUrl: URL;
}

/**
 * The compiled worker (dist/server/images/jimpWorker.js) when it exists. Otherwise the
 * TypeScript source, in development and tests: Node 20 does not apply `--import tsx`
 * loader hooks to a worker's entry file (nodejs/node#47747), so a two-line bootstrap
 * registers tsx inside the worker first and then imports the source.
 */
function jimpWorkerEntry(): WorkerEntry {
  const compiled = new URL('./jimpWorker.js', import.meta.url);
  if (existsSync(compiled)) return { script: compiled, eval: false, moduleUrl: compiled };
  const source = new URL('./jimpWorker.ts', import.meta.url);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(source.href)}); });`;
  return { script: bootstrap, eval: true, moduleUrl: source };
}

export async function createJimpEngine(options: EngineOptions): Promise<ResizeEngine> {
  const pool = new JimpWorkerPool(Math.max(1, Math.floor(options.concurrency)), options.timeoutSeconds * 1000);
  await pool.started();
  return {
    name: 'jimp',
    convertsFrom: 'thumbnail',
    async resize(request: ResizeRequest): Promise<ResizeResult> {
      checkBeforeDecode(request, options.maxPixels);
      const result = await pool.run({
        input: request.input,
        format: request.format,
        maxHeight: request.maxHeight,
        maxWidth: request.maxWidth,
        quality: options.quality,
      });
      // jimp writes one frame (the first of an animated GIF).
      return { bytes: result.bytes, format: request.format, width: result.width, height: result.height, frames: 1 };
    },
    async convert(request: ConvertRequest): Promise<Conversion> {
      const encode = await loadSharpEncoder();
      if (encode === null) return { kind: 'kept', reason: 'no encoder' };
      try {
        return { kind: 'converted', image: await encode(request.to, request.input) };
      } catch (error) {
        // encodeThumbnailAs refuses an animation for a format that cannot keep it.
        if (error instanceof RangeError) return { kind: 'kept', reason: 'animation' };
        throw badImage(error, `sharp: ${error instanceof Error ? error.message : String(error)}`);
      }
    },
    close: () => pool.close(),
  };
}

type ThumbnailEncoder = (to: ConvertRequest['to'], thumbnail: Buffer) => Promise<EncodedThumbnail>;

let sharpEncoder: Promise<ThumbnailEncoder | null> | undefined;

/**
 * jimp writes neither WebP nor AVIF: a format class is encoded by sharp from the
 * source-format thumbnail jimp made (already at its size, one frame), when sharp loads
 * on this host. Where it cannot (the reason to run jimp at all), null: every class
 * gets the source-format thumbnail.
 */
function loadSharpEncoder(): Promise<ThumbnailEncoder | null> {
  sharpEncoder ??= import('./formatEncode.js').then(
    (module) => (to: ConvertRequest['to'], thumbnail: Buffer) => module.encodeThumbnailAs(to, thumbnail),
    () => null,
  );
  return sharpEncoder;
}

/**
 * Header checks done on the calling thread with the same reader the fetcher uses
 * (server/images/sniff.ts, no decoding): readable, under the pixel limit (all frames counted),
 * decodable by jimp.
 */
function checkBeforeDecode(request: ResizeRequest, maxPixels: number): void {
  const info = inspectImage(request.input);
  if (info === null) throw badImage(undefined, `jimp: unreadable ${request.format} header`);
  if (pixelCount(info) > maxPixels) throw tooManyPixels(pixelCountDetail(info.width, info.height * info.frames, maxPixels));
  if (info.format === 'webp' && info.frames > 1) {
    throw badImage(undefined, 'jimp: animated WebP is not supported by the jimp engine (use sharp)');
  }
}

type PoolJob = Omit<WorkerJob, 'id'>;

interface PoolResult {
  bytes: Buffer;
  width: number;
  height: number;
}

interface QueuedJob {
  id: number;
  job: PoolJob;
  resolve(result: PoolResult): void;
  reject(error: Error): void;
}

interface PoolSlot {
  worker: Worker;
  /** starting: loading its modules; ready: takes jobs; retiring: being terminated. */
  state: 'starting' | 'ready' | 'retiring';
  current: QueuedJob | null;
  timer: NodeJS.Timeout | null;
}

/** A fixed number of jimp workers, one job each at a time, a dead worker replaced. */
class JimpWorkerPool {
  private readonly slots = new Set<PoolSlot>();
  private readonly queue: QueuedJob[] = [];
  private readonly entry = jimpWorkerEntry();
  private readonly readyWaiters: Array<{ resolve(): void; reject(error: Error): void }> = [];
  private nextJobId = 1;
  private startupFailures = 0;
  private lastWorkerError = '';
  private closing = false;
  private broken: Error | null = null;

  constructor(
    private readonly size: number,
    private readonly timeoutMs: number,
  ) {
    for (let index = 0; index < size; index++) this.spawn();
  }

  /** Resolves once every worker has loaded; rejects when workers cannot start at all. */
  started(): Promise<void> {
    if (this.broken) return Promise.reject(this.broken);
    if (this.readyCount() === this.size) return Promise.resolve();
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  run(job: PoolJob): Promise<PoolResult> {
    if (this.closing) return Promise.reject(new ImageproxyError('internal', 'internal error', { detail: 'jimp engine closed' }));
    if (this.broken) return Promise.reject(this.broken);
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextJobId++, job, resolve, reject });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    const closed = new ImageproxyError('internal', 'internal error', { detail: 'jimp engine closed' });
    for (const queued of this.queue.splice(0)) queued.reject(closed);
    await Promise.all([...this.slots].map((slot) => slot.worker.terminate()));
  }

  private readyCount(): number {
    return [...this.slots].filter((slot) => slot.state === 'ready').length;
  }

  private spawn(): void {
    const worker = new Worker(this.entry.script, { eval: this.entry.eval, execArgv: [] });
    const slot: PoolSlot = { worker, state: 'starting', current: null, timer: null };
    this.slots.add(slot);
    worker.on('message', (message: WorkerMessage) => this.onMessage(slot, message));
    // 'error' (an uncaught exception in the worker) is always followed by 'exit'.
    worker.on('error', (error) => {
      this.lastWorkerError = error.message;
      this.finish(slot, badImage(error, `jimp: worker crashed: ${error.message}`));
    });
    worker.on('exit', (exitCode) => this.onExit(slot, exitCode));
  }

  private onMessage(slot: PoolSlot, message: WorkerMessage): void {
    if (message.kind === 'ready') {
      slot.state = 'ready';
      this.startupFailures = 0;
      if (this.readyCount() === this.size) for (const waiter of this.readyWaiters.splice(0)) waiter.resolve();
      this.dispatch();
      return;
    }
    if (slot.current === null || slot.current.id !== message.id) return;
    if (message.kind === 'done') {
      const bytes = Buffer.from(message.bytes.buffer, message.bytes.byteOffset, message.bytes.byteLength);
      this.finish(slot, { bytes, width: message.width, height: message.height });
    } else {
      this.finish(slot, badImage(new Error(message.message), `jimp: ${message.message}`));
    }
    this.dispatch();
  }

  private onExit(slot: PoolSlot, exitCode: number): void {
    this.finish(slot, badImage(undefined, `jimp: worker exited with code ${exitCode}`));
    this.slots.delete(slot);
    if (this.closing) return;
    if (slot.state === 'starting' && ++this.startupFailures >= MAX_STARTUP_FAILURES) {
      this.markBroken(exitCode);
      return;
    }
    this.spawn();
  }

  /** Workers cannot start (a missing file or module): fail everything now, not forever later. */
  private markBroken(exitCode: number): void {
    this.broken = new ImageproxyError('internal', 'internal error', {
      detail: `jimp: worker ${this.entry.moduleUrl.href} failed to start ${MAX_STARTUP_FAILURES} times (exit code ${exitCode}: ${this.lastWorkerError})`,
    });
    for (const waiter of this.readyWaiters.splice(0)) waiter.reject(this.broken);
    for (const queued of this.queue.splice(0)) queued.reject(this.broken);
  }

  /** Settles the slot's current job, once: the first of answer, crash, exit or timeout wins. */
  private finish(slot: PoolSlot, outcome: PoolResult | Error): void {
    const current = slot.current;
    if (current === null) return;
    slot.current = null;
    if (slot.timer !== null) clearTimeout(slot.timer);
    slot.timer = null;
    if (outcome instanceof Error) current.reject(outcome);
    else current.resolve(outcome);
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.state !== 'ready' || slot.current !== null) continue;
      const queued = this.queue.shift();
      if (queued === undefined) return;
      slot.current = queued;
      slot.timer = setTimeout(() => this.timeOut(slot), this.timeoutMs);
      const message: WorkerJob = { id: queued.id, ...queued.job };
      slot.worker.postMessage(message);
    }
  }

  /** A job past its time: fail it and stop the worker (a replacement is spawned on exit). */
  private timeOut(slot: PoolSlot): void {
    this.finish(slot, badImage(undefined, `jimp: resize took longer than ${this.timeoutMs / 1000} s`));
    slot.state = 'retiring';
    void slot.worker.terminate();
  }
}
