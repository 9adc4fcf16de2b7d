/** server/fetch/singleFlight.ts with real locks (directories, abstract sockets): one piece of work per id and per lock. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isImageproxyError } from '../server/errors.js';
import { hostLock, InProcessFlights, treeLock, withLock, type SingleFlightLock } from '../server/fetch/singleFlight.js';
import { makeTempRoot, removeTempRoot, until } from './helpers.js';

/** A promise and its resolver: the tests open gates instead of guessing with sleeps. */
function gate(): { opened: Promise<void>; open(): void } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/**
 * A holder inside its work and a waiter on the same lock: the waiter polls (a lookup before
 * each try of the lock) without finishing, then takes the holder's result without working.
 * `whileHeld` checks the lock from outside while the holder works.
 */
async function waiterTakesTheHoldersResult(lock: () => SingleFlightLock, whileHeld: () => Promise<void> = async () => undefined): Promise<void> {
  let result: string | null = null;
  let works = 0;
  let lookups = 0;
  const entered = gate();
  const finish = gate();
  const existing = async (): Promise<string | null> => {
    lookups += 1;
    return result;
  };
  const holder = withLock(lock(), 30_000, existing, async () => {
    works += 1;
    entered.open();
    await finish.opened;
    result = 'stored';
    return result;
  });
  await entered.opened;
  await whileHeld();
  let waiterSettled = false;
  const lookupsBefore = lookups;
  const waiter = withLock(lock(), 30_000, existing, async () => {
    works += 1;
    return 'fetched again';
  }).finally(() => {
    waiterSettled = true;
  });
  await until(() => lookups - lookupsBefore, { message: 'three polls of the waiter', done: (polls) => polls >= 3 });
  assert.equal(waiterSettled, false, 'the waiter does not finish before the holder');
  finish.open();
  assert.deepEqual(await Promise.all([holder, waiter]), ['stored', 'stored']);
  assert.equal(works, 1);
}

describe('InProcessFlights', () => {
  it('runs concurrent calls with one id once and gives all of them its result', async () => {
    const flights = new InProcessFlights();
    let runs = 0;
    let finish = gate();
    const work = async (): Promise<string> => {
      runs += 1;
      await finish.opened;
      return 'done';
    };
    const calls = Array.from({ length: 10 }, () => flights.run('a', work));
    assert.equal(flights.size, 1, 'one flight while the work runs');
    finish.open();
    const results = await Promise.all(calls);
    assert.deepEqual(results, Array(10).fill('done'));
    assert.equal(runs, 1);
    assert.equal(flights.size, 0);
    finish = gate();
    finish.open();
    await flights.run('a', work); // settled: the next call runs again
    assert.equal(runs, 2);
  });

  it('shares a failure with every waiter and then forgets it', async () => {
    const flights = new InProcessFlights();
    const fail = gate();
    let runs = 0;
    const failing = async (): Promise<never> => {
      runs += 1;
      await fail.opened;
      throw new Error('origin down');
    };
    const calls = [flights.run('b', failing), flights.run('b', failing)];
    fail.open();
    const outcomes = await Promise.allSettled(calls);
    assert.equal(runs, 1);
    assert.deepEqual(outcomes.map((outcome) => outcome.status), ['rejected', 'rejected']);
    assert.equal(await flights.run('b', async () => 'recovered'), 'recovered');
  });

  it('keeps different ids apart', async () => {
    const flights = new InProcessFlights();
    const [one, two] = await Promise.all([flights.run('x', async () => 1), flights.run('y', async () => 2)]);
    assert.deepEqual([one, two], [1, 2]);
  });
});

