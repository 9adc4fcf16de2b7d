/** The test helpers the suite leans on for determinism: `until` and the short descriptions of bodies. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertSameBytes, describeBriefly, shortBody, until } from './helpers.js';

describe('until', () => {
  it('returns the first value that is done, sync or async', async () => {
    let polls = 0;
    assert.equal(await until(() => (polls += 1), { message: 'three polls', done: (count) => count >= 3, intervalMs: 1 }), 3);
    assert.equal(await until(async () => 'ready', { message: 'ready at once' }), 'ready');
  });

  it('counts a probe that throws as not done yet', async () => {
    let polls = 0;
    const value = await until(
      () => {
        polls += 1;
        if (polls < 3) throw new Error('ENOENT: not written yet');
        return 'written';
      },
      { message: 'the file', intervalMs: 1 },
    );
    assert.equal(value, 'written');
  });

  it('past the deadline fails with the message and the last value seen, bytes as their length', async () => {
    await assert.rejects(
      until(() => ({ status: 500, body: Buffer.alloc(5000, 0xff) }), { message: 'a 200', timeoutMs: 50, intervalMs: 5, done: (answer) => answer.status === 200 }),
      { message: 'a 200: not within 50 ms; last seen: {"status":500,"body":"5000 bytes"}' },
    );
    await assert.rejects(until(() => Promise.reject(new Error('ECONNREFUSED')), { message: 'the port', timeoutMs: 30, intervalMs: 5 }), {
      message: 'the port: not within 30 ms; last seen: error "ECONNREFUSED"',
    });
  });
});

describe('describeBriefly and shortBody', () => {
  const cases: Array<[name: string, value: unknown, expected: string]> = [
    ['bytes', Buffer.from([0xff, 0xd8, 0xff]), '3 bytes'],
    ['a number', 3, '3'],
    ['undefined', undefined, 'undefined'],
    ['a long string, cut', 'x'.repeat(300), `"${'x'.repeat(199)}… (302 chars)`],
  ];
  for (const [name, value, expected] of cases) it(name, () => assert.equal(describeBriefly(value), expected));

  it('shows a short text body, and only the length and type of anything else', () => {
    assert.equal(shortBody(Buffer.from('busy: too busy, try again\n'), 'text/plain; charset=utf-8'), 'busy: too busy, try again\n');
    assert.equal(shortBody(Buffer.alloc(2000, 0xff), 'image/jpeg'), '2000 bytes of image/jpeg');
    assert.equal(shortBody(Buffer.alloc(600, 0x61), 'text/html'), '600 bytes of text/html');
    assert.equal(shortBody(Buffer.alloc(0), null), '0 bytes of no content-type');
  });
});

describe('assertSameBytes', () => {
  it('passes equal bytes, and says lengths and the first difference of others, not the bytes', () => {
    assertSameBytes(Buffer.from([1, 2, 3]), new Uint8Array([1, 2, 3]), 'same');
    assert.throws(() => assertSameBytes(Buffer.from([1, 2, 9, 4]), Buffer.from([1, 2, 3]), 'the photo'), {
      message: 'the photo: 4 bytes where 3 were expected, first difference at byte 2',
    });
    assert.throws(() => assertSameBytes(Buffer.from([1, 2]), Buffer.from([1, 2, 3]), 'cut short'), {
      message: 'cut short: 2 bytes where 3 were expected, first difference at byte 2',
    });
  });
});
