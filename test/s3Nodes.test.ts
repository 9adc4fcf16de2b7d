/**
 * Two complete nodes on one bucket (issue 22, end to end): each node is the built
 * `imageproxy serve` (delivery accel, storage.type s3, a root of its own for its locks and
 * state, the AWS keys in its environment) behind a real nginx started with the config
 * `imageproxy nginx-config --standalone-conf --out` renders for it (a cache directory and
 * ports of its own). One real Ceph RADOS Gateway for the file (test/rgwHarness.ts), one
 * loopback origin counting requests per path. `npm run build` first.
 *
 * What is shown, by status, headers, bytes, pixel sizes, the bucket's listing, the
 * origin's counts and exit codes: one node serves what the other fetched without the
 * origin; 100 new images asked of both nodes at once (one object each, the duplicate
 * fetches printed); `purge --block` reaching both nodes' caches within 5 s, surviving an
 * app restart, undone by `unblock`; the gateway gone and back; an app killed mid-miss.
 */
import assert from 'node:assert/strict';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { CACHE_FRESH_SECONDS } from '../server/deploy/s3Nginx.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { runCli, startCli, type CliRun } from './cliProcess.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, request, shortBody, until, type Answer } from './helpers.js';
import { freePort, nginxMissing, renderStandaloneWithCli, startNginx, type RunningNginx } from './nginxHarness.js';
import { originImages } from './originImages.js';
import { startOrigin, type Origin } from './origin.js';
import { cephMissing, gatewayStoreSettings, startGateway, type RunningGateway } from './rgwHarness.js';

const SECRET = 's3-nodes-secret';
const PREFIX = 'nodes/';
const LABEL = '250x250';
const CAP = 16 * 1024 * 1024;
/** A takedown's promise: gone from every node within this of the command's exit. */
const BLOCK_BOUND_MS = 5_000;
/** Generous: a loaded 2-core machine may take many seconds to start node or answer a burst. */
const START_DEADLINE_MS = 120_000;
/** A request that takes longer than this is a hang, whatever the load. */
const REQUEST_DEADLINE_MS = 60_000;

const skip = nginxMissing() ?? cephMissing();
if (skip !== null) console.log(`# two nodes on a bucket skipped: ${skip}`);

/** A photo-like JPEG (noise, blurred) of its own for each call: 400×300, so a 250x250 thumbnail is 250×188. */
function photoJpeg(): Promise<Buffer> {
  return sharp({ create: { width: 400, height: 300, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } })
    .blur(2)
    .jpeg({ quality: 85 })
    .toBuffer();
}

async function pixelSize(bytes: Buffer): Promise<[number | undefined, number | undefined]> {
  const { width, height } = await sharp(bytes).metadata();
  return [width, height];
}