describe('withLock on the tree lock (a directory)', () => {
  let directory = '';
  before(async () => {
    directory = await makeTempRoot('imageproxy-lock-');
  });
  after(() => removeTempRoot(directory));

  const withTreeLock = <T>(lockPath: string, waitMs: number, existing: () => Promise<T | null>, work: () => Promise<T>): Promise<T> =>
    withLock(treeLock(lockPath, { staleMs: 10_000, onCompromised: () => undefined }), waitMs, existing, work);

  it('a second caller waits for the holder and takes its result without working', async () => {
    const lockPath = join(directory, 'one.lock');
    await waiterTakesTheHoldersResult(
      () => treeLock(lockPath, { staleMs: 10_000, onCompromised: () => undefined }),
      async () => assert.ok((await stat(lockPath)).isDirectory(), 'the lock directory exists while the holder works'),
    );
    await assert.rejects(stat(lockPath), { code: 'ENOENT' }); // released
  });

  it('answers busy with Retry-After when the holder takes longer than waitMs', async () => {
    const lockPath = join(directory, 'two.lock');
    const existing = async (): Promise<string | null> => null;
    const entered = gate();
    const finish = gate();
    const holder = withTreeLock(lockPath, 10_000, existing, async () => {
      entered.open();
      await finish.opened;
      return 'slow';
    });
    await entered.opened;
    const started = Date.now();
    await assert.rejects(
      withTreeLock(lockPath, 200, existing, async () => 'never'),
      (error) => isImageproxyError(error) && error.code === 'busy' && error.status === 503 && error.retryAfterSeconds === 5,
    );
    // It waited its 200 ms, and gave up while the holder still held the lock.
    assert.ok(Date.now() - started >= 190);
    assert.ok((await stat(lockPath)).isDirectory(), 'the holder still holds the lock');
    finish.open();
    assert.equal(await holder, 'slow');
  });

  it('releases the lock when the work fails, so the next caller can try', async () => {
    const lockPath = join(directory, 'three.lock');
    const existing = async (): Promise<string | null> => null;
    await assert.rejects(withTreeLock(lockPath, 1000, existing, async () => Promise.reject(new Error('disk full'))), /disk full/);
    assert.equal(await withTreeLock(lockPath, 1000, existing, async () => 'second try'), 'second try');
  });
});

describe('hostLock', () => {
  let counter = 0;
  /** A name of this test run only: abstract socket names are shared by the whole host. */
  const uniqueName = (): string => `imageproxy-test/${process.pid}/${Date.now()}/${(counter += 1)}`;

  it('is held once: a second take says null until the holder releases; other names are free', async () => {
    const name = uniqueName();
    const release = await hostLock(name).tryTake();
    assert.ok(release !== null);
    assert.equal(await hostLock(name).tryTake(), null);
    const other = await hostLock(uniqueName()).tryTake();
    assert.ok(other !== null, 'another name is another lock');
    await other();
    await release();
    const again = await hostLock(name).tryTake();
    assert.ok(again !== null, 'free again after release');
    await again();
  });

  it('a holder in another process excludes us; killed with -9 it frees the lock at once (no staleness to wait out)', async () => {
    const name = uniqueName();
    const holder = spawn(
      process.execPath,
      ['-e', `require('node:net').createServer().listen({ path: '\\0' + process.argv[1], exclusive: true }, () => console.log('held'))`, name],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise((resolve) => holder.once('exit', resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
      });
      assert.equal(await hostLock(name).tryTake(), null, 'held by the other process');
    } finally {
      holder.kill('SIGKILL');
      await exited;
    }
    const release = await hostLock(name).tryTake();
    assert.ok(release !== null, 'free as soon as the holder is gone');
    await release();
  });

  it('a socket that cannot be made (no file descriptor left) is 500 internal naming the lock, not a disk fault', async () => {
    // A real refusal: a process out of descriptors (ulimit -n) asks for the lock.
    const script = `
      const { hostLock } = await import(${JSON.stringify(new URL('../dist/server/fetch/singleFlight.js', import.meta.url).href)});
      const { openSync } = await import('node:fs');
      const held = [];
      try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}
      try { await hostLock(process.argv[1]).tryTake(); console.log('{"taken":true}'); }
      catch (error) { console.log(JSON.stringify({ code: error.code, status: error.status, detail: error.detail })); }`;
    const name = uniqueName();
    const child = spawn('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, '--input-type=module', '-e', script, name], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    await new Promise((resolve) => child.once('exit', resolve));
    const answer = JSON.parse(output) as { code?: string; status?: number; detail?: string; taken?: boolean };
    assert.equal(answer.code, 'internal');
    assert.equal(answer.status, 500);
    assert.match(answer.detail ?? '', new RegExp(`host lock ${name} cannot be taken \\(EMFILE\\)`));
  });

  it('withLock on it: a second caller waits for the holder and takes its result without working', async () => {
    const name = uniqueName();
    await waiterTakesTheHoldersResult(() => hostLock(name));
  });

  it('answers busy naming the lock when the holder takes longer than the wait', async () => {
    const name = uniqueName();
    const release = await hostLock(name).tryTake();
    assert.ok(release !== null);
    try {
      await assert.rejects(
        withLock(hostLock(name), 150, async () => null, async () => 'never'),
        (error) => isImageproxyError(error) && error.code === 'busy' && (error.detail ?? '').includes(name),
      );
    } finally {
      await release();
    }
  });
});
