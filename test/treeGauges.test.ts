// The tree gauges of the whole server in-process: after the background walk they equal
// the figures of a tree made with known files; a scrape never walks; the periodic walk
// picks up changes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { link, mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatBlocklist } from '../server/takedown/blocklist.js';
import { buildConfig, type ConfigLayer } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { STATE_DIRECTORY, storageKey } from '../server/contract/layout.js';
import { createLogger } from '../server/observe/log.js';
import { makeTempRoot, removeTempRoot, scrapeMetrics, until } from './helpers.js';

const T_OLD = Date.parse('2025-06-01T10:00:00Z');
const T_NEW = Date.parse('2026-02-03T04:05:06Z');

async function place(root: string, bucket: string, url: string, suffix: string, size: number, mtimeMs?: number): Promise<void> {
  const key = storageKey(Buffer.from(url));
  const directory = join(root, bucket, key[0] ?? '', key[1] ?? '');
  await mkdir(directory, { recursive: true });
  const path = join(directory, `${key}${suffix}`);
  await writeFile(path, Buffer.alloc(size));
  if (mtimeMs !== undefined) await utimes(path, mtimeMs / 1000, mtimeMs / 1000);
}

/**
 * i: originals of 100 B (T_OLD) and 200 B (T_NEW), a 30 B thumbnail with a 12 B AVIF for
 * class avif and a hard link of it for class webp, a sidecar, a backoff record; f: one
 * 50 B original; blocklist: a digest and a host.
 */
async function makeKnownTree(root: string): Promise<void> {
  await place(root, 'i', 'https://origin.test/1.jpg', '.jpg', 100, T_OLD);
  await place(root, 'i', 'https://origin.test/1.jpg', '.json', 10);
  await place(root, 'i', 'https://origin.test/1.jpg', '.150x.jpg', 30);
  await place(root, 'i', 'https://origin.test/1.jpg', '.150x.avif.avif', 12);
  const key = storageKey(Buffer.from('https://origin.test/1.jpg'));
  const directory = join(root, 'i', key[0] ?? '', key[1] ?? '');
  await link(join(directory, `${key}.150x.jpg`), join(directory, `${key}.150x.webp.jpg`));
  await place(root, 'i', 'https://origin.test/2.png', '.png', 200, T_NEW);
  await place(root, 'i', 'https://origin.test/3.png', '.fail', 10);
  await place(root, 'f', 'https://origin.test/4.gif', '.gif', 50, T_OLD);
  await mkdir(join(root, STATE_DIRECTORY), { recursive: true });
  await writeFile(
    join(root, STATE_DIRECTORY, 'blocklist.json'),
    formatBlocklist({
      version: 1,
      entries: [
        { kind: 'digest', value: 'a'.repeat(64), at: '', by: 'test' },
        { kind: 'host', value: 'blocked.example', at: '', by: 'test' },
      ],
    }),
  );
}

async function start(root: string, overrides: ConfigLayer): Promise<RunningServer> {
  const config = buildConfig({
    // healIntervalSeconds 0: the known tree holds placeholder bytes, which the heal pass would move aside as damaged.
    flags: { listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, root, secrets: ['gauge-secret'], allowPrivateNetworks: true, logLevel: 'silent', healIntervalSeconds: 0, ...overrides },
  });
  return startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
}

/** `name{labels}` → value, for every sample of one scrape. */
function scrapeTree(app: RunningServer): Promise<Map<string, number>> {
  return scrapeMetrics(app.adminUrl ?? '');
}

/** Scrapes until `ready` holds. */
function scrapeUntil(app: RunningServer, ready: (samples: Map<string, number>) => boolean, what: string): Promise<Map<string, number>> {
  return until(() => scrapeTree(app), { message: what, done: ready, intervalMs: 50 });
}

const scanned = (samples: Map<string, number>): boolean => (samples.get('imageproxy_tree_scan_timestamp_seconds') ?? 0) > 0;

