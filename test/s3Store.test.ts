// The S3 object store (server/storage/s3Store.ts) against a real Ceph RADOS Gateway on
// loopback (test/rgwHarness.ts): one gateway for the file, each case on names of its own.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { isImageproxyError, type ErrorCode } from '../server/errors.js';
import { originalFactsOf, originalObjectMetadata } from '../server/storage/objectMetadata.js';
import { S3ObjectStore, type S3StoreSettings } from '../server/storage/s3Store.js';
import type { ImageMetadata } from '../server/tree/originals.js';
import { assertSameBytes } from './helpers.js';
import { cephMissing, gatewayStoreSettings, startGateway, type RunningGateway } from './rgwHarness.js';

const PREFIX = 'site-a/images/';
const CAP = 10 * 1024 * 1024;

function md5(bytes: Uint8Array): string {
  return createHash('md5').update(bytes).digest('hex');
}

/** A stream that sends `sentBytes` of `bytes`, then fails: a source cut short mid-upload. */
function streamCutShort(bytes: Buffer, sentBytes: number): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (!sent) {
        sent = true;
        this.push(bytes.subarray(0, sentBytes));
        return;
      }
      // Fail only once the gateway holds the first part: the upload is midway, not refused up front.
      setTimeout(() => this.destroy(new Error('source cut short')), 200);
    },
  });
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, detail?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isImageproxyError(error), `an ImageproxyError, got ${String(error)}`);
    assert.equal(error.code, code);
    if (detail !== undefined) assert.match(error.detail ?? '', detail);
    return true;
  });
}

