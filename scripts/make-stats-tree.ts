/**
 * Generates a synthetic bucket tree for measuring `imageproxy stats`:
 *
 *   node --import tsx scripts/make-stats-tree.ts DIR [ENTRIES]
 *
 * ENTRIES (default 200 000) files spread over the buckets i, f and t: per ten entries
 * four originals with their four sidecars, one thumbnail and one backoff record. Files
 * are a few bytes: the walk's cost is in directory entries and lstat, not in file size.
 * Keys are sha256 of a counter, so the shards fill evenly as real keys do.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { storageKey } from '../server/contract/layout.js';

const BUCKETS = ['i', 'f', 't'];
const THUMBNAIL_LABELS = ['150x', 'x200', '250x250'];
const WRITES_IN_FLIGHT = 64;

async function main(): Promise<void> {
  const [rootArg, entriesArg] = process.argv.slice(2);
  if (rootArg === undefined) {
    process.stderr.write('usage: make-stats-tree.ts DIR [ENTRIES]\n');
    process.exit(2);
  }
  const root = resolve(rootArg);
  const entries = entriesArg === undefined ? 200_000 : Number(entriesArg);
  const groups = Math.ceil(entries / 10);

  const files: Array<{ path: string; text: string }> = [];
  for (let group = 0; group < groups; group += 1) {
    for (let original = 0; original < 4; original += 1) {
      const index = group * 4 + original;
      const key = storageKey(Buffer.from(`https://origin.test/${index}.jpg`));
      const bucket = BUCKETS[index % BUCKETS.length] ?? 'i';
      const directory = join(root, bucket, key[0] ?? '', key[1] ?? '');
      files.push({ path: join(directory, `${key}.jpg`), text: 'jpeg' });
      files.push({ path: join(directory, `${key}.json`), text: '{}' });
      if (original === 0) {
        files.push({ path: join(directory, `${key}.${THUMBNAIL_LABELS[group % 3] ?? '150x'}.jpg`), text: 'jp' });
      }
      if (original === 1) files.push({ path: join(directory, `${key}.fail`), text: '{}' });
    }
  }
  files.length = Math.min(files.length, entries);

  const directories = new Set(files.map((file) => join(file.path, '..')));
  for (const directory of directories) await mkdir(directory, { recursive: true });
  let next = 0;
  const writer = async (): Promise<void> => {
    while (next < files.length) {
      const file = files[next];
      next += 1;
      if (file !== undefined) await writeFile(file.path, file.text);
    }
  };
  await Promise.all(Array.from({ length: WRITES_IN_FLIGHT }, writer));
  process.stdout.write(`${root}: ${files.length} files in ${directories.size} shard directories\n`);
}

await main();
