/**
 * The takedown blocklist: what an operator refuses to serve or fetch, by storage key (an
 * image URL, in every bucket), by the sha256 of the image's bytes (the same photo under
 * any other URL) and by origin host. Pure: parse and format the file
 * (`{root}/.imageproxy/blocklist.json`, read and written by server/takedown/blocklistStore.ts),
 * normalise hosts, add and remove entries, and match a request against the list.
 *
 * File: `{"version":1,"entries":[{"kind":"key"|"digest"|"host","value":"…","at":"ISO time",
 * "by":"command line","note":"…"}]}`; a digest entry may name the `key` whose purge
 * recorded it (unblocking that key removes the digest too), a key entry its image `url`.
 */

const BLOCKLIST_VERSION = 1;

export const BLOCK_KINDS = ['key', 'digest', 'host'] as const;
export type BlockKind = (typeof BLOCK_KINDS)[number];

export interface BlockEntry {
  kind: BlockKind;
  /** key: 43 base64url characters; digest: 64 lowercase hex; host: as normaliseHost makes it. */
  value: string;
  /** When it was added (ISO); empty for the config's blockedHosts. */
  at: string;
  /** Who added it: the command line (secrets redacted), or `config blockedHosts`. */
  by: string;
  note?: string;
  /** Digest entries: the key whose purge recorded the digest. */
  key?: string;
  /** Key entries: the image URL, for whoever reads the list. */
  url?: string;
}

export interface Blocklist {
  version: typeof BLOCKLIST_VERSION;
  entries: BlockEntry[];
}

/** What a request (or a fetched image) is matched on; absent fields are not checked. */
export interface BlockQuery {
  key?: string;
  /** A host as URL.hostname gives it; normalised here. */
  host?: string;
  /** sha256 hex digests of the image's bytes. */
  digests?: readonly string[];
}

export class BlocklistFormatError extends Error {}

export function emptyBlocklist(): Blocklist {
  return { version: BLOCKLIST_VERSION, entries: [] };
}

