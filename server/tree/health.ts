/**
 * What is wrong in one shard directory of the tree, and what fixing it takes. Pure: given
 * the directory's entries with their sizes and mtimes, the sidecars read, the formats
 * sniffed (and, with `--decode`, the decode errors), it returns findings and repair
 * steps. server/tree/healthWalk.ts gathers those facts and carries the steps out; the
 * app's lookup (server/tree/store.ts find) uses the soundness checks of originals and
 * thumbnails alone.
 *
 * Findings:
 * - `stale-temp`: a temp file older than tempMaxAgeSeconds, or written on this host by
 *   a process that no longer exists (whatever its age).
 * - `stale-lock`: a lock directory its holder stopped refreshing (server/fetch/singleFlight.ts).
 * - `missing-sidecar`: an original without a readable `{key}.json`.
 * - `damaged-original`: empty, not of its extension's format, not decodable, a size
 *   other than its sidecar's, or (in the heal pass's sample) a digest other than its
 *   sidecar's.
 * - `damaged-thumbnail`: empty, not of its extension's format, not decodable, or a size
 *   or (in the sample) a digest other than its record's in the key's sidecar. The files
 *   of format classes (`{key}.{label}.{format}.{ext}`) are thumbnails, each with a record
 *   of its own (layout.variantRecordName); a hard link of the source-format thumbnail is
 *   one too, judged as any file.
 * - `not-regular`: a symbolic link, FIFO, socket or device at a name of ours, or a
 *   bucket or shard directory that is a symbolic link (not walked). Nothing reads it: a
 *   link may lead out of the tree, a FIFO would block its reader.
 */
import {
  classifyTreeFile,
  failureFileName,
  isLockDirectoryName,
  isTempFileName,
  keyOfTreeFile,
  metadataFileName,
  parseThumbnailName,
  tempFileWriter,
  variantRecordName,
  type ImageExtension,
} from '../contract/layout.js';
import { parseJsonObject, sidecarFieldsOf, variantRecordsOf, type VariantRecord } from './originals.js';
import { FORMAT_INFO, type ImageFormat } from '../images/sniff.js';

export const FINDING_KINDS = ['stale-temp', 'stale-lock', 'missing-sidecar', 'damaged-original', 'damaged-thumbnail', 'not-regular'] as const;
export type FindingKind = (typeof FINDING_KINDS)[number];

export interface ShardEntry {
  name: string;
  isDirectory: boolean;
  bytes: number;
  modifiedMs: number;
  /** What the entry is when it is neither a regular file nor a directory ("a FIFO"). */
  irregular?: string;
}

/**
 * A sidecar as read: the original's byte count and digest, the records of its variants
 * by label (absent: none recorded), or null when it cannot be parsed.
 */
export type SidecarReading = { bytes: number; sha256?: string; variants?: Readonly<Record<string, VariantRecord>> } | null;

export interface ShardFacts {
  entries: readonly ShardEntry[];
  /** Sidecars read, by key; a key whose sidecar is listed but absent here was not read. */
  sidecars: ReadonlyMap<string, SidecarReading>;
  /** Format sniffed from each image's first bytes, by name (null: none of ours). */
  sniffed: ReadonlyMap<string, ImageFormat | null>;
  /** With `--decode`: why an image failed to decode, by name. */
  decodeErrors?: ReadonlyMap<string, string>;
}

export interface HealContext {
  nowMs: number;
  tempMaxAgeMs: number;
  lockStaleMs: number;
  /** layout.hostTag() of this host: temps with another tag are judged by age alone. */
  thisHostTag: string;
  /** Whether a process with this pid exists on this host. */
  pidAlive: (pid: number) => boolean;
}

export interface Finding {
  kind: FindingKind;
  /** The entry's name in the shard directory. */
  name: string;
  /** The key the entry belongs to, when it has one. */
  key: string | null;
  detail: string;
}

/** What a sidecar's text records; null for text that is not a sidecar (no byte count). */
export function parseSidecar(text: string): SidecarReading {
  const parsed = parseJsonObject(text);
  if (parsed === null) return null;
  const { bytes, sha256 } = sidecarFieldsOf(parsed);
  if (bytes === null) return null;
  const variants = variantRecordsOf(parsed);
  return { bytes, ...(sha256 === null ? {} : { sha256 }), ...(Object.keys(variants).length === 0 ? {} : { variants }) };
}

