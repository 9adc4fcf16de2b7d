/**
 * `npm run docs:bench -- [FILE]`: rewrites the tables of docs/benchmarks.md (between
 * <!-- bench:start --> and <!-- bench:end -->) from what `npm run bench -- --json`
 * printed, read from FILE or from stdin:
 *
 *   npm run --silent bench -- --json > bench.json && npm run docs:bench -- bench.json
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseBenchResult, renderBenchSection, replaceBenchSection } from './benchPage.js';

const PAGE = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const source = process.argv[2];
const input = source === undefined || source === '-' ? await readStdin() : await readFile(source, 'utf8');
const page = replaceBenchSection(await readFile(PAGE, 'utf8'), renderBenchSection(parseBenchResult(input)));
const temp = `${PAGE}.${process.pid}.tmp`;
await writeFile(temp, page);
await rename(temp, PAGE);
console.log(`wrote ${PAGE}`);
