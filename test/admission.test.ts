/**
 * The admission gate step by step, without real time: timers are a list the test fires.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdmissionGate, type GateObserver, type GatePlace, type ScheduleTimer } from '../server/fetch/admission.js';
import { ImageproxyError } from '../server/errors.js';

type Step =
  | { enter: string } // take a place; `busy` expected when the id ends in '!'
  | { start: string }
  | { release: string }
  | { expire: string } // fire the queue timer of a waiting place
  | { expect: { running: number; waiting: number; states: Record<string, State> } };

type State = 'entered' | 'running' | 'waiting' | 'busy' | 'released';

interface Case {
  name: string;
  maxActive: number;
  maxQueued: number;
  steps: Step[];
}

const cases: Case[] = [
  {
    name: 'slots first, then the queue, then busy at once',
    maxActive: 2,
    maxQueued: 1,
    steps: [
      { enter: 'a' },
      { start: 'a' },
      { enter: 'b' },
      { start: 'b' },
      { enter: 'c' },
      { start: 'c' },
      { enter: 'd!' },
      { expect: { running: 2, waiting: 1, states: { a: 'running', b: 'running', c: 'waiting', 'd!': 'busy' } } },
    ],
  },
  {
    name: 'a released slot goes to the first waiter, in order',
    maxActive: 1,
    maxQueued: 2,
    steps: [
      { enter: 'a' },
      { start: 'a' },
      { enter: 'b' },
      { start: 'b' },
      { enter: 'c' },
      { start: 'c' },
      { release: 'a' },
      { expect: { running: 1, waiting: 1, states: { a: 'released', b: 'running', c: 'waiting' } } },
      { release: 'b' },
      { expect: { running: 1, waiting: 0, states: { b: 'released', c: 'running' } } },
      { release: 'c' },
      { expect: { running: 0, waiting: 0, states: { c: 'released' } } },
    ],
  },
  {
    name: 'a waiter past maxWaitMs is busy and gives its place back',
    maxActive: 1,
    maxQueued: 1,
    steps: [
      { enter: 'a' },
      { start: 'a' },
      { enter: 'b' },
      { start: 'b' },
      { enter: 'c!' },
      { expire: 'b' },
      { expect: { running: 1, waiting: 0, states: { a: 'running', b: 'busy', 'c!': 'busy' } } },
      { enter: 'd' },
      { start: 'd' },
      { release: 'a' },
      { expect: { running: 1, waiting: 0, states: { d: 'running' } } },
    ],
  },
  {
    name: 'an entered place not yet started counts against the queue, holds no slot',
    maxActive: 1,
    maxQueued: 1,
    steps: [
      { enter: 'thumb' }, // waiting for its original's fetch
      { enter: 'b' },
      { start: 'b' },
      { enter: 'c!' },
      { expect: { running: 1, waiting: 1, states: { thumb: 'entered', b: 'running', 'c!': 'busy' } } },
      { start: 'thumb' },
      { release: 'b' },
      { expect: { running: 1, waiting: 0, states: { thumb: 'running', b: 'released' } } },
    ],
  },
  {
    name: 'a waiting place released (its request gave up) leaves the queue; release twice is harmless',
    maxActive: 1,
    maxQueued: 2,
    steps: [
      { enter: 'a' },
      { start: 'a' },
      { enter: 'b' },
      { start: 'b' },
      { enter: 'c' },
      { start: 'c' },
      { release: 'b' },
      { release: 'b' },
      { release: 'a' },
      { expect: { running: 1, waiting: 0, states: { b: 'released', c: 'running' } } },
    ],
  },
  {
    name: 'no queue at all: the slot or busy',
    maxActive: 1,
    maxQueued: 0,
    steps: [
      { enter: 'a' },
      { start: 'a' },
      { enter: 'b!' },
      { expect: { running: 1, waiting: 0, states: { a: 'running', 'b!': 'busy' } } },
    ],
  },
];

/** Lets promise callbacks run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('AdmissionGate', () => {
  for (const testCase of cases) {
    it(testCase.name, async () => {
      const timers = new Map<number, () => void>();
      let nextTimer = 0;
      const schedule: ScheduleTimer = (callback) => {
        const id = nextTimer++;
        timers.set(id, callback);
        return () => timers.delete(id);
      };
      const gate = new AdmissionGate(
        { name: 'test', maxActive: testCase.maxActive, maxQueued: testCase.maxQueued, maxWaitMs: 1000, retryAfterSeconds: 2 },
        schedule,
      );
      const places = new Map<string, GatePlace>();
      const timerOf = new Map<string, number>();
      const states: Record<string, State> = {};
      for (const step of testCase.steps) {
        if ('enter' in step) {
          try {
            places.set(step.enter, gate.enter());
            states[step.enter] = 'entered';
            assert.ok(!step.enter.endsWith('!'), `${step.enter} should have been refused`);
          } catch (error) {
            assert.ok(step.enter.endsWith('!'), `${step.enter} refused: ${String(error)}`);
            assert.ok(error instanceof ImageproxyError && error.code === 'busy' && error.retryAfterSeconds === 2);
            states[step.enter] = 'busy';
          }
        } else if ('start' in step) {
          const id = step.start;
          const before = nextTimer;
          states[id] = 'waiting';
          (places.get(id) as GatePlace).start().then(
            () => {
              states[id] = 'running';
            },
            (error: unknown) => {
              assert.ok(error instanceof ImageproxyError && error.code === 'busy');
              states[id] = 'busy';
            },
          );
          if (nextTimer > before) timerOf.set(id, before);
          await settle();
        } else if ('release' in step) {
          (places.get(step.release) as GatePlace).release();
          states[step.release] = 'released';
        } else if ('expire' in step) {
          const timer = timers.get(timerOf.get(step.expire) as number);
          assert.ok(timer !== undefined, `${step.expire} has no pending timer`);
          timer();
        } else {
          await settle();
          assert.deepEqual(gate.figures, { running: step.expect.running, waiting: step.expect.waiting });
          for (const [id, state] of Object.entries(step.expect.states)) assert.equal(states[id], state, id);
        }
      }
      await settle();
    });
  }

  it('admit() waits, in real time, at most maxWaitMs', async () => {
    const gate = new AdmissionGate({ name: 'fetch', maxActive: 1, maxQueued: 1, maxWaitMs: 50, retryAfterSeconds: 2 });
    const release = await gate.admit();
    await assert.rejects(gate.admit(), (error: unknown) => error instanceof ImageproxyError && error.code === 'busy');
    release();
    assert.deepEqual(gate.figures, { running: 0, waiting: 0 });
  });
});

describe('wouldWait', () => {
  it('says whether start() would wait: free slot, slots taken, others already waiting, a slot freed', () => {
    const gate = new AdmissionGate({ name: 'test', maxActive: 1, maxQueued: 3, maxWaitMs: 1000, retryAfterSeconds: 1 }, () => () => undefined);
    const first = gate.enter();
    const second = gate.enter();
    assert.equal(first.wouldWait(), false, 'a free slot');
    void first.start();
    assert.equal(second.wouldWait(), true, 'the only slot is taken');
    void second.start();
    const third = gate.enter();
    first.release();
    // The slot went to the waiting second place, so a third still waits.
    assert.equal(third.wouldWait(), true, 'others were waiting first');
    second.release();
    assert.equal(third.wouldWait(), false, 'a slot is free and nobody waits');
  });
});

describe('the observer', () => {
  it('sees each wait begin and end once (at once, after a release, timed out, given up) and each refusal at once', async () => {
    const events: string[] = [];
    let waits = 0;
    const observer: GateObserver = {
      waitBegins(gate) {
        const wait = ++waits;
        events.push(`${gate} wait ${wait} begins`);
        return (end) => events.push(`${gate} wait ${wait} ${end}`);
      },
      refusedFull: (gate) => events.push(`${gate} full`),
    };
    const timers: Array<() => void> = [];
    const schedule: ScheduleTimer = (callback) => {
      timers.push(callback);
      return () => undefined;
    };
    const gate = new AdmissionGate({ name: 'fetch', maxActive: 1, maxQueued: 2, maxWaitMs: 1000, retryAfterSeconds: 2, observer }, schedule);
    const first = gate.enter();
    await first.start();
    const timesOut = gate.enter();
    const givesUp = gate.enter();
    assert.throws(() => gate.enter(), (error: unknown) => error instanceof ImageproxyError && error.code === 'busy');
    const timedOut = timesOut.start().catch((error: unknown) => (error instanceof ImageproxyError ? error.code : 'other'));
    void givesUp.start();
    timers[0]?.();
    assert.equal(await timedOut, 'busy');
    timesOut.release();
    givesUp.release();
    const last = gate.enter();
    const lastStarted = last.start();
    first.release();
    await lastStarted;
    last.release();
    assert.deepEqual(events, [
      'fetch wait 1 begins',
      'fetch wait 1 admitted',
      'fetch full',
      'fetch wait 2 begins',
      'fetch wait 3 begins',
      'fetch wait 2 timed_out',
      'fetch wait 3 left',
      'fetch wait 4 begins',
      'fetch wait 4 admitted',
    ]);
  });
});
