/**
 * A pass over the tree that repeats (the heal pass, the statistics walk): one at start,
 * then one `intervalSeconds` after the previous ended, so passes never overlap however
 * long one takes. stop() aborts the signal the pass was given and waits for it to end.
 */
export interface RepeatingPass {
  /** Resolves when the pass at start has ended (at once when the interval is 0). */
  firstPass: Promise<void>;
  /** Stops the schedule and aborts the pass in progress, resolving when it has ended. */
  stop(): Promise<void>;
}

/** `pass` must not throw (it logs instead); `first` is true for the pass at start only. An interval of 0: no pass at all. */
export function repeatPass(intervalSeconds: number, pass: (signal: AbortSignal, first: boolean) => Promise<void>): RepeatingPass {
  if (intervalSeconds === 0) return { firstPass: Promise.resolve(), stop: async () => {} };
  const controller = new AbortController();
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> = Promise.resolve();
  const scheduleNext = (): void => {
    if (controller.signal.aborted) return;
    timer = setTimeout(run, intervalSeconds * 1000);
    timer.unref();
  };
  const run = (first = false): void => {
    running = pass(controller.signal, first).then(scheduleNext);
  };
  run(true);
  const firstPass = running;

  return {
    firstPass,
    async stop() {
      controller.abort();
      if (timer !== null) clearTimeout(timer);
      await running;
    },
  };
}
