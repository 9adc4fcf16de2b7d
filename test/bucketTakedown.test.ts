// Takedowns and the tree commands on an S3 bucket (storage.type "s3") against a real Ceph
// RADOS Gateway on loopback (test/rgwHarness.ts): the blocklist object's watcher
// (server/takedown/bucketBlocklist.ts), its compare-and-swap, and the built commands
// purge, purge --block, block, unblock, stats and check (`npm run build` first). One
// gateway for the file; each case under a storage.prefix of its own.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { storageKey } from '../server/contract/layout.js';
import { isImageproxyError } from '../server/errors.js';
import { originalObjectMetadata, variantObjectMetadata } from '../server/storage/objectMetadata.js';
import { BLOCKLIST_OBJECT_NAME, imageObjectName } from '../server/storage/objectNames.js';
import type { ObjectStore } from '../server/storage/objectStore.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import type { AuditRecord } from '../server/takedown/audit.js';
import { addEntries, type BlockEntry, type Blocklist } from '../server/takedown/blocklist.js';
import { readBucketAuditLog } from '../server/takedown/bucketAudit.js';
import { readBucketBlocklist, updateBucketBlocklist, watchBucketBlocklist } from '../server/takedown/bucketBlocklist.js';
import { sha256Hex } from '../server/tree/originals.js';
import { lines, runCli, startCli, finishCli, type CliRun } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, until } from './helpers.js';
import { migrationImages, type MigrationImages } from './migrationTree.js';
import { freePort } from './nginxHarness.js';
import { cephMissing, gatewayCliEnv, gatewayStoreSettings, startGateway, type RunningGateway } from './rgwHarness.js';

const SECRET = 's3cr3t-for-bucket-tests';

/** A store that counts the calls made through it: the real store underneath, nothing faked. */
class CountingStore implements ObjectStore {
  readonly calls = { getChanged: 0, conditional: 0, unchanged: 0 };
  /** Conditional writes that lost: another writer's came first. */
  lostRaces = 0;
  constructor(private readonly inner: ObjectStore) {}
  put: ObjectStore['put'] = (...args) => this.inner.put(...args);
  create: ObjectStore['create'] = async (...args) => {
    const answer = await this.inner.create(...args);
    if (answer === 'exists') this.lostRaces += 1;
    return answer;
  };
  replace: ObjectStore['replace'] = async (...args) => {
    const answer = await this.inner.replace(...args);
    if (answer === 'changed') this.lostRaces += 1;
    return answer;
  };
  get: ObjectStore['get'] = (...args) => this.inner.get(...args);
  open: ObjectStore['open'] = (...args) => this.inner.open(...args);
  head: ObjectStore['head'] = (...args) => this.inner.head(...args);
  delete: ObjectStore['delete'] = (...args) => this.inner.delete(...args);
  list: ObjectStore['list'] = (...args) => this.inner.list(...args);
  getChanged: ObjectStore['getChanged'] = async (name, etag, options) => {
    this.calls.getChanged += 1;
    if (etag !== null) this.calls.conditional += 1;
    const answer = await this.inner.getChanged(name, etag, options);
    if (answer === 'unchanged') this.calls.unchanged += 1;
    return answer;
  };
}

function hostEntry(host: string): BlockEntry {
  return { kind: 'host', value: host, at: '2026-01-01T00:00:00.000Z', by: 'test' };
}

const addHost = (host: string) => (list: Blocklist) => ({ list: addEntries(list, [hostEntry(host)]).list, result: undefined });

interface PlantedImage {
  url: string;
  key: string;
  /** Object names: original, source-format thumbnail, WebP class object. */
  names: string[];
  originalBytes: Buffer;
}

