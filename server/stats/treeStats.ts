/**
 * Statistics of a bucket tree. Pure: the figures of one file are added to its bucket's
 * totals (and to its figures by format: originals by type, thumbnails by format class
 * and by type), buckets merge into a total, and the result is formatted as the human
 * table or the JSON of `imageproxy stats`. A thumbnail that is a hard link of another in
 * its directory counts as a file, its bytes once. server/stats/treeStatsWalk.ts gathers the facts from disk.
 */
import { BLOCK_KINDS, type BlockEntry, type BlockKind } from '../takedown/blocklist.js';
import { IMAGE_EXTENSIONS, isImageExtension, parseThumbnailName, type ImageExtension, type TreeFileKind } from '../contract/layout.js';
import { MODERN_FORMATS, type FormatClass } from '../contract/accept.js';

/** What the walk learnt about one file: its kind by name, and for images size and mtime. */
export interface TreeFileFacts {
  kind: TreeFileKind;
  /** The file's name: what the figures by format read an image's type and class from. */
  name?: string;
  /** Size in bytes; read for originals and thumbnails only. */
  bytes?: number;
  /** Modification time; an original's is when it was fetched (written once, atomically). */
  modifiedMs?: number;
  /**
   * A thumbnail that is another name of a file counted already in its directory (a hard
   * link: a format class's file where converting did not pay): counted as a file, its
   * bytes not again (linkedThumbnailNames).
   */
  linked?: boolean;
}

/** The figures of one bucket (or the total of several). Field names are the JSON's. */
export interface BucketStats {
  originals: number;
  thumbnails: number;
  /** `{key}.json` metadata sidecars. */
  sidecars: number;
  /** `.fail` backoff records: fetches that failed and are retried only after a window. */
  backoff: number;
  /** In-progress writes, or leftovers of a crash until the temp sweep. */
  temp: number;
  /** Files whose names are none of ours. */
  other: number;
  /** originalBytes + thumbnailBytes. */
  bytes: number;
  originalBytes: number;
  thumbnailBytes: number;
  /** mtime of the oldest and newest original, epoch ms; null without originals. */
  oldestFetchMs: number | null;
  newestFetchMs: number | null;
}

/** Files and bytes of one type or class of image. */
export interface FileFigures {
  files: number;
  bytes: number;
}

/** A format class's thumbnails; `linked` of its files are hard links whose bytes are counted under another name. */
interface ClassFigures extends FileFigures {
  linked: number;
}

/**
 * The images of one bucket (or the total of several) by format. Field names are the
 * JSON's. Each sums to its BucketStats figure: originalsByType to originals and
 * originalBytes; thumbnailsByClass and thumbnailsByType each to thumbnails and
 * thumbnailBytes (a hard-linked file's bytes counted once, under the name that sorts
 * first: the source-format thumbnail's).
 */
export interface FormatFigures {
  /** Originals by file type (extension). */
  originalsByType: Record<ImageExtension, FileFigures>;
  /** Thumbnails by the class of clients they serve: `source` `{key}.{label}.{ext}`, `avif` and `webp` `{key}.{label}.{format}.{ext}`. */
  thumbnailsByClass: Record<FormatClass, ClassFigures>;
  /** Thumbnails by file type (extension): a class's file in the source format counts as that format. */
  thumbnailsByType: Record<ImageExtension, FileFigures>;
}

/** Blocklist entries by kind: tree-wide, the blocklist has no buckets. */
export type BlockedCounts = Record<BlockKind, number>;

export interface TreeStats {
  /** False when the walk was interrupted: the figures then cover only part of the tree. */
  complete: boolean;
  root: string;
  /** Per bucket, in the order walked. */
  buckets: Record<string, BucketStats>;
  /** The same buckets' images by format. */
  formats: Record<string, FormatFigures>;
  /** null when the blocklist could not be read; `blockedError` then says why. */
  blocked: BlockedCounts | null;
  blockedError: string | null;
  /** Shard directories walked, and how many the buckets have (64 × 64 each). */
  shardsWalked: number;
  shardsTotal: number;
  startedMs: number;
  durationMs: number;
}

