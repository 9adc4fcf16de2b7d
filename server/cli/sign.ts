/**
 * `imageproxy sign`: the link Gazelle would emit for an image URL, or for every line of
 * a file (`--from-file F`, `-` for stdin) streamed in and out in order. The checks are
 * server/contract/linkTools.ts's, the app's own: a printed link is one the app accepts.
 */
import type { Command } from 'commander';
import { once } from 'node:events';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { isImageproxyError } from '../errors.js';
import { signLinkFor, type SignRequest, type Signer } from '../contract/linkTools.js';
import { EXIT_FAILURES, EXIT_OK, UsageError, configuredBucket, parseInstant, parsePositiveInteger, withCommon } from './common.js';
import { configuredSecrets, loadLinkConfig, policyOf, withLinkOptions, type LinkCommandOptions } from './linkOptions.js';

type SignOptions = LinkCommandOptions & {
  bucket: string;
  height?: string;
  width?: string;
  proxy?: boolean;
  legacy?: boolean;
  fromFile?: string;
};

/** Links are written in chunks of about this many characters: one write per link is slow. */
const OUTPUT_CHUNK_CHARACTERS = 64 * 1024;

async function signLines(input: NodeJS.ReadableStream, template: Omit<SignRequest, 'imageUrl'>, signer: Signer): Promise<number> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  let pending = '';
  let lineNumber = 0;
  let failed = 0;
  const flush = async (): Promise<void> => {
    if (pending === '') return;
    const chunk = pending;
    pending = '';
    if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
  };
  for await (const line of lines) {
    lineNumber += 1;
    try {
      if (line.trim() === '') throw new UsageError('empty line');
      pending += `${signLinkFor({ ...template, imageUrl: line }, signer)}\n`;
    } catch (error) {
      if (!isImageproxyError(error) && !(error instanceof UsageError)) throw error;
      failed += 1;
      const reason = isImageproxyError(error) ? `${error.code}: ${error.message}` : error.message;
      process.stderr.write(`imageproxy: line ${lineNumber}: ${reason}\n`);
    }
    if (pending.length >= OUTPUT_CHUNK_CHARACTERS) await flush();
  }
  await flush();
  if (failed > 0) process.stderr.write(`imageproxy: ${failed} of ${lineNumber} lines not signed\n`);
  return failed > 0 ? EXIT_FAILURES : EXIT_OK;
}

function sourceOf(imageUrl: string | undefined, fromFile: string | undefined): { kind: 'url'; url: string } | { kind: 'file'; file: string } {
  if (imageUrl !== undefined && fromFile !== undefined) throw new UsageError('give an image URL or --from-file, not both');
  if (imageUrl !== undefined) return { kind: 'url', url: imageUrl };
  if (fromFile !== undefined) return { kind: 'file', file: fromFile };
  throw new UsageError('missing argument image-url (or --from-file FILE)');
}

async function sign(imageUrl: string | undefined, options: SignOptions): Promise<number> {
  const source = sourceOf(imageUrl, options.fromFile);
  const config = loadLinkConfig(options);
  const bucket = configuredBucket(config, '--bucket', options.bucket);
  const [secret] = configuredSecrets(config);
  if (secret === undefined) throw new UsageError('no secret: give --secret, or set secrets or secretFile in the config');
  const template: Omit<SignRequest, 'imageUrl'> = {
    bucket,
    proxy: options.proxy === true,
    legacy: options.legacy === true,
    atMs: parseInstant(options.at),
    ...(options.height === undefined ? {} : { height: parsePositiveInteger('--height', options.height) }),
    ...(options.width === undefined ? {} : { width: parsePositiveInteger('--width', options.width) }),
  };
  const signer: Signer = { policy: policyOf(config), secret };
  if (source.kind === 'file') {
    if (source.file === '-') return signLines(process.stdin, template, signer);
    const file = await open(source.file).catch((error: Error) => {
      throw new UsageError(`--from-file: ${error.message}`);
    });
    try {
      return await signLines(file.createReadStream({ encoding: 'utf8', autoClose: false }), template, signer);
    } finally {
      await file.close();
    }
  }
  try {
    process.stdout.write(`${signLinkFor({ ...template, imageUrl: source.url }, signer)}\n`);
    return EXIT_OK;
  } catch (error) {
    if (isImageproxyError(error)) throw new UsageError(`cannot sign ${source.url}: ${error.code}: ${error.message}`);
    throw error;
  }
}

export function register(program: Command): void {
  withLinkOptions(
    withCommon(program.command('sign [image-url]').description('print the signed link for an image URL, as Gazelle would'))
      .option('--bucket <bucket>', 'bucket', 'i')
      .option('--height <n>', 'maximum height (an allowed size)')
      .option('--width <n>', 'maximum width (an allowed size)')
      .option('--proxy', 'pass-through link (always full size: --height and --width are ignored)')
      .option('--legacy', 'sign without the bucket prefix (links from before buckets; the bucket must allow them)')
      .option('--from-file <file>', 'sign one image URL per line of this file (- for stdin): one link per line out, in order; unsignable lines go to stderr and make the exit code 1'),
  ).action(async (imageUrl: string | undefined, options: SignOptions) => {
    process.exitCode = await sign(imageUrl, options);
  });
}
