/**
 * Statistics of a bucket tree. Pure: the figures of one file are added to its bucket's
 * totals, buckets merge into a total, and the result is formatted as the human table or
 * the JSON of `imageproxy stats`. server/stats/treeStatsWalk.ts gathers the facts from disk.
 */
import { BLOCK_KINDS, type BlockEntry, type BlockKind } from '../takedown/blocklist.js';
import type { TreeFileKind } from '../contract/layout.js';

/** What the walk learnt about one file: its kind by name, and for images size and mtime. */
export interface TreeFileFacts {
  kind: TreeFileKind;
  /** Size in bytes; read for originals and thumbnails only. */
  bytes?: number;
  /** Modification time; an original's is when it was fetched (written once, atomically). */
  modifiedMs?: number;
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

/** Blocklist entries by kind: tree-wide, the blocklist has no buckets. */
export type BlockedCounts = Record<BlockKind, number>;

export interface TreeStats {
  /** False when the walk was interrupted: the figures then cover only part of the tree. */
  complete: boolean;
  root: string;
  /** Per bucket, in the order walked. */
  buckets: Record<string, BucketStats>;
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
    blocked,
    blockedError: stats.blockedError,
  })}\n`;
}
