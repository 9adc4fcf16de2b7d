/**
 * `imageproxy decode <link>`: what a link says and what is stored for it, for an admin
 * looking at a link from a page or a log: bucket, size, proxy, the image URL, the
 * storage key, the stored files, and the verdict `verify` prints.
 */
import type { Command } from 'commander';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { storageKey } from '../layout.js';
import { imageUrlBytes, linkPathOf, sizeSegment } from '../link.js';
import { describeVerdict, judgeLink } from '../linkTools.js';
import { ImageStore } from '../store.js';
import { EXIT_FAILURES, EXIT_OK, parseInstant, withCommon } from './common.js';
import { configuredSecrets, loadLinkConfig, policyOf, withLinkOptions, type LinkCommandOptions } from './linkOptions.js';

/** Control characters of a hostile URL would rewrite the admin's terminal: escape them. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Every file of the key's directory that belongs to the key: images, sidecar, records. */
async function storedFiles(directory: string, key: string): Promise<string[]> {
  try {
    const names = await readdir(directory);
    return names.filter((name) => name.startsWith(`${key}.`)).sort().map((name) => join(directory, name));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

async function decode(text: string, options: LinkCommandOptions): Promise<number> {
  const config = loadLinkConfig(options);
  const verdict = judgeLink(linkPathOf(text), {
    policy: policyOf(config),
    secrets: configuredSecrets(config),
    nowMs: parseInstant(options.at),
  });
  const { link } = verdict;
  if (link !== null) {
    const key = storageKey(imageUrlBytes(link.extUrl));
    const directory = new ImageStore(resolve(config.root)).directoryOf(link.bucket, key);
    const files = await storedFiles(directory, key);
    const lines = [
      `bucket: ${link.bucket}`,
      `size: ${sizeSegment(link.size)}${link.proxy ? ' (ignored: proxy)' : ''}`,
      `proxy: ${link.proxy ? 'yes' : 'no'}`,
      `image URL: ${printable(imageUrlBytes(link.extUrl).toString('utf8'))}`,
      `key: ${key}`,
      ...(files.length === 0 ? [`stored: nothing in ${directory}`] : files.map((file) => `stored: ${file}`)),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  process.stdout.write(`${describeVerdict(verdict)}\n`);
  return verdict.kind === 'valid' ? EXIT_OK : EXIT_FAILURES;
}

export function register(program: Command): void {
  withLinkOptions(
    withCommon(
      program
        .command('decode <link>')
        .description("print a link's bucket, size, proxy flag, image URL, key, stored files and verdict (exit 0 only when valid)"),
    ),
  ).action(async (link: string, options: LinkCommandOptions) => {
    process.exitCode = await decode(link, options);
  });
}
