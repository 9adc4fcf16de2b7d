/**
 * `imageproxy decode <link>`: what a link says and what is stored for it, for an admin
 * looking at a link from a page or a log: bucket, size, proxy, the image URL, the
 * storage key, the stored files, and the verdict `verify` prints.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { storageKey } from '../contract/layout.js';
import { imageUrlBytes, sizeSegment } from '../contract/link.js';
import { ImageStore } from '../tree/store.js';
import { judgeLinkNow, printVerdict, registerLinkCommand, type LinkCommandOptions } from './linkOptions.js';

/** Control characters of a hostile URL would rewrite the admin's terminal: escape them. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

async function decode(text: string, options: LinkCommandOptions): Promise<number> {
  const { config, verdict } = judgeLinkNow(text, options);
  const { link } = verdict;
  if (link !== null) {
    const key = storageKey(imageUrlBytes(link.extUrl));
    const store = new ImageStore(resolve(config.root));
    const directory = store.directoryOf(link.bucket, key);
    const files = await store.keyFiles(link.bucket, key);
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
  return printVerdict(verdict);
}

export function register(program: Command): void {
  registerLinkCommand(program, 'decode', "print a link's bucket, size, proxy flag, image URL, key, stored files and verdict (exit 0 only when valid)", decode);
}
