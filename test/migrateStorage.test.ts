// `imageproxy migrate-storage` (server/cli/migrateStorage.ts, server/ops/storageMigration.ts)
// against a real Ceph RADOS Gateway on loopback (test/rgwHarness.ts): one gateway for the
// file, each case under a storage.prefix of its own. Runs the built command (`npm run build`).
import assert from 'node:assert/strict';
import { chmod, chown, lstat, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { storageKey } from '../server/contract/layout.js';
import { originalFactsOf, variantRecordOfObject } from '../server/storage/objectMetadata.js';
import { BLOCKLIST_OBJECT_NAME } from '../server/storage/objectNames.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { addEntries } from '../server/takedown/blocklist.js';
import { blocklistPath, updateBlocklist } from '../server/takedown/blocklistStore.js';
import type { AuditRecord } from '../server/takedown/audit.js';
import { appendAuditRecord, auditLogPath } from '../server/takedown/auditStore.js';
import { appendBucketAuditRecord, readBucketAuditLog } from '../server/takedown/bucketAudit.js';
import { parseJsonObject } from '../server/tree/originals.js';
import { finishCli, lines, runCli, startCli, whyUserCannotRunCli, type CliRun } from './cliProcess.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, until } from './helpers.js';
import { migrationImages, plantMigrationTree, type MigrationImages, type PlantedKey } from './migrationTree.js';
import { cephMissing, gatewayCliEnv, gatewayStoreSettings, startGateway, withGatewayStopped, type RunningGateway } from './rgwHarness.js';

/** The user `nobody` (Debian's uid and gid). */
const NOBODY = 65_534;

const CAP = 16 * 1024 * 1024;
/** Report lines of a run: `reason\tsource\tdetail`, the summary and dry-run lines aside. */
function reportLines(run: CliRun): string[][] {
  return lines(run.stdout)
    .filter((line) => !line.startsWith('migrate-storage:') && !line.startsWith('would copy\t'))
    .map((line) => line.split('\t'));
}

/** `copied N, already there M, failed F, left behind L` of the summary line. */
function summaryOf(run: CliRun): { copied: number; present: number; failed: number; leftBehind: number } {
  const match = /(?:copied|would copy) (\d+), already there (\d+), failed (\d+), left behind (\d+)/.exec(run.stdout);
  assert.ok(match !== null, `a summary line in stdout; stderr: ${run.stderr.slice(-500)}`);
  return { copied: Number(match[1]), present: Number(match[2]), failed: Number(match[3]), leftBehind: Number(match[4]) };
}

/** `of them audit records: copied N, already there M` of the summary line. */
function auditSummaryOf(run: CliRun): { copied: number; present: number } {
  const match = /of them audit records: (?:copied|would copy) (\d+), already there (\d+)/.exec(run.stdout);
  assert.ok(match !== null, `the audit records' counts in the summary; stderr: ${run.stderr.slice(-500)}`);
  return { copied: Number(match[1]), present: Number(match[2]) };
}

/** The image object name of a tree file `i/a/b/{stem}.{ext}`. */
function objectNameOf(relativePath: string): string {
  return relativePath.slice(0, relativePath.lastIndexOf('.'));
}

describe('migrate-storage against a real Ceph RGW', { skip: cephMissing() ?? false }, () => {
  let gateway: RunningGateway;
  let work: string;
  let images: MigrationImages;
  const stores: S3ObjectStore[] = [];

  const storeAt = (prefix: string): S3ObjectStore => {
    const store = new S3ObjectStore(gatewayStoreSettings(gateway, prefix));
    stores.push(store);
    return store;
  };

  /** The environment of a run: the gateway's keys through the SDK's chain, nothing looked up beyond loopback. */
  const envOf = (overrides: Record<string, string> = {}): Record<string, string> => gatewayCliEnv(gateway, work, overrides);

  /** A config file for `root` and the gateway's bucket under `prefix`. */
  const configFor = async (name: string, root: string, prefix: string): Promise<string> => {
    const path = join(work, `${name}.json`);
    await writeFile(path, JSON.stringify({ root, storage: { endpoint: gateway.endpoint, bucket: gateway.bucket, prefix } }));
    return path;
  };

  const migrate = (config: string, args: string[], env: Record<string, string> = {}): Promise<CliRun> =>
    runCli(['migrate-storage', '--config', config, ...args], { cwd: work, env: envOf(env), timeoutMs: 180_000 });

  const objectNames = async (store: S3ObjectStore): Promise<string[]> => {
    const names: string[] = [];
    for await (const listed of store.list('')) names.push(listed.name);
    return names;
  };

  before(async () => {
    [gateway, work, images] = await Promise.all([startGateway(), makeTempRoot('imageproxy-migrate-'), migrationImages()]);
  });

  after(async () => {
    for (const store of stores) store.close();
    await gateway?.stop();
    if (work !== undefined) await removeTempRoot(work);
  });

  describe('a tree into the bucket and back', () => {
    let root: string;
    let planted: PlantedKey[];
    let config: string;
    let store: S3ObjectStore;
    let outside: string;
    const PREFIX = 'site/';

    before(async () => {
      root = join(work, 'tree');
      planted = await plantMigrationTree(root, 6, images, { classFiles: true });
      // A symlink where a thumbnail belongs, pointing at an image outside the tree: never followed.
      outside = join(work, 'outside.jpg');
      await writeFile(outside, images.thumbnail);
      const linkedKey = storageKey(Buffer.from('https://origin.test/symlinked.jpg'));
      await mkdir(join(root, 'i', linkedKey[0] ?? '', linkedKey[1] ?? ''), { recursive: true });
      await symlink(outside, join(root, 'i', linkedKey[0] ?? '', linkedKey[1] ?? '', `${linkedKey}.jpg`));
      const entry = { kind: 'key' as const, value: storageKey(Buffer.from('https://origin.test/taken-down.jpg')), at: '2026-01-01T00:00:00.000Z', by: 'test' };
      await updateBlocklist(root, (list) => ({ list: addEntries(list, [entry]).list, result: undefined }));
      config = await configFor('tree', root, PREFIX);
      store = storeAt(PREFIX);
    });

    it('--dry-run lists every copy and writes nothing', async () => {
      const run = await migrate(config, ['--to', 's3', '--dry-run']);
      assert.equal(run.code, 0, run.stderr);
      const planned = lines(run.stdout).filter((line) => line.startsWith('would copy\t'));
      const files = planted.flatMap((entry) => entry.files);
      assert.equal(planned.length, files.length + 1, 'every image and the blocklist');
      for (const file of files) assert.ok(planned.includes(`would copy\t${file}\t${objectNameOf(file)}`), file);
      assert.deepEqual(await objectNames(store), []);
    });

    it('copies every original with its facts, every thumbnail, the blocklist; the symlink stays behind', async () => {
      const run = await migrate(config, ['--to', 's3']);
      assert.equal(run.code, 0, run.stderr);
      const files = planted.flatMap((entry) => entry.files);
      assert.deepEqual(summaryOf(run), { copied: files.length + 1, present: 0, failed: 0, leftBehind: 1 });
      const report = reportLines(run);
      assert.equal(report.length, 1);
      assert.equal(report[0]?.[0], 'not_regular');
      assert.match(report[0]?.[2] ?? '', /symbolic link/);

      for (const { key, files: keyFiles } of planted) {
        const sidecar = parseJsonObject(await readFile(join(root, 'i', key[0] ?? '', key[1] ?? '', `${key}.json`), 'utf8'));
        assert.ok(sidecar !== null);
        for (const file of keyFiles) {
          const got = await store.get(objectNameOf(file), { maxBytes: CAP });
          assert.ok(got !== null, `${file} has its object`);
          assertSameBytes(got.bytes, await readFile(join(root, file)), file);
          const ext = file.slice(file.lastIndexOf('.') + 1);
          assert.equal(got.info.contentType, { png: 'image/png', jpg: 'image/jpeg', webp: 'image/webp' }[ext], file);
          if (file === keyFiles[0]) {
            const facts: Record<string, unknown> = { ...sidecar };
            delete facts.variants;
            assert.deepEqual(originalFactsOf(got.info.metadata, got.info), facts, `${file}: the sidecar's facts ride on the object`);
          } else {
            const record = variantRecordOfObject(got.info.metadata, got.info);
            const recordName = file.split('/').at(-1)?.split('.').slice(1, -1).join('.') ?? '';
            assert.deepEqual(record, (sidecar.variants as Record<string, unknown>)[recordName], `${file}: its record`);
          }
        }
      }
      // The hard-linked class file is an object of its own holding the JPEG thumbnail's bytes.
      const linked = planted[1]?.files[2] ?? '';
      assert.match(linked, /\.150x\.avif\.jpg$/);
      assert.equal((await lstat(join(root, linked))).nlink, 2);
      const blocklist = await store.get(BLOCKLIST_OBJECT_NAME, { maxBytes: CAP });
      assertSameBytes(blocklist?.bytes ?? Buffer.alloc(0), await readFile(blocklistPath(root)), 'blocklist');
      const names = await objectNames(store);
      assert.equal(names.length, files.length + 1, 'nothing else: no sidecar, no symlinked file');
    });

    it('a rerun copies nothing', async () => {
      const run = await migrate(config, ['--to', 's3']);
      assert.equal(run.code, 0, run.stderr);
      const files = planted.flatMap((entry) => entry.files);
      assert.deepEqual(summaryOf(run), { copied: 0, present: files.length + 1, failed: 0, leftBehind: 1 });
    });

    it('--verify catches an object altered behind its back and copies it again', async () => {
      const file = planted[2]?.files[1] ?? '';
      const name = objectNameOf(file);
      const before = await store.head(name);
      assert.ok(before !== null);
      // Same metadata (digest included), other bytes: only reading it back tells.
      const altered = Buffer.from(await readFile(join(root, file)));
      altered[altered.length - 3] = (altered[altered.length - 3] ?? 0) ^ 0xff;
      await store.put(name, altered, { contentType: before.contentType, metadata: before.metadata });

      const plain = await migrate(config, ['--to', 's3']);
      assert.equal(summaryOf(plain).copied, 0, 'without --verify the digest in the metadata is trusted');
      const run = await migrate(config, ['--to', 's3', '--verify']);
      assert.equal(run.code, 1, run.stderr);
      const report = reportLines(run).filter((line) => line[0] !== 'not_regular');
      assert.deepEqual(report.map((line) => line.slice(0, 2)), [['altered', name]]);
      assert.equal(summaryOf(run).copied, 1);
      const got = await store.get(name, { maxBytes: CAP });
      assertSameBytes(got?.bytes ?? Buffer.alloc(0), await readFile(join(root, file)), 'copied again');
      const again = await migrate(config, ['--to', 's3', '--verify']);
      assert.equal(again.code, 0, again.stderr);
    });

    it('back into a fresh tree: byte-identical images, the same sidecars; a rerun copies nothing', async () => {
      const fresh = join(work, 'fresh');
      const back = await configFor('fresh', fresh, PREFIX);
      const dryRun = await migrate(back, ['--to', 'tree', '--dry-run']);
      assert.equal(dryRun.code, 0, dryRun.stderr);
      assert.equal(lines(dryRun.stdout).filter((line) => line.startsWith('would copy\t')).length, planted.flatMap((entry) => entry.files).length + 1);
      await assert.rejects(lstat(fresh), { code: 'ENOENT' }, 'a dry run makes no tree');
      const run = await migrate(back, ['--to', 'tree', '--verify']);
      assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
      const files = planted.flatMap((entry) => entry.files);
      assert.deepEqual(summaryOf(run), { copied: files.length + 1, present: 0, failed: 0, leftBehind: 0 });
      for (const { key, files: keyFiles } of planted) {
        for (const file of keyFiles) assertSameBytes(await readFile(join(fresh, file)), await readFile(join(root, file)), file);
        // A class file that was a hard link of its source thumbnail is one again (one inode, two names).
        const [, thumbnail = '', classFile = ''] = keyFiles;
        const linkedBefore = (await lstat(join(root, classFile))).ino === (await lstat(join(root, thumbnail))).ino;
        const linkedAfter = (await lstat(join(fresh, classFile))).ino === (await lstat(join(fresh, thumbnail))).ino;
        assert.equal(linkedAfter, linkedBefore, `${classFile} ${linkedBefore ? 'is' : 'is not'} a hard link of ${thumbnail}`);
        const sidecarPath = join('i', key[0] ?? '', key[1] ?? '', `${key}.json`);
        assert.deepEqual(
          parseJsonObject(await readFile(join(fresh, sidecarPath), 'utf8')),
          parseJsonObject(await readFile(join(root, sidecarPath), 'utf8')),
          sidecarPath,
        );
      }
      assertSameBytes(await readFile(blocklistPath(fresh)), await readFile(blocklistPath(root)), 'blocklist');
      const rerun = await migrate(back, ['--to', 'tree']);
      assert.equal(rerun.code, 0, rerun.stderr);
      assert.deepEqual(summaryOf(rerun), { copied: 0, present: files.length + 1, failed: 0, leftBehind: 0 });
    });
  });

  it('the audit log both ways: a line an object, the objects appended in time order; reruns copy nothing', async () => {
    const root = join(work, 'audit');
    await plantMigrationTree(root, 1, images, { classFiles: false });
    const record = (time: string, target: string): AuditRecord => ({ time, action: 'purge', target, user: 'admin', argv: ['purge', target] });
    // Out of time order in the log, and two of one millisecond: each its own object.
    const treeRecords = [
      record('2026-03-01T10:00:00.000Z', 'https://origin.test/a.jpg'),
      record('2026-03-01T10:00:00.000Z', 'https://origin.test/b.jpg'),
      record('2026-02-01T09:00:00.000Z', 'https://origin.test/c.jpg'),
    ];
    for (const entry of treeRecords) await appendAuditRecord(root, entry);
    const treeLines = lines(await readFile(auditLogPath(root), 'utf8'));
    const store = storeAt('audit/');
    // A record a takedown command wrote into the bucket (a random name of its own).
    const bucketRecord = record('2026-02-15T12:00:00.000Z', 'https://origin.test/d.jpg');
    await appendBucketAuditRecord(store, bucketRecord);
    const auditObjects = async (): Promise<Array<{ name: string; line: string }>> => {
      const found: Array<{ name: string; line: string }> = [];
      for await (const object of readBucketAuditLog(store)) found.push(object);
      return found;
    };
    const config = await configFor('audit', root, 'audit/');

    const dryRun = await migrate(config, ['--to', 's3', '--dry-run']);
    assert.equal(dryRun.code, 0, dryRun.stderr);
    const planned = lines(dryRun.stdout).filter((line) => line.startsWith('would copy\t.imageproxy/audit.log:'));
    assert.deepEqual(planned.map((line) => line.split('\t')[1]), ['.imageproxy/audit.log:1', '.imageproxy/audit.log:2', '.imageproxy/audit.log:3']);
    assert.deepEqual(auditSummaryOf(dryRun), { copied: 3, present: 0 });
    assert.equal((await auditObjects()).length, 1, 'a dry run writes nothing');

    const run = await migrate(config, ['--to', 's3']);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(summaryOf(run), { copied: 2 + 3, present: 0, failed: 0, leftBehind: 0 });
    assert.deepEqual(auditSummaryOf(run), { copied: 3, present: 0 });
    const objects = await auditObjects();
    assert.equal(objects.length, 4);
    for (const [index, line] of treeLines.entries()) {
      const copies = objects.filter((object) => object.line === `${line}\n`);
      assert.equal(copies.length, 1, `line ${index + 1} is one object`);
      assert.match(copies[0]?.name ?? '', new RegExp(`^\\.imageproxy/audit/${(treeRecords[index]?.time ?? '').replace(/\./g, '\\.')}-[0-9a-f]{16}\\.json$`));
    }
    // The listing reads them in time order.
    const times = objects.map((object) => (JSON.parse(object.line) as AuditRecord).time);
    assert.deepEqual(times, [...times].sort());

    const rerun = await migrate(config, ['--to', 's3']);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.deepEqual(auditSummaryOf(rerun), { copied: 0, present: 3 });
    assert.equal(summaryOf(rerun).copied, 0);
    assert.equal((await auditObjects()).length, 4);

    // Back into a fresh tree: every record, in time order.
    const fresh = join(work, 'audit-fresh');
    const back = await configFor('audit-fresh', fresh, 'audit/');
    const toTree = await migrate(back, ['--to', 'tree']);
    assert.equal(toTree.code, 0, toTree.stderr);
    assert.deepEqual(auditSummaryOf(toTree), { copied: 4, present: 0 });
    assert.deepEqual(summaryOf(toTree), { copied: 2 + 4, present: 0, failed: 0, leftBehind: 0 });
    const freshLines = lines(await readFile(auditLogPath(fresh), 'utf8'));
    assert.deepEqual(freshLines, objects.map((object) => object.line.trimEnd()), 'the objects appended in listing (time) order');
    assert.deepEqual([...freshLines].sort(), [...treeLines, JSON.stringify(bucketRecord)].sort());
    const toTreeAgain = await migrate(back, ['--to', 'tree']);
    assert.equal(toTreeAgain.code, 0, toTreeAgain.stderr);
    assert.deepEqual(auditSummaryOf(toTreeAgain), { copied: 0, present: 4 });
    assert.equal(lines(await readFile(auditLogPath(fresh), 'utf8')).length, 4, 'a rerun appends nothing');

    // Into the first tree: only the bucket's own record is new there; copied up again, it is
    // found under its random name and not copied twice.
    const intoFirst = await migrate(config, ['--to', 'tree']);
    assert.equal(intoFirst.code, 0, intoFirst.stderr);
    assert.deepEqual(auditSummaryOf(intoFirst), { copied: 1, present: 3 });
    assert.deepEqual(lines(await readFile(auditLogPath(root), 'utf8')), [...treeLines, JSON.stringify(bucketRecord)]);
    const upAgain = await migrate(config, ['--to', 's3']);
    assert.equal(upAgain.code, 0, upAgain.stderr);
    assert.deepEqual(auditSummaryOf(upAgain), { copied: 0, present: 4 });
    assert.equal((await auditObjects()).length, 4);
  });

  it('a damaged original and a sidecar-less one stay behind, one line each, exit 1', async () => {
    const root = join(work, 'damaged');
    const planted = await plantMigrationTree(root, 3, images, { classFiles: false });
    const damaged = planted[0]?.files[0] ?? '';
    const bytes = await readFile(join(root, damaged));
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
    await writeFile(join(root, damaged), bytes);
    const orphan = planted[1]?.files[0] ?? '';
    const key = planted[1]?.key ?? '';
    await writeFile(join(root, 'i', key[0] ?? '', key[1] ?? '', `${key}.json`), '{ truncated');
    const store = storeAt('damaged/');
    const run = await migrate(await configFor('damaged', root, 'damaged/'), ['--to', 's3']);
    assert.equal(run.code, 1, run.stderr);
    const report = reportLines(run).sort((a, b) => (a[0] ?? '').localeCompare(b[0] ?? ''));
    assert.deepEqual(report.map((line) => line.slice(0, 2)), [['damaged', damaged], ['no_sidecar', orphan]]);
    assert.equal(await store.head(objectNameOf(damaged)), null);
    assert.equal(await store.head(objectNameOf(orphan)), null);
    assert.ok((await store.head(objectNameOf(planted[2]?.files[0] ?? ''))) !== null, 'the sound one is copied');
  });

  it('a shard directory it cannot read: one line naming it, exit 1, no stack trace', { skip: process.getuid?.() === 0 ? false : 'runs the command as another user: needs root' }, async (context) => {
    await chmod(work, 0o755);
    const cannotRun = whyUserCannotRunCli(NOBODY, NOBODY, work);
    if (cannotRun !== null) {
      context.skip(cannotRun);
      return;
    }
    const root = join(work, 'unreadable');
    const planted = await plantMigrationTree(root, 2, images, { classFiles: false });
    const config = await configFor('unreadable', root, 'unreadable/');
    const key = planted[0]?.key ?? '';
    const shard = join(root, 'i', key[0] ?? '', key[1] ?? '');
    // The command runs as nobody: everything it reads is nobody's but the one shard.
    for (const path of [config, root, join(root, 'i'), join(root, 'i', key[0] ?? ''), shard]) await chown(path, NOBODY, NOBODY);
    await chmod(shard, 0o000);
    try {
      const run = await finishCli(startCli(['migrate-storage', '--config', config, '--to', 's3'], { cwd: work, env: envOf(), uid: NOBODY, gid: NOBODY }), 180_000);
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, new RegExp(`imageproxy: migrate-storage: EACCES: permission denied, (?:opendir|scandir) '${shard}'; stopped: run it again to finish`));
      assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    } finally {
      await chmod(shard, 0o755);
    }
  });

  /**
   * A run over a tree of `keys` keys (two objects each) under a prefix of its own, one
   * object at a time, started and left running once some objects are in the bucket.
   */
  const startedRun = async (name: string, keys: number) => {
    const root = join(work, name);
    const planted = await plantMigrationTree(root, keys, images, { classFiles: false });
    const config = await configFor(name, root, `${name}/`);
    const store = storeAt(`${name}/`);
    const child = startCli(['migrate-storage', '--config', config, '--to', 's3', '--concurrency', '1'], { cwd: work, env: envOf() });
    const finished = finishCli(child, 180_000);
    await until(async () => (await objectNames(store)).length >= 20, { message: 'some objects copied', timeoutMs: 120_000, intervalMs: 50 });
    return { child, finished, config, store, total: planted.length * 2 };
  };

  it('interrupted (SIGINT) mid-run, then a rerun completes: only the rest is copied', async () => {
    const { child, finished, config, store, total } = await startedRun('interrupted', 150);
    child.kill('SIGINT');
    const first = await finished;
    assert.equal(first.code, 130, first.stderr);
    const copiedFirst = summaryOf(first).copied;
    const present = (await objectNames(store)).length;
    assert.ok(present < total, `stopped before the end (${present} of ${total})`);
    assert.equal(present, copiedFirst, 'every copy counted is there, and nothing else');

    const rerun = await migrate(config, ['--to', 's3']);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.deepEqual(summaryOf(rerun), { copied: total - present, present, failed: 0, leftBehind: 0 });
    assert.equal((await objectNames(store)).length, total);
  });

  it('wrong credentials: refused, naming the key id; nothing copied', async () => {
    const root = join(work, 'denied');
    await plantMigrationTree(root, 1, images, { classFiles: false });
    const run = await migrate(await configFor('denied', root, 'denied/'), ['--to', 's3'], { AWS_ACCESS_KEY_ID: 'AKWRONGKEYID0000' });
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /refused our credentials.*access key AKWRONGKEYID0000/);
    assert.deepEqual(await objectNames(storeAt('denied/')), []);
  });

  it('no bucket configured: a config error naming storage.bucket', async () => {
    const path = join(work, 'nobucket.json');
    await writeFile(path, JSON.stringify({ root: join(work, 'nobucket'), storage: { endpoint: gateway.endpoint } }));
    const run = await migrate(path, ['--to', 's3']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /storage\.bucket/);
  });

  it('gateway down: a clear error and exit 1, nothing done', async () => {
    const root = join(work, 'down');
    await plantMigrationTree(root, 1, images, { classFiles: false });
    const config = await configFor('down', root, 'down/');
    await gateway.stopGateway();
    try {
      const run = await migrate(config, ['--to', 's3']);
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, /storage unavailable.*127\.0\.0\.1/);
      assert.doesNotMatch(run.stdout, /done:/);
    } finally {
      await gateway.startGateway();
    }
  });

  it('gateway stopped mid-run: the run stops with exit 1; a rerun completes', async () => {
    const { finished, config, store, total } = await startedRun('stopped', 100);
    const first = await withGatewayStopped(gateway, () => finished);
    assert.equal(first.code, 1, first.stderr);
    assert.match(first.stderr, /stopped: run it again to finish/);
    const rerun = await migrate(config, ['--to', 's3']);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal((await objectNames(store)).length, total);
    assert.equal(summaryOf(rerun).copied + summaryOf(rerun).present, total);
  });
});