export function emptyBucketStats(): BucketStats {
  return {
    originals: 0,
    thumbnails: 0,
    sidecars: 0,
    backoff: 0,
    temp: 0,
    other: 0,
    bytes: 0,
    originalBytes: 0,
    thumbnailBytes: 0,
    oldestFetchMs: null,
    newestFetchMs: null,
  };
}

/** `pick` (Math.min or Math.max) of two instants, either of which may be missing. */
function pickInstant(pick: (a: number, b: number) => number, a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return pick(a, b);
}

/** The counter of each kind of file that is counted, not measured. */
const COUNTER_OF_KIND = { sidecar: 'sidecars', failure: 'backoff', temp: 'temp', other: 'other' } as const;

/**
 * Adds one file to `totals`, in place: a walk adds millions of files, one object each
 * would only feed the garbage collector.
 */
export function addTreeFile(totals: BucketStats, file: TreeFileFacts): void {
  const bytes = file.bytes ?? 0;
  switch (file.kind) {
    case 'original':
      totals.originals += 1;
      totals.originalBytes += bytes;
      totals.bytes += bytes;
      if (file.modifiedMs !== undefined) {
        totals.oldestFetchMs = pickInstant(Math.min, totals.oldestFetchMs, file.modifiedMs);
        totals.newestFetchMs = pickInstant(Math.max, totals.newestFetchMs, file.modifiedMs);
      }
      return;
    case 'thumbnail':
      totals.thumbnails += 1;
      if (file.linked === true) return;
      totals.thumbnailBytes += bytes;
      totals.bytes += bytes;
      return;
    case 'sidecar':
    case 'failure':
    case 'temp':
    case 'other':
      totals[COUNTER_OF_KIND[file.kind]] += 1;
      return;
  }
}

/** The classes in the order reports list them: the source format first. */
const CLASS_ORDER: readonly FormatClass[] = ['source', ...MODERN_FORMATS];

function figuresByType(): Record<ImageExtension, FileFigures> {
  return Object.fromEntries(IMAGE_EXTENSIONS.map((ext) => [ext, { files: 0, bytes: 0 }])) as Record<ImageExtension, FileFigures>;
}

export function emptyFormatFigures(): FormatFigures {
  return {
    originalsByType: figuresByType(),
    thumbnailsByClass: Object.fromEntries(CLASS_ORDER.map((formatClass) => [formatClass, { files: 0, bytes: 0, linked: 0 }])) as Record<FormatClass, ClassFigures>,
    thumbnailsByType: figuresByType(),
  };
}

/** The extension of an original's name `{key}.{ext}`, or null. */
function originalExtension(name: string): ImageExtension | null {
  const ext = name.slice(name.lastIndexOf('.') + 1);
  return isImageExtension(ext) ? ext : null;
}

/** Adds one file to the figures by format, in place (as addTreeFile); files of other kinds, or without a name, are not images of any format. */
export function addFormatFile(figures: FormatFigures, file: TreeFileFacts): void {
  if (file.name === undefined) return;
  const bytes = file.linked === true ? 0 : (file.bytes ?? 0);
  if (file.kind === 'original') {
    const ext = originalExtension(file.name);
    if (ext === null) return;
    figures.originalsByType[ext].files += 1;
    figures.originalsByType[ext].bytes += bytes;
    return;
  }
  if (file.kind !== 'thumbnail') return;
  const thumbnail = parseThumbnailName(file.name);
  if (thumbnail === null) return;
  const byClass = figures.thumbnailsByClass[thumbnail.formatClass];
  byClass.files += 1;
  byClass.bytes += bytes;
  if (file.linked === true) byClass.linked += 1;
  figures.thumbnailsByType[thumbnail.ext].files += 1;
  figures.thumbnailsByType[thumbnail.ext].bytes += bytes;
}

/**
 * The thumbnails of one directory whose bytes are counted under another name: of the
 * names that share an inode (`identity`: device and inode), all but the first in the
 * order source-format thumbnail first, then by name. Only names in the same directory
 * are compared: a link to a file outside it (an original imported by link from an
 * imageproxy-py tree) is a file of its own here.
 */
