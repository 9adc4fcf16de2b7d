/**
 * Builds imageproxy-py trees for the import-legacy tests and benchmark: the layout
 * imageproxy-py wrote (`{bucket}/{A}/{B}/{sha224 name}` beside `{name}.headers`), with
 * whatever bytes and headers the caller gives, so bad entries are as easy as good ones.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { legacyImageName } from '../server/ops/legacyTree.js';

export interface LegacyEntrySpec {
  bucket: string;
  /** The ext_url as it appeared in the link (padded or not): hashed for the name. */
  extUrl: string;
  bytes: Buffer;
  /** `.headers` text; default: the two lines imageproxy-py wrote. Null: no `.headers`. */
  headers?: string | null;
  contentType?: string;
  /** Override the file name (a name that does not match the URL). */
  name?: string;
}

export function legacyHeadersText(extUrl: string, contentType = 'image/jpeg'): string {
  return `content-type ${contentType}\nx-original-url ${extUrl}\n`;
}

/** Writes one legacy entry; returns its path relative to the py root. */
export async function writeLegacyEntry(pyRoot: string, spec: LegacyEntrySpec): Promise<string> {
  const name = spec.name ?? legacyImageName(spec.extUrl);
  const relativeDir = `${spec.bucket}/${name[0]}/${name[1]}`;
  const directory = join(pyRoot, relativeDir);
  await mkdir(directory, { recursive: true });
  await writeFile(join(directory, name), spec.bytes);
  const headers = spec.headers === undefined ? legacyHeadersText(spec.extUrl, spec.contentType) : spec.headers;
  if (headers !== null) await writeFile(join(directory, `${name}.headers`), headers);
  return `${relativeDir}/${name}`;
}