/** The name of a thumbnail's record in its key's sidecar (layout.variantRecordName), or null for any other file name. */
export function variantRecordNameOf(name: string): string | null {
  const thumbnail = parseThumbnailName(name);
  return thumbnail === null ? null : variantRecordName(thumbnail.label, thumbnail.formatClass);
}

/** The record of a thumbnail in its key's sidecar, or undefined when there is none (an older tree: unknown, not damaged). */
export function variantRecordIn(sidecar: SidecarReading | undefined, name: string): VariantRecord | undefined {
  const recordName = variantRecordNameOf(name);
  if (recordName === null || sidecar === undefined || sidecar === null || sidecar.variants === undefined) return undefined;
  return Object.hasOwn(sidecar.variants, recordName) ? sidecar.variants[recordName] : undefined;
}

function extOf(name: string): ImageExtension {
  return name.slice(name.lastIndexOf('.') + 1) as ImageExtension;
}

/** Why a stored image cannot be served as it is, judged by what is known of it; null when sound. */
export function damagedImageReason(image: {
  name: string;
  bytes: number;
  /** undefined: not sniffed (the app's cheap check). */
  sniffed?: ImageFormat | null;
  decodeError?: string;
  /** Originals only: the sidecar read (undefined: none, or not read). */
  sidecar?: SidecarReading;
  /** Thumbnails only: the record in the key's sidecar (undefined: none, or not read). */
  variantRecord?: VariantRecord;
  /** sha256 (hex) of the bytes, when they were read whole (the heal pass's sample). */
  sha256?: string;
}): string | null {
  if (image.bytes === 0) return 'empty';
  if (image.sniffed !== undefined) {
    const ext = extOf(image.name);
    if (image.sniffed === null) return `not an image (a .${ext} of none of our formats)`;
    if (FORMAT_INFO[image.sniffed].ext !== ext) return `a ${image.sniffed} image stored as .${ext}`;
  }
  if (image.decodeError !== undefined) return `does not decode: ${image.decodeError}`;
  const recorded = image.sidecar ?? image.variantRecord ?? null;
  const recordName = image.sidecar === undefined ? 'record' : 'sidecar';
  if (recorded === null) return null;
  if (recorded.bytes !== image.bytes) return `${image.bytes} bytes, its ${recordName} says ${recorded.bytes}`;
  if (image.sha256 !== undefined && recorded.sha256 !== undefined && image.sha256 !== recorded.sha256) {
    return `sha256 ${image.sha256.slice(0, 12)}…, its ${recordName} says ${recorded.sha256.slice(0, 12)}… (bit rot, or overwritten)`;
  }
  return null;
}

function staleTempReason(entry: ShardEntry, context: HealContext): string | null {
  const ageMs = context.nowMs - entry.modifiedMs;
  if (ageMs > context.tempMaxAgeMs) return `older than ${Math.round(context.tempMaxAgeMs / 1000)} s`;
  const writer = tempFileWriter(entry.name);
  if (writer !== null && writer.hostTag === context.thisHostTag && !context.pidAlive(writer.pid)) {
    return `its writer (pid ${writer.pid}) is gone`;
  }
  return null;
}

