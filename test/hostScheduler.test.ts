// The total and per-host bounds of server/fetch/hostScheduler.ts, as tables of steps: each step
// queues jobs or finishes one, then takes what may start and compares it to the expected.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HostScheduler } from '../server/fetch/hostScheduler.js';

type Step =
  /** Queue jobs, each `host:name`. */
  | { enqueue: string[]; starts: string[] }
  /** A running job of this host finished. */
  | { finish: string; starts: string[] };

interface Case {
  name: string;
  total: number;
  perHost: number;
  steps: Step[];
}

const CASES: Case[] = [
  {
    name: 'one host: per-host bound, then a slot per finished job, in queue order',
    total: 16,
    perHost: 2,
    steps: [
      { enqueue: ['a:1', 'a:2', 'a:3', 'a:4'], starts: ['a:1', 'a:2'] },
      { finish: 'a', starts: ['a:3'] },
      { finish: 'a', starts: ['a:4'] },
      { finish: 'a', starts: [] },
    ],
  },
  {
    name: 'several hosts: the total bound holds across them',
    total: 3,
    perHost: 4,
    steps: [
      { enqueue: ['a:1', 'a:2', 'b:1', 'b:2', 'c:1'], starts: ['a:1', 'b:1', 'c:1'] },
      { finish: 'c', starts: ['a:2'] },
      { finish: 'a', starts: ['b:2'] },
    ],
  },
  {
    name: 'a saturated host does not hold back the host queued behind it',
    total: 10,
    perHost: 1,
    steps: [
      { enqueue: ['a:1', 'a:2', 'a:3', 'b:1'], starts: ['a:1', 'b:1'] },
      { enqueue: ['b:2'], starts: [] },
      { finish: 'b', starts: ['b:2'] },
      { finish: 'a', starts: ['a:2'] },
    ],
  },
  {
    name: 'free slots are shared in turns among hosts with work',
    total: 4,
    perHost: 4,
    steps: [{ enqueue: ['a:1', 'a:2', 'a:3', 'b:1', 'b:2', 'b:3'], starts: ['a:1', 'b:1', 'a:2', 'b:2'] }],
  },
  {
    name: 'bounds of 1 run one job at a time',
    total: 1,
    perHost: 1,
    steps: [
      { enqueue: ['a:1', 'b:1'], starts: ['a:1'] },
      { finish: 'a', starts: ['b:1'] },
      { finish: 'b', starts: [] },
    ],
  },
];

describe('HostScheduler', () => {
  for (const testCase of CASES) {
    it(testCase.name, () => {
      const scheduler = new HostScheduler<string>({ total: testCase.total, perHost: testCase.perHost });
      const running = new Map<string, number>();
      for (const [number, step] of testCase.steps.entries()) {
        if ('enqueue' in step) {
          for (const job of step.enqueue) scheduler.enqueue(job.split(':')[0] ?? '', job);
        } else {
          scheduler.finish(step.finish);
          running.set(step.finish, (running.get(step.finish) ?? 0) - 1);
        }
        const started = scheduler.takeStartable();
        assert.deepEqual(
          started.map(({ job }) => job),
          step.starts,
          `step ${number}`,
        );
        for (const { host } of started) running.set(host, (running.get(host) ?? 0) + 1);
        const totalRunning = [...running.values()].reduce((sum, count) => sum + count, 0);
        assert.equal(scheduler.running, totalRunning, `step ${number}: running`);
        assert.ok(totalRunning <= testCase.total, `step ${number}: total bound`);
        for (const [host, count] of running) {
          assert.ok(count <= testCase.perHost, `step ${number}: ${host} bound`);
          assert.equal(scheduler.runningFor(host), count, `step ${number}: ${host} running`);
        }
      }
    });
  }

  it('refuses to finish a job that is not running', () => {
    const scheduler = new HostScheduler<string>({ total: 2, perHost: 1 });
    assert.throws(() => scheduler.finish('a'), /no job of a is running/);
  });

  it('refuses bounds below 1', () => {
    assert.throws(() => new HostScheduler({ total: 0, perHost: 1 }), RangeError);
    assert.throws(() => new HostScheduler({ total: 1, perHost: 0 }), RangeError);
  });
});
