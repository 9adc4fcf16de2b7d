// TimeSlicedQueue: order, slices, the bound, and a throwing item — with a fake clock and
// a deferral that only runs when the test says (one call = one turn of the loop).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TimeSlicedQueue } from '../server/http/timeSlices.js';

function harness(options: { sliceMs: number; maxQueued: number; costMs: number }) {
  let clock = 0;
  const turns: Array<() => void> = [];
  const ran: number[] = [];
  const errors: unknown[] = [];
  const queue = new TimeSlicedQueue({
    sliceMs: options.sliceMs,
    maxQueued: options.maxQueued,
    now: () => clock,
    defer: (run) => turns.push(run),
    onError: (error) => errors.push(error),
  });
  const work = (id: number, fail = false) => () => {
    clock += options.costMs;
    ran.push(id);
    if (fail) throw new Error(`item ${id}`);
  };
  /** Runs the turns deferred so far; returns what each turn ran. */
  const turnsRun = (): number[][] => {
    const slices: number[][] = [];
    while (turns.length > 0) {
      const before = ran.length;
      (turns.shift() as () => void)();
      slices.push(ran.slice(before));
    }
    return slices;
  };
  return { queue, work, turnsRun, turns, errors };
}

describe('TimeSlicedQueue', () => {
  const cases = [
    { name: 'cheap items: all in one slice', sliceMs: 5, costMs: 1, items: 4, expected: [[0, 1, 2, 3]] },
    { name: 'items of 2 ms, slices of 5 ms: three per turn', sliceMs: 5, costMs: 2, items: 7, expected: [[0, 1, 2], [3, 4, 5], [6]] },
    { name: 'an item longer than a slice runs alone', sliceMs: 5, costMs: 9, items: 3, expected: [[0], [1], [2]] },
  ];
  for (const { name, sliceMs, costMs, items, expected } of cases) {
    it(name, () => {
      const { queue, work, turnsRun } = harness({ sliceMs, maxQueued: 100, costMs });
      for (let id = 0; id < items; id += 1) assert.equal(queue.offer(work(id)), true);
      assert.deepEqual(turnsRun(), expected);
      assert.equal(queue.length, 0);
    });
  }

  it('nothing runs before the deferred turn, and one turn is asked for however many are offered', () => {
    const { queue, work, turns, turnsRun } = harness({ sliceMs: 5, maxQueued: 100, costMs: 1 });
    queue.offer(work(0));
    queue.offer(work(1));
    assert.equal(turns.length, 1);
    assert.equal(queue.length, 2);
    assert.deepEqual(turnsRun(), [[0, 1]]);
  });

  it('full: offer says no and queues nothing; room again once a slice ran', () => {
    const { queue, work, turnsRun } = harness({ sliceMs: 1, maxQueued: 2, costMs: 1 });
    assert.equal(queue.offer(work(0)), true);
    assert.equal(queue.offer(work(1)), true);
    assert.equal(queue.offer(work(2)), false);
    assert.equal(queue.length, 2);
    assert.deepEqual(turnsRun(), [[0], [1]]);
    assert.equal(queue.offer(work(3)), true);
    assert.deepEqual(turnsRun(), [[3]]);
  });

  it('an item that throws is reported and the rest still run', () => {
    const { queue, work, turnsRun, errors } = harness({ sliceMs: 10, maxQueued: 10, costMs: 1 });
    queue.offer(work(0));
    queue.offer(work(1, true));
    queue.offer(work(2));
    assert.deepEqual(turnsRun(), [[0, 1, 2]]);
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]), /item 1/);
  });

  it('work offered during a slice runs on a later turn, after what waited before it', () => {
    const { queue, work, turnsRun } = harness({ sliceMs: 2, maxQueued: 10, costMs: 1 });
    queue.offer(() => {
      work(0)();
      queue.offer(work(9));
    });
    queue.offer(work(1));
    queue.offer(work(2));
    assert.deepEqual(turnsRun(), [[0, 1], [2, 9]]);
  });
});