describe('takedowns and the tree commands on a bucket (real Ceph RGW)', { skip: cephMissing() ?? false }, () => {
  let gateway: RunningGateway;
  let work: string;
  let images: MigrationImages;
  const stores: S3ObjectStore[] = [];

  const storeAt = (prefix: string): S3ObjectStore => {
    const store = new S3ObjectStore(gatewayStoreSettings(gateway, prefix));
    stores.push(store);
    return store;
  };

  const envOf = (overrides: Record<string, string> = {}): Record<string, string> => gatewayCliEnv(gateway, work, overrides);

  const configFor = async (prefix: string, endpoint = gateway.endpoint): Promise<string> => {
    const path = join(work, `${prefix.replace(/\W/g, '_')}-${endpoint.replace(/\W/g, '_')}.json`);
    const config = { root: join(work, 'root'), secrets: [SECRET], storage: { type: 's3', endpoint, bucket: gateway.bucket, prefix } };
    await writeFile(path, JSON.stringify(config), { mode: 0o600 });
    return path;
  };

  const cli = (config: string, args: string[], env: Record<string, string> = {}): Promise<CliRun> =>
    runCli([...args, '--config', config], { cwd: work, env: envOf(env), timeoutMs: 120_000 });

  const namesIn = async (store: ObjectStore, prefix = ''): Promise<string[]> => {
    const names: string[] = [];
    for await (const listed of store.list(prefix)) names.push(listed.name);
    return names;
  };

  const auditOf = async (store: ObjectStore): Promise<AuditRecord[]> => {
    const records: AuditRecord[] = [];
    for await (const { line } of readBucketAuditLog(store)) records.push(JSON.parse(line) as AuditRecord);
    return records;
  };

  /** An original (PNG, its facts as metadata), a `150x` JPEG thumbnail and a WebP class object, as the service stores them. */
  const plant = async (store: ObjectStore, path: string, bucket = 'i'): Promise<PlantedImage> => {
    const url = `https://origin.test/${path}`;
    const key = storageKey(Buffer.from(url));
    const originalBytes = Buffer.concat([images.original, Buffer.from(path)]);
    const facts = {
      sourceUrl: url,
      contentType: 'image/png',
      originContentType: 'image/png',
      bytes: originalBytes.length,
      width: 40,
      height: 30,
      frames: 1,
      sha256: sha256Hex(originalBytes),
      fetchedAt: '2026-01-02T03:04:05.000Z',
    };
    const names = [imageObjectName(bucket, key, key), imageObjectName(bucket, key, `${key}.150x`), imageObjectName(bucket, key, `${key}.150x.webp`)];
    await store.put(names[0] ?? '', originalBytes, { contentType: 'image/png', metadata: originalObjectMetadata(facts) });
    const thumbnailRecord = { bytes: images.thumbnail.length, sha256: sha256Hex(images.thumbnail), contentType: 'image/jpeg' };
    await store.put(names[1] ?? '', images.thumbnail, { contentType: 'image/jpeg', metadata: variantObjectMetadata(thumbnailRecord) });
    const webpRecord = { bytes: images.webp.length, sha256: sha256Hex(images.webp), contentType: 'image/webp' };
    await store.put(names[2] ?? '', images.webp, { contentType: 'image/webp', metadata: variantObjectMetadata(webpRecord) });
    return { url, key, names, originalBytes };
  };

  before(async () => {
    [gateway, work, images] = await Promise.all([startGateway(), makeTempRoot('imageproxy-bucket-takedown-'), migrationImages()]);
  });

  after(async () => {
    for (const store of stores) store.close();
    await gateway?.stop();
    if (work !== undefined) await removeTempRoot(work);
  });

  describe("the store's conditional calls", () => {
    it('replace writes only over the version read (If-Match); getChanged answers unchanged while the ETag holds (If-None-Match)', async () => {
      const store = storeAt('conditional/');
      const type = { contentType: 'application/json' };
      assert.equal(await store.create('list', Buffer.from('v1'), type), 'created');
      const first = await store.get('list', { maxBytes: 100 });
      assert.ok(first !== null);
      assert.equal(await store.getChanged('list', first.info.etag, { maxBytes: 100 }), 'unchanged');
      assert.equal(await store.replace('list', Buffer.from('v2'), type, first.info.etag), 'replaced');
      assert.equal(await store.replace('list', Buffer.from('v3'), type, first.info.etag), 'changed', 'a stale ETag loses');
      const second = await store.getChanged('list', first.info.etag, { maxBytes: 100 });
      assert.ok(second !== null && second !== 'unchanged');
      assert.equal(second.bytes.toString(), 'v2', 'the loser left the object as it was');
      assert.equal(await store.getChanged('list', second.info.etag, { maxBytes: 100 }), 'unchanged');
      await store.delete('list');
      assert.equal(await store.replace('list', Buffer.from('v4'), type, second.info.etag), 'changed', 'removed since: no object made');
      assert.equal(await store.getChanged('list', second.info.etag, { maxBytes: 100 }), null);
      assert.equal(await store.get('list', { maxBytes: 100 }), null);
    });
  });

  describe('the blocklist object', () => {
    it('a watcher does one conditional GET per recheck period, however many requests ask', async () => {
      const writer = storeAt('watch-count/');
      await updateBucketBlocklist(writer, addHost('first.test'));
      let clock = 1_000_000;
      const counting = new CountingStore(storeAt('watch-count/'));
      const watcher = watchBucketBlocklist(counting, { recheckMs: 1000, now: () => clock });
      for (let request = 0; request < 20; request += 1) assert.equal((await watcher.current()).entries.length, 1);
      assert.deepEqual(counting.calls, { getChanged: 1, conditional: 0, unchanged: 0 }, 'the first request loads the list, the others use it');
      for (let period = 1; period <= 3; period += 1) {
        clock += 1000;
        for (let request = 0; request < 20; request += 1) await watcher.current();
        assert.deepEqual(counting.calls, { getChanged: 1 + period, conditional: period, unchanged: period }, `period ${period}: one If-None-Match GET, answered 304`);
      }
      await updateBucketBlocklist(writer, addHost('second.test'));
      clock += 999;
      assert.equal((await watcher.current()).entries.length, 1, 'within the period: the list as loaded');
      clock += 1;
      assert.deepEqual((await watcher.current()).entries.map((entry) => entry.value), ['first.test', 'second.test'], 'after the period: the new list');
      assert.equal(counting.calls.getChanged, 5);
    });

    it('a change made through another store is seen within recheckMs and some slack, in real time', async (t) => {
      const writer = storeAt('watch-real/');
      const watcher = watchBucketBlocklist(storeAt('watch-real/'), { recheckMs: 200 });
      assert.equal((await watcher.current()).entries.length, 0, 'no object: an empty list');
      await updateBucketBlocklist(writer, addHost('late.test'));
      const writtenAt = performance.now();
      await until(async () => (await watcher.current()).entries.some((entry) => entry.value === 'late.test'), { message: 'the watcher sees the new host', timeoutMs: 10_000, intervalMs: 5 });
      const delay = performance.now() - writtenAt;
      t.diagnostic(`seen ${delay.toFixed(0)} ms after the write (recheckMs 200)`);
      assert.ok(delay < 200 + 2000, `seen within recheckMs + 2 s, took ${delay.toFixed(0)} ms`);
    });

    it('eight concurrent changes through eight stores all land (If-Match compare-and-swap, retried)', async (t) => {
      const hosts = Array.from({ length: 8 }, (_, index) => `race${index}.test`);
      const writers = hosts.map(() => new CountingStore(storeAt('race/')));
      await Promise.all(hosts.map((host, index) => updateBucketBlocklist(writers[index] as CountingStore, addHost(host))));
      const { list } = await readBucketBlocklist(storeAt('race/'));
      assert.deepEqual(list.entries.map((entry) => entry.value).sort(), hosts);
      const lost = writers.reduce((sum, writer) => sum + writer.lostRaces, 0);
      t.diagnostic(`${lost} lost race(s), each retried on the newer list`);
      assert.ok(lost > 0, 'eight writers at once: some lost a race and applied their change again');
    });

    it('an object that does not parse is refused (500 internal), and not rewritten by a command', async () => {
      const store = storeAt('garbled/');
      await store.put(BLOCKLIST_OBJECT_NAME, Buffer.from('{"version":1,"entries":[{"kind":"key"'), { contentType: 'application/json' });
      const watcher = watchBucketBlocklist(store);
      await assert.rejects(watcher.current(), (error) => isImageproxyError(error) && error.code === 'internal' && /does not|not valid JSON/.test(error.detail ?? ''));
      await assert.rejects(updateBucketBlocklist(store, addHost('x.test')), /not valid JSON/);
    });

    it('the gateway hung: the check waits for the store deadline, then the loaded list stays in force', async () => {
      const writer = storeAt('hung/');
      await updateBucketBlocklist(writer, addHost('kept.test'));
      const store = new S3ObjectStore({ ...gatewayStoreSettings(gateway, 'hung/'), callTimeoutMs: 1000 });
      stores.push(store);
      let clock = 0;
      const warnings: string[] = [];
      const logger = { warn: (_fields: object, message: string) => void warnings.push(message), info: () => {} };
      const watcher = watchBucketBlocklist(store, { now: () => clock, logger });
      assert.equal((await watcher.current()).entries.length, 1);
      gateway.pauseGateway();
      try {
        clock += 1000;
        assert.deepEqual((await watcher.current()).entries.map((entry) => entry.value), ['kept.test']);
        assert.equal(warnings.length, 1);
      } finally {
        gateway.resumeGateway();
      }
    });

    it('the gateway gone: a loaded list stays in force (logged once), a list never loaded fails closed', async () => {
      const writer = storeAt('outage/');
      await updateBucketBlocklist(writer, addHost('kept.test'));
      let clock = 0;
      const warnings: string[] = [];
      const infos: string[] = [];
      const logger = { warn: (_fields: object, message: string) => void warnings.push(message), info: (_fields: object, message: string) => void infos.push(message) };
      const loaded = watchBucketBlocklist(storeAt('outage/'), { recheckMs: 1000, now: () => clock, logger });
      assert.equal((await loaded.current()).entries.length, 1);
      await gateway.stopGateway();
      try {
        for (let period = 1; period <= 3; period += 1) {
          clock += 1000;
          assert.deepEqual((await loaded.current()).entries.map((entry) => entry.value), ['kept.test'], `period ${period}: the last list`);
        }
        assert.equal(warnings.length, 1, 'one warning for the outage');
        const fresh = watchBucketBlocklist(storeAt('outage/'), { logger });
        await assert.rejects(fresh.current(), (error) => isImageproxyError(error) && error.code === 'storage_unavailable' && /never loaded/.test(error.detail ?? ''));
      } finally {
        await gateway.startGateway();
      }
      clock += 1000;
      assert.equal((await loaded.current()).entries.length, 1);
      assert.equal(infos.length, 1, 'the end of the outage said once');
    });
  });

  describe('the commands', () => {
    const PREFIX = 'site/';
    let config: string;
    let store: S3ObjectStore;
    let purged: PlantedImage;
    let kept: PlantedImage;
    let blocked: PlantedImage;

    before(async () => {
      config = await configFor(PREFIX);
      store = storeAt(PREFIX);
      [purged, kept, blocked] = await Promise.all([plant(store, 'purged.png'), plant(store, 'kept.png'), plant(store, 'blocked.png')]);
    });

    it('two block commands at once (two processes) both land in the blocklist object', async () => {
      const runs = await Promise.all(
        ['one.test', 'two.test'].map((host) => finishCli(startCli(['block', '--host', host, '--config', config], { cwd: work, env: envOf() }), 120_000)),
      );
      for (const run of runs) assert.equal(run.code, 0, run.stderr);
      const { list } = await readBucketBlocklist(store);
      assert.deepEqual(list.entries.filter((entry) => entry.kind === 'host').map((entry) => entry.value).sort(), ['one.test', 'two.test']);
      const audit = await auditOf(store);
      assert.deepEqual(audit.map((record) => `${record.action} ${record.host ?? ''}`).sort(), ['block one.test', 'block two.test']);
    });

    it('purge removes every object of the image and leaves the others', async () => {
      const run = await cli(config, ['purge', purged.url]);
      assert.equal(run.code, 0, run.stderr);
      const left = await namesIn(store, 'i/');
      for (const name of purged.names) assert.ok(!left.includes(name), `${name} removed`);
      for (const name of [...kept.names, ...blocked.names]) assert.ok(left.includes(name), `${name} kept`);
      const removedLines = lines(run.stdout).filter((line) => line.startsWith('removed '));
      assert.deepEqual(removedLines.sort(), purged.names.map((name) => `removed s3://${gateway.bucket}/${PREFIX}${name}`).sort());
      const again = await cli(config, ['purge', purged.url]);
      assert.equal(again.code, 1, 'nothing left to purge');
    });

    it('purge --block records the key and digest in the object, waits, then removes; the audit objects come back in order', async (t) => {
      // Two nodes' watchers (stores of their own, the default recheck period): one asked
      // continuously, as a busy node's requests do, one idle until the command has exited.
      const busy = watchBucketBlocklist(storeAt(PREFIX));
      const idle = watchBucketBlocklist(storeAt(PREFIX));
      await Promise.all([busy.current(), idle.current()]);
      const hasBlock = (list: Blocklist): boolean => list.entries.some((entry) => entry.kind === 'key' && entry.value === blocked.key);
      let busySawAt: number | null = null;
      let asking = true;
      const requests = (async () => {
        while (asking && busySawAt === null) {
          if (hasBlock(await busy.current())) busySawAt = performance.now();
          else await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })();
      let run: CliRun;
      let exitedAt: number;
      try {
        run = await cli(config, ['purge', '--block', blocked.url, '--note', 'ticket 7']);
        exitedAt = performance.now();
        assert.equal(hasBlock(await idle.current()), true, 'the idle watcher: its first request after the exit');
        const idleSawAfterMs = performance.now() - exitedAt;
        await until(() => busySawAt !== null, { message: 'the busy watcher sees the block', timeoutMs: 10_000 });
        const busySawBeforeMs = exitedAt - (busySawAt ?? 0);
        t.diagnostic(`block propagation: the busy watcher had the key ${busySawBeforeMs.toFixed(0)} ms before purge --block exited; the idle one ${idleSawAfterMs.toFixed(0)} ms after`);
        assert.ok(busySawBeforeMs > -2000, `the busy watcher sees the block by the command's exit (2 s of slack on a loaded machine); ${busySawBeforeMs.toFixed(0)} ms before`);
      } finally {
        asking = false;
        await requests;
      }
      assert.equal(run.code, 0, run.stderr);
      const { list } = await readBucketBlocklist(store);
      assert.ok(list.entries.some((entry) => entry.kind === 'key' && entry.value === blocked.key && entry.note === 'ticket 7'));
      assert.ok(list.entries.some((entry) => entry.kind === 'digest' && entry.value === sha256Hex(blocked.originalBytes) && entry.key === blocked.key));
      const left = await namesIn(store, 'i/');
      for (const name of blocked.names) assert.ok(!left.includes(name), `${name} removed`);
      const audit = await auditOf(store);
      assert.deepEqual(
        audit.map((record) => record.action),
        ['block', 'block', 'purge', 'purge', 'block'],
        'the two host blocks, the purge and its rerun, the purge --block: in time order',
      );
      const last = audit.at(-1);
      assert.equal(last?.key, blocked.key);
      assert.deepEqual(last?.removed?.slice().sort(), blocked.names.slice().sort());
      assert.deepEqual(last?.digests, [sha256Hex(blocked.originalBytes)]);
    });

    it('unblock removes the key and its digests; a second unblock has nothing to do', async () => {
      const run = await cli(config, ['unblock', blocked.url]);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /unblocked key .* \(1 digest\(s\)\)/);
      const { list } = await readBucketBlocklist(store);
      assert.ok(!list.entries.some((entry) => entry.value === blocked.key || entry.key === blocked.key));
      assert.equal(list.entries.length, 2, 'the hosts stay');
      const again = await cli(config, ['unblock', blocked.url]);
      assert.equal(again.code, 1);
      assert.equal((await auditOf(store)).at(-1)?.action, 'unblock');
    });

    it('block --host removes what is stored from that host', async () => {
      const local = storeAt('hosts/');
      const hostConfig = await configFor('hosts/');
      await plant(local, 'from-host.png');
      const run = await cli(hostConfig, ['block', '--host', 'origin.test']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /blocked host origin\.test; removed 3 stored file\(s\)/);
      assert.deepEqual(await namesIn(local, 'i/'), []);
    });
  });

  it('stats counts what the bucket holds, by class and type, and the blocklist', async () => {
    const prefix = 'stats/';
    const store = storeAt(prefix);
    const planted = [await plant(store, 'a.png'), await plant(store, 'b.png'), await plant(store, 'c.png', 'f')];
    await updateBucketBlocklist(store, addHost('h.test'));
    const run = await cli(await configFor(prefix), ['stats', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as {
      complete: boolean;
      buckets: Record<string, { originals: number; thumbnails: number; bytes: number; originalBytes: number; thumbnailBytes: number; oldestFetch: string | null }>;
      formats: { total: { thumbnailsByClass: Record<string, { files: number; bytes: number }>; thumbnailsByType: Record<string, { files: number }>; originalsByType: Record<string, { files: number; bytes: number }> } };
      blocked: { host: number; total: number };
    };
    assert.equal(report.complete, true);
    const originalBytes = (image: PlantedImage): number => image.originalBytes.length;
    const [a, b, c] = planted as [PlantedImage, PlantedImage, PlantedImage];
    assert.equal(report.buckets.i?.originals, 2);
    assert.equal(report.buckets.i?.thumbnails, 4);
    assert.equal(report.buckets.i?.originalBytes, originalBytes(a) + originalBytes(b));
    assert.equal(report.buckets.i?.thumbnailBytes, 2 * (images.thumbnail.length + images.webp.length));
    assert.equal(report.buckets.f?.originals, 1);
    assert.equal(report.buckets.f?.bytes, originalBytes(c) + images.thumbnail.length + images.webp.length);
    assert.equal(report.buckets.i?.oldestFetch, '2026-01-02T03:04:05.000Z', "an original's fetch time is its metadata's");
    assert.deepEqual(report.formats.total.thumbnailsByClass.webp, { files: 3, bytes: 3 * images.webp.length, linked: 0 });
    assert.equal(report.formats.total.thumbnailsByClass.source?.files, 3);
    assert.equal(report.formats.total.thumbnailsByType.jpg?.files, 3);
    assert.deepEqual(report.formats.total.originalsByType.png, { files: 3, bytes: originalBytes(a) + originalBytes(b) + originalBytes(c) });
    assert.equal(report.blocked.host, 1);
    const table = await cli(await configFor(prefix), ['stats']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /thumbnails by class: source 3 .*webp 3/);
  });

  it('check finds an object altered behind its metadata; --repair deletes it', async () => {
    const prefix = 'check/';
    const store = storeAt(prefix);
    const config = await configFor(prefix);
    const [sound, altered] = [await plant(store, 'sound.png'), await plant(store, 'altered.png')];
    const clean = await cli(config, ['check']);
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    assert.match(clean.stdout, /^findings 0:/m);
    // Other bytes under the same metadata: what a bad copy or a hand edit leaves.
    const head = await store.head(altered.names[0] ?? '');
    assert.ok(head !== null);
    await store.put(altered.names[0] ?? '', Buffer.concat([images.original, Buffer.from('other bytes')]), { contentType: 'image/png', metadata: head.metadata });
    await store.put(altered.names[2] ?? '', images.thumbnail, { contentType: 'image/webp', metadata: (await store.head(altered.names[2] ?? ''))?.metadata ?? {} });
    const found = await cli(config, ['check']);
    assert.equal(found.code, 1, found.stderr);
    const findings = lines(found.stdout).filter((line) => line.startsWith('damaged-')).map((line) => line.split('\t').slice(0, 2).join(' '));
    assert.deepEqual(findings.sort(), [`damaged-original ${altered.names[0]}`, `damaged-thumbnail ${altered.names[2]}`]);
    const repaired = await cli(config, ['check', '--repair']);
    assert.equal(repaired.code, 0, repaired.stderr);
    const left = await namesIn(store, 'i/');
    assert.deepEqual(left.sort(), [...sound.names, altered.names[1] ?? ''].sort(), 'the damaged objects deleted, the rest kept');
    assert.equal((await cli(config, ['check'])).code, 0);
  });

  it('the gateway unreachable: exit 1, one line; credentials refused: exit 2, naming the bucket', async () => {
    const nowhere = await configFor('x/', `http://127.0.0.1:${await freePort()}`);
    for (const args of [['stats'], ['purge', 'https://origin.test/x.png'], ['unblock', '--host', 'a.test']]) {
      const run = await cli(nowhere, args);
      assert.equal(run.code, 1, `${args[0]}: ${run.stderr}`);
      assert.equal(lines(run.stderr).filter((line) => line.includes('storage unavailable')).length, 1, run.stderr);
    }
    const config = await configFor('x/');
    for (const args of [['check'], ['block', '--host', 'a.test']]) {
      const run = await cli(config, args, { AWS_SECRET_ACCESS_KEY: 'wrong-secret' });
      assert.equal(run.code, 2, `${args[0]}: ${run.stderr}`);
      assert.match(run.stderr, new RegExp(`${gateway.bucket}/x/`), 'names the bucket and the object');
      assert.match(run.stderr, /SignatureDoesNotMatch/);
    }
  });
});