/** `request`, failing (not hanging) past `deadlineMs`; the answer and how long it took. */
async function timedRequest(base: string, path: string, deadlineMs = REQUEST_DEADLINE_MS): Promise<Answer & { tookMs: number }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${path}: no answer within ${deadlineMs} ms`)), deadlineMs);
  });
  try {
    const answer = await Promise.race([request(base, path), deadline]);
    return { ...answer, tookMs: Date.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

function assertImage(answer: Answer, what: string): void {
  assert.equal(answer.status, 200, `${what}: ${answer.status} ${shortBody(answer.body, answer.headers.get('content-type'))}`);
}

interface AppProcess {
  child: ChildProcessWithoutNullStreams;
  output: { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

interface Node {
  name: string;
  configPath: string;
  /** nginx's address: what visitors ask. */
  base: string;
  app: AppProcess | null;
  nginx: RunningNginx | null;
}

describe('two nodes (built serve + rendered nginx each) on one bucket of a real Ceph RGW', { skip: skip ?? false }, () => {
  let gateway: RunningGateway;
  let work = '';
  let origin: Origin;
  let store: S3ObjectStore;
  const bodies = new Map<string, Buffer>();
  /** Paths the origin answers slowly: headers and half the body, the rest once released. */
  const slowPaths = new Map<string, Promise<void>>();
  const nodes: Node[] = [];

  /** The gateway's keys through the SDK's chain; nothing looked up beyond loopback. */
  const keysEnv = (): Record<string, string> => ({
    AWS_ACCESS_KEY_ID: gateway.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: gateway.credentials.secretAccessKey,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-credentials'),
    AWS_CONFIG_FILE: join(work, 'no-config'),
  });
  const storageOf = (cacheDir: string | null): Record<string, unknown> => ({
    type: 's3',
    endpoint: gateway.endpoint,
    bucket: gateway.bucket,
    region: gateway.region,
    prefix: PREFIX,
    // The app's calls fail within seconds while the gateway is down, not at the default 10 s.
    callTimeoutMs: 3000,
    connectTimeoutMs: 1000,
    ...(cacheDir === null ? {} : { cacheDir, cacheMaxSize: '64m' }),
  });

  const { fetchesOf, keyOf, linkOf, objectOf } = originImages(() => origin, SECRET);
  const nodeA = (): Node => nodes[0] as Node;
  const nodeB = (): Node => nodes[1] as Node;
  const get = (node: Node, path: string, deadlineMs?: number): Promise<Answer & { tookMs: number }> => timedRequest(node.base, path, deadlineMs);

  /** Names of the image objects of `path`'s key in the bucket. */
  const objectsOfImage = async (path: string): Promise<string[]> => {
    const key = keyOf(path);
    const names: string[] = [];
    for await (const listed of store.list(`i/${key[0]}/${key[1]}/${key}`)) names.push(listed.name);
    return names.sort();
  };

  /** Lines of the gateway's log for `method` of `objectName` (under the prefix), any status. */
  const gatewayLog = async (method: string, objectName: string): Promise<string[]> => {
    const log = await readFile(join(gateway.directory, 'log', 'client.rgw.a.log'), 'utf8').catch(() => '');
    const needle = `"${method} /${gateway.bucket}/${PREFIX}${objectName} HTTP/1.1"`;
    return log.split('\n').filter((line) => line.includes(needle));
  };

  async function startApp(node: Node): Promise<AppProcess> {
    const child = startCli(['serve', '--config', node.configPath], { cwd: work, env: keysEnv() });
    const output = { stdout: '', stderr: '' };
    child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
    const state = await until(() => (child.exitCode !== null || child.signalCode !== null ? 'exited' : output.stdout.includes('"listening on') ? 'listening' : null), {
      message: `node ${node.name}'s serve listening`,
      timeoutMs: START_DEADLINE_MS,
    });
    assert.equal(state, 'listening', `node ${node.name}'s serve: ${output.stderr}`);
    return { child, output, exited };
  }

  async function startNode(name: string): Promise<Node> {
    const [appPort, nginxPort] = [await freePort(), await freePort()];
    const dir = join(work, `node-${name}`);
    await mkdir(dir);
    const config = {
      root: join(dir, 'root'),
      listen: `127.0.0.1:${appPort}`,
      admin: { listen: '127.0.0.1:0' },
      secrets: [SECRET],
      allowPrivateNetworks: true,
      delivery: 'accel',
      nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      storage: storageOf(join(dir, 'nginx-cache')),
    };
    const configPath = join(dir, 'config.json');
    await writeFile(configPath, JSON.stringify(config), { mode: 0o600 });
    const node: Node = { name, configPath, base: `http://127.0.0.1:${nginxPort}`, app: null, nginx: null };
    const prefixDir = join(dir, 'nginx');
    const confText = await renderStandaloneWithCli(configPath, prefixDir, keysEnv());
    node.app = await startApp(node);
    node.nginx = await startNginx(prefixDir, confText, nginxPort);
    return node;
  }

  /** SIGTERM and the exit code. */
  async function stopApp(node: Node): Promise<number | null> {
    const app = node.app;
    if (app === null || app.child.exitCode !== null || app.child.signalCode !== null) return app?.child.exitCode ?? null;
    app.child.kill('SIGTERM');
    const { code } = await app.exited;
    return code;
  }

  /** A takedown command against the bucket, with a root of its own. */
  const takedown = async (args: string[]): Promise<CliRun> => {
    const configPath = join(work, 'takedown.json');
    await writeFile(configPath, JSON.stringify({ root: join(work, 'takedown-root'), secrets: [SECRET], storage: storageOf(null) }), { mode: 0o600 });
    return runCli([...args, '--config', configPath], { cwd: work, env: keysEnv(), timeoutMs: START_DEADLINE_MS });
  };

  before(async () => {
    [gateway, work] = await Promise.all([startGateway(), makeTempRoot('imageproxy-s3nodes-')]);
    store = new S3ObjectStore(gatewayStoreSettings(gateway, PREFIX));
    origin = await startOrigin((incoming: IncomingMessage, response: ServerResponse) => {
      const path = incoming.url ?? '/';
      const body = bodies.get(path);
      if (body === undefined) {
        response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not here');
        return;
      }
      response.on('error', () => undefined);
      response.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': String(body.length) });
      const released = slowPaths.get(path);
      if (released === undefined) {
        response.end(body);
        return;
      }
      const half = Math.floor(body.length / 2);
      response.write(body.subarray(0, half));
      void released.then(() => {
        if (!response.destroyed) response.end(body.subarray(half));
      });
    });
    nodes.push(await startNode('A'), await startNode('B'));
  });

  after(async () => {
    for (const node of nodes) {
      await stopApp(node).catch(() => null);
      await node.nginx?.stop();
    }
    store?.close();
    await origin?.close();
    await gateway?.stop();
    if (work !== '') await removeTempRoot(work);
  });

  it('an image fetched through node A (full size and thumbnail) is served by node B without the origin; B\'s second request is a cache hit', async () => {
    const path = '/shared.jpg';
    bodies.set(path, await photoJpeg());
    const full = await get(nodeA(), linkOf(path));
    assertImage(full, 'A, full size');
    assertSameBytes(full.body, bodies.get(path) ?? Buffer.alloc(0), "A's full size is the origin's bytes");
    assert.equal(full.headers.get('content-type'), 'image/jpeg');
    const thumbnail = await get(nodeA(), linkOf(path, LABEL));
    assertImage(thumbnail, 'A, thumbnail');
    assert.deepEqual(await pixelSize(thumbnail.body), [250, 188]);
    assert.equal(fetchesOf(path), 1);
    assert.deepEqual(await objectsOfImage(path), [objectOf(path), objectOf(path, LABEL)].sort(), 'the original and the thumbnail, one object each');

    const thumbnailName = objectOf(path, LABEL);
    for (const [link, expected, what] of [
      [linkOf(path), full.body, 'full size'],
      [linkOf(path, LABEL), thumbnail.body, 'thumbnail'],
    ] as const) {
      for (const round of ['first', 'second']) {
        const answer = await get(nodeB(), link);
        assertImage(answer, `B, ${what}, ${round}`);
        assertSameBytes(answer.body, expected, `B, ${what}, ${round}: A's bytes`);
        assert.equal(answer.headers.get('content-type'), 'image/jpeg');
      }
    }
    assert.equal(fetchesOf(path), 1, 'node B asked the bucket, never the origin');
    // The gateway logs in order: once a later request's line is there, so are the earlier ones'.
    const marker = objectOf('/log-marker.jpg');
    await store.put(marker, Buffer.from('marker'), { contentType: 'image/jpeg' });
    assert.ok((await store.head(marker)) !== null);
    await until(async () => (await gatewayLog('HEAD', marker)).length > 0, { message: "the marker's HEAD in the gateway's log", timeoutMs: 30_000 });
    const gets = await gatewayLog('GET', thumbnailName);
    const byStatus = (status: number): number => gets.filter((line) => line.includes(`HTTP/1.1" ${status} `)).length;
    // A's miss (404: to its app), A's GET after the app's X-Accel-Redirect, B's first GET:
    // B's second came from its cache (fresh: no request; stale: a conditional GET, 304, no bytes).
    assert.equal(byStatus(404), 1, "A's miss");
    assert.equal(byStatus(200), 2, `two whole GETs of the thumbnail object (${gets.length} GETs in all): A's after its app, B's first`);
    assert.equal(gets.length, 3 + byStatus(304), 'any other GET a revalidation');
    await store.delete(marker);
  });

  it('100 new images asked of both nodes at once: every answer 200, the same bytes on both, one object per image and per thumbnail', async (t) => {
    const paths = Array.from({ length: 100 }, (_, index) => `/burst-${index}.jpg`);
    for (const path of paths) bodies.set(path, await photoJpeg());
    const started = Date.now();
    const answers = await Promise.all(paths.map((path) => Promise.all([nodeA(), nodeB()].map((node) => get(node, linkOf(path, LABEL))))));
    const tookMs = Date.now() - started;
    for (const [index, [a, b]] of answers.entries()) {
      assert.ok(a !== undefined && b !== undefined);
      assertImage(a, `${paths[index]} on A`);
      assertImage(b, `${paths[index]} on B`);
      assertSameBytes(a.body, b.body, `${paths[index]}: both nodes answer the same bytes`);
      assert.deepEqual(await pixelSize(a.body), [250, 188], `${paths[index]}: a 250x250 thumbnail`);
    }
    for (const [index, path] of paths.entries()) {
      assert.deepEqual(await objectsOfImage(path), [objectOf(path), objectOf(path, LABEL)].sort(), `${path}: one original and one thumbnail object`);
      const thumbnail = await store.get(objectOf(path, LABEL), { maxBytes: CAP });
      assert.ok(thumbnail !== null);
      assertSameBytes(thumbnail.bytes, answers[index]?.[0]?.body ?? Buffer.alloc(0), `${path}: the thumbnail object holds what was answered`);
    }
    const fetchCounts = paths.map(fetchesOf);
    const total = fetchCounts.reduce((sum, count) => sum + count, 0);
    const tally: Record<number, number> = {};
    for (const count of fetchCounts) tally[count] = (tally[count] ?? 0) + 1;
    t.diagnostic(
      `duplicate fetches: 100 new images, each thumbnail asked of both nodes' nginx at once: ${total} origin requests, ${total - paths.length} duplicates (images by fetch count ${JSON.stringify(tally)}), all answered in ${tookMs} ms`,
    );
    // Within a node the single-flight lock makes one fetch; across nodes the create keeps one object.
    for (const [index, count] of fetchCounts.entries()) assert.ok(count >= 1 && count <= 2, `${paths[index]}: ${count} origin requests`);
  });

  it('purge --block reaches both nodes\' warm caches within 5 s (451 blocked), survives an app restart (the list is in the bucket); unblock lets it be fetched again', async (t) => {
    const path = '/blocked.jpg';
    bodies.set(path, await photoJpeg());
    const link = linkOf(path);
    for (const node of [nodeA(), nodeB(), nodeA(), nodeB()]) assertImage(await get(node, link), `warming node ${node.name}`);
    assert.equal(fetchesOf(path), 1);

    const firstBlocked = new Map<string, number>();
    const otherAnswers: string[] = [];
    let polling = true;
    const poll = async (node: Node): Promise<void> => {
      while (polling && !firstBlocked.has(node.name)) {
        const answer = await get(node, link).catch((error: unknown) => ({ status: 0, error }));
        if (answer.status === 451) firstBlocked.set(node.name, Date.now());
        else if (answer.status !== 200) otherAnswers.push(`node ${node.name}: ${answer.status}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    };
    const polls = Promise.all([poll(nodeA()), poll(nodeB())]);
    let exitedAt = 0;
    try {
      const run = await takedown(['purge', '--block', link]);
      exitedAt = Date.now();
      assert.equal(run.code, 0, run.stderr);
      await until(() => firstBlocked.size === 2, { message: 'both nodes answering 451', timeoutMs: 30_000 });
    } finally {
      polling = false;
      await polls;
    }
    assert.deepEqual(otherAnswers, [], 'every answer 200 until the 451s');
    assert.deepEqual(await objectsOfImage(path), [], 'the objects are gone');
    const afterExit = [nodeA(), nodeB()].map((node) => (firstBlocked.get(node.name) ?? Infinity) - exitedAt);
    t.diagnostic(`block propagation: node A answered 451 ${afterExit[0]} ms, node B ${afterExit[1]} ms after purge --block exited`);
    for (const [index, ms] of afterExit.entries()) assert.ok(ms < BLOCK_BOUND_MS, `node ${nodes[index]?.name}: 451 ${ms} ms after the exit`);
    for (const node of [nodeA(), nodeB()]) {
      const answer = await get(node, link);
      assert.equal(answer.status, 451, `node ${node.name}`);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'blocked', `node ${node.name}`);
    }

    assert.equal(await stopApp(nodeA()), 0, "node A's serve exits 0 on SIGTERM");
    nodeA().app = await startApp(nodeA());
    const restarted = await get(nodeA(), link);
    assert.equal(restarted.status, 451, 'still blocked on the restarted node A');
    assert.equal(restarted.headers.get('x-imageproxy-error'), 'blocked');
    assert.equal(fetchesOf(path), 1, 'nothing fetched while blocked');

    const unblocked = await takedown(['unblock', link]);
    assert.equal(unblocked.code, 0, unblocked.stderr);
    for (const node of [nodeA(), nodeB()]) {
      const answer = await until(() => get(node, link), { message: `node ${node.name} serving the unblocked image`, timeoutMs: 30_000, done: (answer) => answer.status === 200 });
      assert.equal(answer.headers.get('content-type'), 'image/jpeg');
      assertSameBytes(answer.body, bodies.get(path) ?? Buffer.alloc(0), `node ${node.name}: the image again`);
    }
    assert.ok(fetchesOf(path) >= 2 && fetchesOf(path) <= 3, `fetched again after the unblock (${fetchesOf(path)} origin requests in all)`);
  });

  it('the gateway gone: cached hits still 200 on both nodes, a miss 503 storage_unavailable at once; misses work again once it is back, nothing restarted', async (t) => {
    const cached = '/cached.jpg';
    bodies.set(cached, await photoJpeg());
    for (const path of ['/during.jpg', '/after-a.jpg', '/after-b.jpg']) bodies.set(path, await photoJpeg());
    for (const node of [nodeA(), nodeB()]) assertImage(await get(node, linkOf(cached)), `warming node ${node.name}`);
    await gateway.stopGateway();
    try {
      // Past the entries' freshness: they are served stale, nothing can revalidate them.
      const stoppedAt = Date.now();
      await until(() => Date.now() - stoppedAt > (CACHE_FRESH_SECONDS + 1) * 1000, { message: 'the entries stale', timeoutMs: 10_000, intervalMs: 100 });
      for (const node of [nodeA(), nodeB()]) {
        const hit = await get(node, linkOf(cached));
        assertImage(hit, `node ${node.name}: a cached image`);
        assertSameBytes(hit.body, bodies.get(cached) ?? Buffer.alloc(0), `node ${node.name}: the cached copy`);
        const miss = await get(node, linkOf('/during.jpg'));
        assert.equal(miss.status, 503, `node ${node.name}: ${shortBody(miss.body, miss.headers.get('content-type'))}`);
        assert.equal(miss.headers.get('x-imageproxy-error'), 'storage_unavailable', `node ${node.name}`);
        assert.equal(miss.headers.get('retry-after'), '5', `node ${node.name}`);
        // nginx's connect timeout (2 s) at most, with room for a loaded machine: never a hang.
        assert.ok(miss.tookMs < 15_000, `node ${node.name}: the miss answered in ${miss.tookMs} ms`);
        t.diagnostic(`gateway stopped: node ${node.name} answered a cached image 200 in ${hit.tookMs} ms, a miss 503 in ${miss.tookMs} ms`);
      }
      assert.equal(fetchesOf('/during.jpg'), 0, 'nothing fetched while the bucket cannot be reached');
    } finally {
      await gateway.startGateway();
    }
    for (const [node, path] of [
      [nodeA(), '/after-a.jpg'],
      [nodeB(), '/after-b.jpg'],
      [nodeB(), '/during.jpg'],
    ] as const) {
      const answer = await until(() => get(node, linkOf(path)), { message: `node ${node.name}: a miss once the gateway is back`, timeoutMs: 60_000, done: (answer) => answer.status === 200 });
      assertSameBytes(answer.body, bodies.get(path) ?? Buffer.alloc(0), `node ${node.name}: ${path}`);
      assert.equal(fetchesOf(path), 1, path);
    }
  });

  it("kill -9 of node A's app mid-miss: no partial object; node B unaffected, and serves that image afterwards", async (t) => {
    const path = '/slow.jpg';
    bodies.set(path, await photoJpeg());
    bodies.set('/meanwhile.jpg', await photoJpeg());
    let release = (): void => undefined;
    slowPaths.set(path, new Promise((resolve) => (release = resolve)));
    const app = nodeA().app;
    assert.ok(app !== null);
    const pending = get(nodeA(), linkOf(path, LABEL));
    try {
      await until(() => fetchesOf(path) === 1, { message: "node A's app fetching the slow image", timeoutMs: 60_000 });
      app.child.kill('SIGKILL');
      assert.equal((await app.exited).signal, 'SIGKILL');
      const cut = await pending;
      assert.ok(cut.status >= 500, `node A's answer once its app is gone: ${cut.status}`);
      t.diagnostic(`node A's nginx answered ${cut.status} ${cut.headers.get('x-imageproxy-error') ?? ''} for the request its killed app held`);
      const meanwhile = await get(nodeB(), linkOf('/meanwhile.jpg', LABEL));
      assertImage(meanwhile, 'node B, a new image while A is down');
      assert.deepEqual(await pixelSize(meanwhile.body), [250, 188]);
      const left = await objectsOfImage(path);
      if (left.length > 0) {
        // A whole object or nothing: a PUT is the commit.
        assert.deepEqual(left, [objectOf(path)], 'at most the original');
        const object = await store.get(objectOf(path), { maxBytes: CAP });
        assert.ok(object !== null);
        assertSameBytes(object.bytes, bodies.get(path) ?? Buffer.alloc(0), 'a whole original');
      }
    } finally {
      release();
      slowPaths.delete(path);
    }
    const served = await get(nodeB(), linkOf(path, LABEL));
    assertImage(served, 'node B, the image A was fetching');
    assert.deepEqual(await pixelSize(served.body), [250, 188]);
    assert.deepEqual(await objectsOfImage(path), [objectOf(path), objectOf(path, LABEL)].sort());
    const original = await store.get(objectOf(path), { maxBytes: CAP });
    assert.ok(original !== null);
    assertSameBytes(original.bytes, bodies.get(path) ?? Buffer.alloc(0), 'the original object is whole');
    assert.deepEqual(await pixelSize(original.bytes), [400, 300]);
  });
});