export function linkedThumbnailNames(thumbnails: ReadonlyArray<{ name: string; identity: string }>): Set<string> {
  const byIdentity = new Map<string, string[]>();
  for (const { name, identity } of thumbnails) byIdentity.set(identity, [...(byIdentity.get(identity) ?? []), name]);
  const linked = new Set<string>();
  const rank = (name: string): string => `${parseThumbnailName(name)?.formatClass === 'source' ? 0 : 1}${name}`;
  for (const names of byIdentity.values()) {
    if (names.length < 2) continue;
    const ordered = [...names].sort((a, b) => (rank(a) < rank(b) ? -1 : rank(a) > rank(b) ? 1 : 0));
    for (const name of ordered.slice(1)) linked.add(name);
  }
  return linked;
}

const sumFileFigures = (a: FileFigures, b: FileFigures): FileFigures => ({ files: a.files + b.files, bytes: a.bytes + b.bytes });
const sumClassFigures = (a: ClassFigures, b: ClassFigures): ClassFigures => ({ ...sumFileFigures(a, b), linked: a.linked + b.linked });

function mergeRecords<Key extends string, Figures>(a: Record<Key, Figures>, b: Record<Key, Figures>, sum: (a: Figures, b: Figures) => Figures): Record<Key, Figures> {
  return Object.fromEntries((Object.keys(a) as Key[]).map((key) => [key, sum(a[key], b[key])])) as Record<Key, Figures>;
}

/** The figures by format of `a` and `b` together (a new object). */
export function mergeFormatFigures(a: FormatFigures, b: FormatFigures): FormatFigures {
  return {
    originalsByType: mergeRecords(a.originalsByType, b.originalsByType, sumFileFigures),
    thumbnailsByClass: mergeRecords(a.thumbnailsByClass, b.thumbnailsByClass, sumClassFigures),
    thumbnailsByType: mergeRecords(a.thumbnailsByType, b.thumbnailsByType, sumFileFigures),
  };
}

function totalFormats(stats: TreeStats): FormatFigures {
  return Object.values(stats.formats).reduce(mergeFormatFigures, emptyFormatFigures());
}

/** The figures of `a` and `b` together (a new object). */
export function mergeBucketStats(a: BucketStats, b: BucketStats): BucketStats {
  return {
    originals: a.originals + b.originals,
    thumbnails: a.thumbnails + b.thumbnails,
    sidecars: a.sidecars + b.sidecars,
    backoff: a.backoff + b.backoff,
    temp: a.temp + b.temp,
    other: a.other + b.other,
    bytes: a.bytes + b.bytes,
    originalBytes: a.originalBytes + b.originalBytes,
    thumbnailBytes: a.thumbnailBytes + b.thumbnailBytes,
    oldestFetchMs: pickInstant(Math.min, a.oldestFetchMs, b.oldestFetchMs),
    newestFetchMs: pickInstant(Math.max, a.newestFetchMs, b.newestFetchMs),
  };
}

export function totalStats(stats: TreeStats): BucketStats {
  return Object.values(stats.buckets).reduce(mergeBucketStats, emptyBucketStats());
}

/** Blocklist entries by kind. */
export function countBlocked(entries: readonly Pick<BlockEntry, 'kind'>[]): BlockedCounts {
  const counts: BlockedCounts = { key: 0, digest: 0, host: 0 };
  for (const entry of entries) counts[entry.kind] += 1;
  return counts;
}

function blockedTotal(blocked: BlockedCounts): number {
  return BLOCK_KINDS.reduce((sum, kind) => sum + blocked[kind], 0);
}