const KEY_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const DIGEST_PATTERN = /^[0-9a-f]{64}$/;
// Characters that can only mean the text is more than a host (a URL, a path, credentials).
const NOT_A_HOST_PATTERN = /[/?#@\\\s%]/;

/**
 * A host as the blocklist keeps it and as a request's URL.hostname is compared: lowercase,
 * IDNA (punycode) and IPv4 forms as the WHATWG URL parser makes them (`127.1` is
 * `127.0.0.1`), IPv6 in brackets, without a trailing dot. null when the text is not a
 * bare host (a port, path, scheme or credentials included).
 */
export function normaliseHost(text: string): string | null {
  const trimmed = text.trim();
  if (trimmed === '' || NOT_A_HOST_PATTERN.test(trimmed)) return null;
  const bare = trimmed.replace(/^\[(.*)\]$/, '$1');
  const ipv6 = bare.includes(':');
  let url: URL;
  try {
    url = new URL(`http://${ipv6 ? `[${bare}]` : bare}/`);
  } catch {
    return null;
  }
  if (url.port !== '' || url.pathname !== '/' || url.username !== '' || url.hostname === '') return null;
  const host = ipv6 ? url.hostname : url.hostname.replace(/\.+$/, '');
  return host === '' ? null : host;
}

/** An entry's value in its kind's canonical form, or null when it is not one. */
function normaliseValue(kind: BlockKind, value: string): string | null {
  switch (kind) {
    case 'key':
      return KEY_PATTERN.test(value) ? value : null;
    case 'digest': {
      const lower = value.toLowerCase();
      return DIGEST_PATTERN.test(lower) ? lower : null;
    }
    case 'host':
      return normaliseHost(value);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalString(where: string, record: Record<string, unknown>, field: string): string | undefined {
  const value = record[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new BlocklistFormatError(`${where}.${field} must be a string`);
  return value;
}

/** Reads the file's text; throws BlocklistFormatError naming the entry at fault. */
export function parseBlocklist(text: string): Blocklist {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new BlocklistFormatError(`not valid JSON: ${(error as Error).message}`);
  }
  if (!isRecord(parsed)) throw new BlocklistFormatError('must hold a JSON object');
  if (parsed.version !== BLOCKLIST_VERSION) {
    throw new BlocklistFormatError(`version must be ${BLOCKLIST_VERSION}, got ${JSON.stringify(parsed.version)}`);
  }
  if (!Array.isArray(parsed.entries)) throw new BlocklistFormatError('entries must be a list');
  const entries = parsed.entries.map((raw: unknown, index: number): BlockEntry => {
    const where = `entries[${index}]`;
    if (!isRecord(raw)) throw new BlocklistFormatError(`${where} must be an object`);
    const kind = raw.kind;
    if (typeof kind !== 'string' || !(BLOCK_KINDS as readonly string[]).includes(kind)) {
      throw new BlocklistFormatError(`${where}.kind must be one of ${BLOCK_KINDS.join(', ')}`);
    }
    const blockKind = kind as BlockKind;
    const rawValue = raw.value;
    const value = typeof rawValue === 'string' ? normaliseValue(blockKind, rawValue) : null;
    if (value === null) throw new BlocklistFormatError(`${where}.value is not a valid ${blockKind}: ${JSON.stringify(rawValue)}`);
    const entry: BlockEntry = {
      kind: blockKind,
      value,
      at: optionalString(where, raw, 'at') ?? '',
      by: optionalString(where, raw, 'by') ?? '',
    };
    const note = optionalString(where, raw, 'note');
    if (note !== undefined) entry.note = note;
    const key = optionalString(where, raw, 'key');
    if (key !== undefined) {
      if (normaliseValue('key', key) === null) throw new BlocklistFormatError(`${where}.key is not a storage key`);
      entry.key = key;
    }
    const url = optionalString(where, raw, 'url');
    if (url !== undefined) entry.url = url;
    return entry;
  });
  return { version: BLOCKLIST_VERSION, entries };
}

/** The entry with its fields in the file's order, absent ones left out. */
function canonicalEntry(entry: BlockEntry): BlockEntry {
  const { kind, value, at, by, note, key, url } = entry;
  return {
    kind,
    value,
    at,
    by,
    ...(note === undefined ? {} : { note }),
    ...(key === undefined ? {} : { key }),
    ...(url === undefined ? {} : { url }),
  };
}

/** The file's text: one entry per line, so a diff of two versions reads entry by entry. */
export function formatBlocklist(list: Blocklist): string {
  const lines = list.entries.map((entry) => `    ${JSON.stringify(canonicalEntry(entry))}`);
  return `{\n  "version": ${BLOCKLIST_VERSION},\n  "entries": [\n${lines.join(',\n')}${lines.length > 0 ? '\n' : ''}  ]\n}\n`;
}

function identity(entry: Pick<BlockEntry, 'kind' | 'value'>): string {
  return `${entry.kind}\u0000${entry.value}`;
}

/** The list with `entries` added, skipping any already there (same kind and value). */
export function addEntries(list: Blocklist, entries: readonly BlockEntry[]): { list: Blocklist; added: BlockEntry[] } {
  const present = new Set(list.entries.map(identity));
  const added: BlockEntry[] = [];
  for (const entry of entries) {
    const id = identity(entry);
    if (present.has(id)) continue;
    present.add(id);
    added.push(entry);
  }
  return { list: { version: BLOCKLIST_VERSION, entries: [...list.entries, ...added] }, added };
}

/** The list without the entries `matches` selects. */
export function removeEntries(
  list: Blocklist,
  matches: (entry: BlockEntry) => boolean,
): { list: Blocklist; removed: BlockEntry[] } {
  const removed = list.entries.filter(matches);
  return { list: { version: BLOCKLIST_VERSION, entries: list.entries.filter((entry) => !matches(entry)) }, removed };
}

/** Selects the key's entry and the digests recorded with it: what `unblock <link>` removes. */
export function entriesOfKey(key: string): (entry: BlockEntry) => boolean {
  return (entry) => (entry.kind === 'key' && entry.value === key) || (entry.kind === 'digest' && entry.key === key);
}

/** The list plus the config's blockedHosts (already normalised), marked as coming from the config. */
export function withConfigHosts(list: Blocklist, hosts: readonly string[]): Blocklist {
  if (hosts.length === 0) return list;
  return addEntries(
    list,
    hosts.map((host) => ({ kind: 'host' as const, value: host, at: '', by: 'config blockedHosts' })),
  ).list;
}

interface BlocklistIndex {
  keys: Map<string, BlockEntry>;
  digests: Map<string, BlockEntry>;
  hosts: Map<string, BlockEntry>;
}

// Built once per list object: a running server matches every request against the same list.
const indexes = new WeakMap<Blocklist, BlocklistIndex>();

function indexOf(list: Blocklist): BlocklistIndex {
  let index = indexes.get(list);
  if (index === undefined) {
    index = { keys: new Map(), digests: new Map(), hosts: new Map() };
    const byKind = { key: index.keys, digest: index.digests, host: index.hosts };
    for (const entry of list.entries) {
      if (!byKind[entry.kind].has(entry.value)) byKind[entry.kind].set(entry.value, entry);
    }
    indexes.set(list, index);
  }
  return index;
}

/** The entry that blocks this request or image, or null. */
export function isBlocked(list: Blocklist, query: BlockQuery): BlockEntry | null {
  const index = indexOf(list);
  if (query.key !== undefined) {
    const entry = index.keys.get(query.key);
    if (entry !== undefined) return entry;
  }
  if (query.host !== undefined && index.hosts.size > 0) {
    const host = normaliseHost(query.host);
    const entry = host === null ? undefined : index.hosts.get(host);
    if (entry !== undefined) return entry;
  }
  for (const digest of query.digests ?? []) {
    const entry = index.digests.get(digest.toLowerCase());
    if (entry !== undefined) return entry;
  }
  return null;
}