/** The findings of one shard directory, in the order of its entries. */
export function shardFindings(facts: ShardFacts, context: HealContext): Finding[] {
  // An irregular entry is no sidecar: the original beside it is missing one.
  const names = new Set(facts.entries.filter((entry) => !entry.isDirectory && entry.irregular === undefined).map((entry) => entry.name));
  const findings: Finding[] = [];
  for (const entry of facts.entries) {
    const key = keyOfTreeFile(entry.name);
    if (entry.irregular !== undefined) {
      // At a name of ours only: a stray entry of another name is left alone, as a stray file is.
      if (classifyTreeFile(entry.name) !== 'other' || isLockDirectoryName(entry.name)) {
        findings.push({ kind: 'not-regular', name: entry.name, key, detail: `${entry.irregular}, not a regular file` });
      }
      continue;
    }
    if (entry.isDirectory) {
      if (isLockDirectoryName(entry.name) && context.nowMs - entry.modifiedMs > context.lockStaleMs) {
        findings.push({ kind: 'stale-lock', name: entry.name, key, detail: `not refreshed for ${Math.round((context.nowMs - entry.modifiedMs) / 1000)} s` });
      }
      continue;
    }
    if (isTempFileName(entry.name)) {
      const reason = staleTempReason(entry, context);
      if (reason !== null) findings.push({ kind: 'stale-temp', name: entry.name, key: null, detail: reason });
      continue;
    }
    const kind = classifyTreeFile(entry.name);
    if (kind !== 'original' && kind !== 'thumbnail') continue;
    const sidecarName = key === null ? null : metadataFileName(key);
    const hasSidecar = sidecarName !== null && names.has(sidecarName);
    const sidecar = kind === 'original' && hasSidecar && key !== null ? facts.sidecars.get(key) : undefined;
    const variantRecord = kind === 'thumbnail' && hasSidecar && key !== null ? variantRecordIn(facts.sidecars.get(key), entry.name) : undefined;
    const sniffed = facts.sniffed.get(entry.name);
    const decodeError = facts.decodeErrors?.get(entry.name);
    const reason = damagedImageReason({
      name: entry.name,
      bytes: entry.bytes,
      ...(facts.sniffed.has(entry.name) ? { sniffed: sniffed ?? null } : {}),
      ...(decodeError === undefined ? {} : { decodeError }),
      ...(sidecar === undefined ? {} : { sidecar }),
      ...(variantRecord === undefined ? {} : { variantRecord }),
    });
    if (reason !== null) {
      findings.push({ kind: kind === 'original' ? 'damaged-original' : 'damaged-thumbnail', name: entry.name, key, detail: reason });
    } else if (kind === 'original' && !hasSidecar) {
      findings.push({ kind: 'missing-sidecar', name: entry.name, key, detail: 'no sidecar' });
    } else if (kind === 'original' && sidecar === null) {
      findings.push({ kind: 'missing-sidecar', name: entry.name, key, detail: 'sidecar unreadable' });
    }
  }
  return findings;
}

export type RepairStep =
  | { action: 'remove'; name: string }
  | { action: 'remove-directory'; name: string }
  | { action: 'quarantine'; name: string }
  | { action: 'rebuild-sidecar'; name: string };

/**
 * What repairing a finding does, given the names in its directory. A damaged original
 * takes its sidecar along to the quarantine (the record of where it came from) and
 * removes its thumbnails and their backoff records: they were made from bytes that are
 * gone, and the next request remakes them from the refetched original at once.
 */
export function repairSteps(finding: Pick<Finding, 'kind' | 'name' | 'key'>, names: Iterable<string>): RepairStep[] {
  switch (finding.kind) {
    case 'stale-temp':
      return [{ action: 'remove', name: finding.name }];
    case 'stale-lock':
      return [{ action: 'remove-directory', name: finding.name }];
    case 'missing-sidecar':
      return [{ action: 'rebuild-sidecar', name: finding.name }];
    case 'damaged-thumbnail':
    case 'not-regular':
      return [{ action: 'quarantine', name: finding.name }];
    case 'damaged-original': {
      const steps: RepairStep[] = [{ action: 'quarantine', name: finding.name }];
      const key = finding.key;
      if (key === null) return steps;
      const sidecar = metadataFileName(key);
      const originalFailure = failureFileName(key);
      for (const name of [...names].sort()) {
        if (name === sidecar) steps.push({ action: 'quarantine', name });
        else if (name === finding.name || name === originalFailure || keyOfTreeFile(name) !== key) continue;
        else if (classifyTreeFile(name) === 'thumbnail' || classifyTreeFile(name) === 'failure') steps.push({ action: 'remove', name });
      }
      return steps;
    }
  }
}

/** Findings counted by kind, every kind present (zero included). */
export function countFindings(findings: Iterable<Pick<Finding, 'kind'>>): Record<FindingKind, number> {
  const counts = Object.fromEntries(FINDING_KINDS.map((kind) => [kind, 0])) as Record<FindingKind, number>;
  for (const finding of findings) counts[finding.kind] += 1;
  return counts;
}
