import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nextRestart, type RestartPolicy } from '../server/http/workerRestarts.js';

const policy: RestartPolicy = { healthyRunMs: 30_000, firstDelayMs: 250, maxDelayMs: 30_000 };

test('restart delays: at once after a healthy run, doubling while crashes follow quickly, capped', () => {
  const cases: Array<{ name: string; previous: number; livedMs: number; crashes: number; delayMs: number }> = [
    { name: 'first crash, short life', previous: 0, livedMs: 10, crashes: 1, delayMs: 0 },
    { name: 'first crash after a healthy run', previous: 0, livedMs: 60_000, crashes: 1, delayMs: 0 },
    { name: 'second quick crash', previous: 1, livedMs: 500, crashes: 2, delayMs: 250 },
    { name: 'third quick crash', previous: 2, livedMs: 500, crashes: 3, delayMs: 500 },
    { name: 'sixth quick crash', previous: 5, livedMs: 500, crashes: 6, delayMs: 4000 },
    { name: 'many quick crashes: capped', previous: 40, livedMs: 500, crashes: 41, delayMs: 30_000 },
    { name: 'a healthy run resets the count', previous: 12, livedMs: 30_000, crashes: 1, delayMs: 0 },
    { name: 'just short of healthy still counts', previous: 1, livedMs: 29_999, crashes: 2, delayMs: 250 },
  ];
  for (const { name, previous, livedMs, crashes, delayMs } of cases) {
    assert.deepEqual(nextRestart(previous, livedMs, policy), { crashes, delayMs }, name);
  }
});
