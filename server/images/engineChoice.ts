/**
 * Starts the resize engine a config names (server/images/engine.ts is the interface).
 * Apart from the interface so that neither engine imports the module that imports it.
 */
import type { EngineName, EngineOptions, ResizeEngine } from './engine.js';

/**
 * Starts an engine. Each engine is imported only when chosen, so a host without
 * sharp's native binary can still run the jimp engine, and sharp's users never
 * start jimp's worker threads.
 */
export async function createEngine(name: EngineName, options: EngineOptions): Promise<ResizeEngine> {
  assertEngineOptions(options);
  if (name === 'sharp') {
    const { createSharpEngine } = await import('./sharpEngine.js');
    return createSharpEngine(options);
  }
  const { createJimpEngine } = await import('./jimpEngine.js');
  return createJimpEngine(options);
}

function assertEngineOptions(options: EngineOptions): void {
  const positive: Array<[string, number]> = [
    ['maxPixels', options.maxPixels],
    ['timeoutSeconds', options.timeoutSeconds],
    ['concurrency', options.concurrency],
  ];
  for (const [key, value] of positive) {
    if (!Number.isFinite(value) || value <= 0) throw new RangeError(`engine option ${key} must be positive, got ${value}`);
  }
  for (const [format, value] of Object.entries(options.quality)) {
    if (!Number.isInteger(value) || value < 1 || value > 100) {
      throw new RangeError(`engine option quality.${format} must be an integer from 1 to 100, got ${value}`);
    }
  }
}