const BYTE_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `512 B`, `1.5 KiB`, `20.0 GiB`: binary units, one decimal. */
export function humanBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes;
  let unit = -1;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${BYTE_UNITS[unit]}`;
}

/** ISO 8601 to the second (`2026-01-02T03:04:05Z`), or `-`. */
export function formatInstant(ms: number | null): string {
  return ms === null ? '-' : new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

const TABLE_HEADER = ['bucket', 'originals', 'thumbnails', 'bytes', 'in backoff', 'oldest fetch', 'newest fetch'];
/** Left-aligned columns; the rest are numbers, right-aligned. */
const LEFT_ALIGNED = new Set([0, 5, 6]);

function tableRow(name: string, figures: BucketStats): string[] {
  return [
    name,
    String(figures.originals),
    String(figures.thumbnails),
    `${humanBytes(figures.bytes)} (${figures.bytes})`,
    String(figures.backoff),
    formatInstant(figures.oldestFetchMs),
    formatInstant(figures.newestFetchMs),
  ];
}

function alignColumns(rows: string[][]): string[] {
  const widths = TABLE_HEADER.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  return rows.map((row) =>
    row
      .map((cell, column) => (LEFT_ALIGNED.has(column) ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/** `3 (1.2 KiB (1234))`: files and bytes, and the hard links whose bytes are counted under another name. */
function figuresText(figures: FileFigures & { linked?: number }): string {
  const linked = figures.linked === undefined || figures.linked === 0 ? '' : `, ${figures.linked} hard-linked`;
  return `${figures.files} (${humanBytes(figures.bytes)}${linked})`;
}

/** Every class, and the types that have files (`none` when no type has). */
function figuresLine(title: string, figures: Record<string, FileFigures & { linked?: number }>, everyEntry: boolean): string {
  const entries = Object.entries(figures).filter(([, each]) => everyEntry || each.files > 0);
  return `${title}: ${entries.length === 0 ? 'none' : entries.map(([name, each]) => `${name} ${figuresText(each)}`).join(', ')}`;
}

/** The images of every bucket walked by format, under the table. */
function formatLines(formats: FormatFigures): string[] {
  return [
    figuresLine('thumbnails by class', formats.thumbnailsByClass, true),
    figuresLine('thumbnails by type', formats.thumbnailsByType, false),
    figuresLine('originals by type', formats.originalsByType, false),
  ];
}

function blockedLine(stats: TreeStats): string {
  const { blocked } = stats;
  if (blocked === null) return `blocked: unknown: ${stats.blockedError ?? 'the blocklist could not be read'}`;
  return `blocked (all buckets): ${blockedTotal(blocked)} entries: key ${blocked.key}, digest ${blocked.digest}, host ${blocked.host}`;
}

/**
 * The human report: one row per bucket and a total row, then the files that are neither
 * images nor backoff records, and the blocklist. An interrupted walk says so first.
 */
export function formatStatsTable(stats: TreeStats): string {
  const total = totalStats(stats);
  const rows = [TABLE_HEADER, ...Object.entries(stats.buckets).map(([name, figures]) => tableRow(name, figures))];
  if (Object.keys(stats.buckets).length > 1) rows.push(tableRow('total', total));
  const lines: string[] = [];
  if (!stats.complete) {
    lines.push(`INTERRUPTED: partial figures, ${stats.shardsWalked} of ${stats.shardsTotal} shard directories walked`);
  }
  lines.push(...alignColumns(rows));
  lines.push(...formatLines(totalFormats(stats)));
  lines.push(`sidecars ${total.sidecars}, temp files ${total.temp}, other files ${total.other}`);
  lines.push(blockedLine(stats));
  return `${lines.join('\n')}\n`;
}

/** JSON form of a bucket's figures: instants as ISO strings (or null), the rest as counted. */
function bucketJson(figures: BucketStats): Record<string, number | string | null> {
  const { oldestFetchMs, newestFetchMs, ...counts } = figures;
  return {
    ...counts,
    oldestFetch: oldestFetchMs === null ? null : new Date(oldestFetchMs).toISOString(),
    newestFetch: newestFetchMs === null ? null : new Date(newestFetchMs).toISOString(),
  };
}

/** The one JSON object of `imageproxy stats --json` (field names documented in docs/operations.md, Statistics). */
export function formatStatsJson(stats: TreeStats): string {
  const blocked = stats.blocked === null ? null : { ...stats.blocked, total: blockedTotal(stats.blocked) };
  return `${JSON.stringify({
    complete: stats.complete,
    root: stats.root,
    scannedAt: new Date(stats.startedMs).toISOString(),
    durationSeconds: Math.round(stats.durationMs) / 1000,
    shardsWalked: stats.shardsWalked,
    shardsTotal: stats.shardsTotal,
    buckets: Object.fromEntries(Object.entries(stats.buckets).map(([name, figures]) => [name, bucketJson(figures)])),
    total: bucketJson(totalStats(stats)),
    formats: { buckets: stats.formats, total: totalFormats(stats) },
    blocked,
    blockedError: stats.blockedError,
  })}\n`;
}
