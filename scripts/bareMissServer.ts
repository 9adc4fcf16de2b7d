/**
 * The baseline's miss (scripts/missBaseline.ts) behind a bare node:http server, for
 * scripts/bench-miss.ts: no routing, signature, limits, lock, sidecar or logs, only the
 * same fetch, resize and durable writes one process away from the client, as serve is.
 *
 *   node --import tsx scripts/bareMissServer.ts TREE_ROOT
 *
 * GET /{base64url(image URL)} answers the thumbnail. Prints `listening on http://…`.
 */
import { Agent, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeImageUrl } from '../server/contract/link.js';
import { baselineEngine, baselineMiss } from './missBaseline.js';

const treeRoot = process.argv[2];
if (treeRoot === undefined) {
  process.stderr.write('usage: bareMissServer.ts TREE_ROOT\n');
  process.exit(2);
}
const engine = baselineEngine();
const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
const server = createServer((request, response) => {
  const imageUrl = decodeImageUrl((request.url ?? '/').slice(1)).href;
  baselineMiss(imageUrl, engine, agent, treeRoot).then(
    (thumbnail) => response.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': thumbnail.length }).end(thumbnail),
    (error: unknown) => response.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${String(error)}\n`),
  );
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.once('SIGTERM', () => {
  server.close();
  agent.destroy();
  void engine.close().then(() => process.exit(0));
});