describe('tree gauges', () => {
  let root = '';
  before(async () => {
    root = await makeTempRoot();
    await makeKnownTree(root);
  });
  after(() => removeTempRoot(root));

  it('equal the known figures after the walk at start; scraping again does not walk', async () => {
    const app = await start(root, { statsRefreshSeconds: 3600 });
    try {
      const samples = await scrapeUntil(app, scanned, 'the walk at start');
      const expected: Record<string, number> = {
        'imageproxy_tree_files{bucket="i",kind="original"}': 2,
        'imageproxy_tree_files{bucket="i",kind="thumbnail"}': 3,
        'imageproxy_tree_files{bucket="i",kind="sidecar"}': 1,
        'imageproxy_tree_files{bucket="i",kind="temp"}': 0,
        'imageproxy_tree_files{bucket="i",kind="other"}': 0,
        'imageproxy_tree_files{bucket="f",kind="original"}': 1,
        'imageproxy_tree_files{bucket="t",kind="original"}': 0,
        'imageproxy_tree_bytes{bucket="i",kind="original"}': 300,
        'imageproxy_tree_bytes{bucket="i",kind="thumbnail"}': 42,
        'imageproxy_tree_bytes{bucket="f",kind="original"}': 50,
        'imageproxy_tree_backoff_files{bucket="i"}': 1,
        'imageproxy_tree_backoff_files{bucket="f"}': 0,
        'imageproxy_tree_oldest_fetch_timestamp_seconds{bucket="i"}': T_OLD / 1000,
        'imageproxy_tree_newest_fetch_timestamp_seconds{bucket="i"}': T_NEW / 1000,
        'imageproxy_tree_oldest_fetch_timestamp_seconds{bucket="f"}': T_OLD / 1000,
        'imageproxy_tree_blocked_entries{kind="key"}': 0,
        'imageproxy_tree_blocked_entries{kind="digest"}': 1,
        'imageproxy_tree_blocked_entries{kind="host"}': 1,
        // By format: the hard link counts as a file of class webp, its bytes under the source-format thumbnail.
        'imageproxy_tree_thumbnail_class_files{bucket="i",class="source"}': 1,
        'imageproxy_tree_thumbnail_class_files{bucket="i",class="avif"}': 1,
        'imageproxy_tree_thumbnail_class_files{bucket="i",class="webp"}': 1,
        'imageproxy_tree_thumbnail_class_bytes{bucket="i",class="source"}': 30,
        'imageproxy_tree_thumbnail_class_bytes{bucket="i",class="avif"}': 12,
        'imageproxy_tree_thumbnail_class_bytes{bucket="i",class="webp"}': 0,
        'imageproxy_tree_type_files{bucket="i",kind="thumbnail",type="jpg"}': 2,
        'imageproxy_tree_type_files{bucket="i",kind="thumbnail",type="avif"}': 1,
        'imageproxy_tree_type_bytes{bucket="i",kind="thumbnail",type="jpg"}': 30,
        'imageproxy_tree_type_files{bucket="i",kind="original",type="png"}': 1,
        'imageproxy_tree_type_bytes{bucket="i",kind="original",type="png"}': 200,
        'imageproxy_tree_type_files{bucket="f",kind="original",type="gif"}': 1,
        'imageproxy_tree_thumbnail_class_files{bucket="f",class="avif"}': 0,
      };
      for (const [sample, value] of Object.entries(expected)) assert.equal(samples.get(sample), value, sample);
      assert.equal(samples.has('imageproxy_tree_oldest_fetch_timestamp_seconds{bucket="t"}'), false, 'no originals, no instant');
      const scanAt = samples.get('imageproxy_tree_scan_timestamp_seconds') ?? 0;
      assert.ok(Math.abs(scanAt - Date.now() / 1000) < 60, `scan timestamp ${scanAt} is about now`);

      // A new original between scrapes: a scrape that walked would count it.
      await place(root, 'i', 'https://origin.test/5.jpg', '.jpg', 7, T_NEW);
      const again = await scrapeTree(app);
      assert.equal(again.get('imageproxy_tree_scan_timestamp_seconds'), scanAt);
      assert.equal(again.get('imageproxy_tree_files{bucket="i",kind="original"}'), 2);
    } finally {
      await app.close();
    }
  });

  it('the periodic walk picks up a change', async () => {
    const app = await start(root, { statsRefreshSeconds: 1 });
    try {
      const first = await scrapeUntil(app, scanned, 'the walk at start');
      const originals = first.get('imageproxy_tree_files{bucket="f",kind="original"}') ?? -1;
      await place(root, 'f', 'https://origin.test/6.jpg', '.jpg', 11, T_NEW);
      const later = await scrapeUntil(app, (samples) => samples.get('imageproxy_tree_files{bucket="f",kind="original"}') === originals + 1, 'the periodic walk');
      assert.equal(later.get('imageproxy_tree_bytes{bucket="f",kind="original"}'), 61);
      assert.ok((later.get('imageproxy_tree_scan_timestamp_seconds') ?? 0) > (first.get('imageproxy_tree_scan_timestamp_seconds') ?? 0));
    } finally {
      await app.close();
    }
  });

  it('statsRefreshSeconds 0: no walk, the gauges stay empty', async () => {
    const app = await start(root, { statsRefreshSeconds: 0 });
    try {
      // Behaviour under test, not a wait for a condition: an observation window long enough
      // for a walk of this small tree, had one been started.
      await sleep(500);
      const samples = await scrapeTree(app);
      assert.equal(samples.get('imageproxy_tree_scan_timestamp_seconds'), 0);
      assert.equal(samples.has('imageproxy_tree_files{bucket="i",kind="original"}'), false);
    } finally {
      await app.close();
    }
  });
});