describe('S3 object store on a real Ceph RGW', { skip: cephMissing() ?? false }, () => {
  let gateway: RunningGateway;
  let store: S3ObjectStore;
  const stores: S3ObjectStore[] = [];

  const storeWith = (overrides: Partial<S3StoreSettings> = {}): S3ObjectStore => {
    const made = new S3ObjectStore({ ...gatewayStoreSettings(gateway, PREFIX), ...overrides });
    stores.push(made);
    return made;
  };

  before(async () => {
    gateway = await startGateway();
    store = storeWith();
  });

  after(async () => {
    for (const made of stores) made.close();
    await gateway?.stop();
  });

  it('put, get, head, delete: bytes, type, ETag and metadata as stored; absence is null', async () => {
    const bytes = randomBytes(100 * 1024);
    await store.put('crud/a', bytes, { contentType: 'image/png', metadata: { sha256: 'x'.repeat(8), width: '12' } });
    const got = await store.get('crud/a', { maxBytes: CAP });
    assert.ok(got !== null);
    assertSameBytes(got.bytes, bytes, 'GET bytes');
    assert.equal(got.info.contentType, 'image/png');
    assert.equal(got.info.bytes, bytes.length);
    assert.equal(got.info.etag, md5(bytes));
    assert.deepEqual(got.info.metadata, { sha256: 'xxxxxxxx', width: '12' });
    const head = await store.head('crud/a');
    assert.deepEqual(head && { ...head, modifiedMs: 0 }, { ...got.info, modifiedMs: 0 });
    assert.ok(Math.abs((head?.modifiedMs ?? 0) - Date.now()) < 10 * 60_000, 'modified now (clocks of one machine)');
    await store.delete('crud/a');
    assert.equal(await store.head('crud/a'), null);
    assert.equal(await store.get('crud/a', { maxBytes: CAP }), null);
    assert.equal(await store.open('crud/a'), null);
    await store.delete('crud/a');
  });

  it('a streamed body is stored whole (checksum mode Ceph accepts); open streams it back', async () => {
    const bytes = randomBytes(300 * 1024);
    await store.put('stream/a', Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]), { contentType: 'image/jpeg', bytes: bytes.length });
    const opened = await store.open('stream/a');
    assert.ok(opened !== null);
    const chunks: Buffer[] = [];
    for await (const chunk of opened.body) chunks.push(chunk as Buffer);
    assertSameBytes(Buffer.concat(chunks), bytes, 'streamed GET');
    assert.equal(opened.info.contentType, 'image/jpeg');
    assert.equal(opened.range, null);
    assert.equal(opened.info.bytes, bytes.length);

    // A range: only its bytes come back; the facts still give the whole object's size.
    const part = await store.open('stream/a', { range: { start: 1000, end: 1999 } });
    assert.ok(part !== null);
    const partChunks: Buffer[] = [];
    for await (const chunk of part.body) partChunks.push(chunk as Buffer);
    assertSameBytes(Buffer.concat(partChunks), bytes.subarray(1000, 2000), 'ranged GET');
    assert.deepEqual(part.range, { start: 1000, end: 1999 });
    assert.equal(part.info.bytes, bytes.length);
    assert.equal(part.info.etag, opened.info.etag);
  });

  it('a stream body without its length is refused before any request', async () => {
    await assert.rejects(store.put('stream/nolength', Readable.from([Buffer.from('x')]), { contentType: 'image/jpeg' }), TypeError);
  });

  it('an original\'s facts round trip through its object\'s metadata', async () => {
    const bytes = randomBytes(2048);
    const facts: ImageMetadata = {
      sourceUrl: 'https://bücher.example/bild ü.png?x=1&y=%20',
      contentType: 'image/png',
      originContentType: 'image/png; charset=binary',
      bytes: bytes.length,
      width: 32,
      height: 16,
      frames: 1,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      fetchedAt: '2026-12-07T14:00:00.000Z',
    };
    await store.put('facts/a', bytes, { contentType: facts.contentType, metadata: originalObjectMetadata(facts) });
    const head = await store.head('facts/a');
    assert.ok(head !== null);
    assert.deepEqual(originalFactsOf(head.metadata, head), facts);
  });

  it('get refuses an object past its cap, before or while reading; exactly the cap is fine', async () => {
    const bytes = randomBytes(64 * 1024);
    await store.put('cap/a', bytes, { contentType: 'image/gif' });
    await rejectsWith(store.get('cap/a', { maxBytes: bytes.length - 1 }), 'storage_failed', /over the cap/);
    const got = await store.get('cap/a', { maxBytes: bytes.length });
    assert.equal(got?.bytes.length, bytes.length);
  });

  it('list: by prefix, in name order, across pages, names without the store prefix; nothing outside the prefix', async () => {
    const names = Array.from({ length: 7 }, (_, index) => `list/a/${String(index).padStart(2, '0')}`);
    await Promise.all([...names, 'list/b/x', 'list/b/y'].map((name) => store.put(name, Buffer.from(name), { contentType: 'image/png' })));
    await storeWith({ prefix: '' }).put('list/a/outside-the-prefix', Buffer.from('x'), { contentType: 'image/png' });
    const listed = [];
    for await (const item of store.list('list/a/', { pageSize: 3 })) listed.push(item);
    assert.deepEqual(listed.map((item) => item.name), names);
    assert.deepEqual(listed.map((item) => item.bytes), names.map((name) => name.length));
    assert.deepEqual(listed.map((item) => item.etag), names.map((name) => md5(Buffer.from(name))));
    const all = [];
    for await (const item of store.list('list/')) all.push(item.name);
    assert.equal(all.length, 9);
    const none = [];
    for await (const item of store.list('list/none/')) none.push(item);
    assert.deepEqual(none, []);
  });

  it('create: If-None-Match * is honoured; of concurrent creates exactly one wins and its bytes stay', async () => {
    assert.equal(await store.create('create/a', Buffer.from('first'), { contentType: 'image/png' }), 'created');
    assert.equal(await store.create('create/a', Buffer.from('second'), { contentType: 'image/png' }), 'exists');
    assert.equal((await store.get('create/a', { maxBytes: CAP }))?.bytes.toString(), 'first');
    const bodies = Array.from({ length: 12 }, (_, index) => Buffer.from(`writer ${index}`));
    const outcomes = await Promise.all(bodies.map((body) => store.create('create/race', body, { contentType: 'image/png' })));
    const winners = outcomes.flatMap((outcome, index) => (outcome === 'created' ? [index] : []));
    assert.equal(winners.length, 1, `one winner, got ${outcomes.join(',')}`);
    assert.equal((await store.get('create/race', { maxBytes: CAP }))?.bytes.toString(), `writer ${winners[0]}`);
  });

  it('an upload cut short midway leaves nothing: no new object, an old one untouched', async () => {
    const bytes = randomBytes(512 * 1024);
    const started = Date.now();
    await assert.rejects(
      store.put('partial/new', streamCutShort(bytes, 128 * 1024), { contentType: 'image/jpeg', bytes: bytes.length }),
      /source cut short/,
    );
    // At once, not at the call's deadline (10 s): the source's failure abandons the upload.
    assert.ok(Date.now() - started < 8_000, `abandoned at once, took ${Date.now() - started} ms`);
    assert.equal(await store.head('partial/new'), null);

    const old = randomBytes(1024);
    await store.put('partial/old', old, { contentType: 'image/png' });
    await assert.rejects(
      store.put('partial/old', streamCutShort(bytes, 128 * 1024), { contentType: 'image/jpeg', bytes: bytes.length }),
      /source cut short/,
    );
    const kept = await store.get('partial/old', { maxBytes: CAP });
    assert.ok(kept !== null);
    assertSameBytes(kept.bytes, old, 'the old object');
    assert.equal(kept.info.contentType, 'image/png');
  });

  it('a caller abandoning an upload midway (its signal) leaves nothing', async () => {
    const bytes = randomBytes(512 * 1024);
    const abandon = new AbortController();
    let pushed = false;
    const body = new Readable({
      read() {
        if (pushed) return; // the rest never comes: the caller gives up first
        pushed = true;
        this.push(bytes.subarray(0, 64 * 1024));
        setTimeout(() => abandon.abort(new Error('client went away')), 200);
      },
    });
    await assert.rejects(store.put('abandoned/a', body, { contentType: 'image/jpeg', bytes: bytes.length, signal: abandon.signal }), /client went away/);
    assert.equal(await store.head('abandoned/a'), null);
  });

  it('wrong credentials: storage_denied naming the access key id', async () => {
    await rejectsWith(
      storeWith({ credentials: { accessKeyId: 'AKWRONGKEY', secretAccessKey: 'nope' } }).head('crud/a'),
      'storage_denied',
      /access key AKWRONGKEY/,
    );
    await rejectsWith(
      storeWith({ credentials: { accessKeyId: gateway.credentials.accessKeyId, secretAccessKey: 'wrong secret' } }).get('stream/a', { maxBytes: CAP }),
      'storage_denied',
      new RegExp(`SignatureDoesNotMatch HTTP 403; access key ${gateway.credentials.accessKeyId}`),
    );
  });

  it('a missing bucket: storage_failed naming it', async () => {
    await rejectsWith(storeWith({ bucket: 'no-such-bucket' }).put('x', Buffer.from('x'), { contentType: 'image/png' }), 'storage_failed', /NoSuchBucket/);
  });

  it('a hung gateway (SIGSTOP): storage_unavailable after the call deadline, never a hang; fine again once it answers', async () => {
    const impatient = storeWith({ callTimeoutMs: 1500, maxAttempts: 1 });
    await impatient.put('hung/a', Buffer.from('before'), { contentType: 'image/png' });
    gateway.pauseGateway();
    const started = Date.now();
    try {
      await rejectsWith(impatient.get('hung/a', { maxBytes: CAP }), 'storage_unavailable', /no answer within 1500 ms/);
      await rejectsWith(impatient.put('hung/b', Buffer.from('x'), { contentType: 'image/png' }), 'storage_unavailable', /no answer within 1500 ms/);
    } finally {
      gateway.resumeGateway();
    }
    // Two calls of 1.5 s each; the slack is for a loaded machine.
    assert.ok(Date.now() - started < 15_000, `bounded by the deadlines, took ${Date.now() - started} ms`);
    assert.equal((await impatient.get('hung/a', { maxBytes: CAP }))?.bytes.toString(), 'before');
  });

  it('a stopped gateway: storage_unavailable quickly (refused, not timed out); back to normal when it returns', async () => {
    await store.put('down/a', Buffer.from('kept'), { contentType: 'image/png' });
    await gateway.stopGateway();
    const started = Date.now();
    await rejectsWith(store.head('down/a'), 'storage_unavailable', /ECONNREFUSED/);
    await rejectsWith(store.put('down/b', Buffer.from('x'), { contentType: 'image/png' }), 'storage_unavailable', /ECONNREFUSED/);
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 10_000, `refusals with their retries take well under the call deadline, took ${elapsed} ms`);
    await gateway.startGateway();
    assert.equal((await store.get('down/a', { maxBytes: CAP }))?.bytes.toString(), 'kept');
  });
});
