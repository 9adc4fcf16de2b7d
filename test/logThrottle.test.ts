// LogThrottle: one line per interval, the count of the others on the next line let through.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LogThrottle } from '../server/observe/logThrottle.js';

describe('LogThrottle', () => {
  const cases: Array<{ name: string; atMs: number[]; expected: Array<number | null> }> = [
    { name: 'the first event passes with nothing held back', atMs: [0], expected: [0] },
    { name: 'a burst within the interval: one line, the rest held back', atMs: [0, 1, 2, 999], expected: [0, null, null, null] },
    { name: 'the next line after the interval carries the count', atMs: [0, 10, 20, 1000], expected: [0, null, null, 2] },
    { name: 'quiet spells pass every event', atMs: [0, 1000, 2500, 9000], expected: [0, 0, 0, 0] },
    { name: 'the interval restarts at each line let through', atMs: [0, 1000, 1500, 1999, 2000], expected: [0, 0, null, null, 2] },
  ];
  for (const { name, atMs, expected } of cases) {
    it(name, () => {
      let now = 0;
      const throttle = new LogThrottle(1000, () => now);
      const seen = atMs.map((at) => {
        now = at;
        return throttle.pass();
      });
      assert.deepEqual(seen, expected);
    });
  }
});
