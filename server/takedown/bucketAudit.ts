/**
 * The takedown audit log in an S3 bucket: S3 cannot append, so each record is an object
 * of its own, `.imageproxy/audit/{ISO time}-{random}.json`, holding the line the tree's
 * log would get (server/takedown/audit.ts). The ISO time sorts as text, so a listing
 * (in name order) reads the log back in order; the random part keeps two commands of the
 * same millisecond apart. A record is created, never replaced (`If-None-Match: *`).
 * A record copied from a tree's log (`migrate-storage`) is named by its line's digest
 * instead, so a copy made twice is one object.
 */
import { createHash, randomBytes } from 'node:crypto';
import { formatAuditLine, type AuditRecord } from './audit.js';
import { STATE_DIRECTORY } from '../contract/layout.js';
import { parseJsonObject } from '../tree/originals.js';
import type { ObjectStore } from '../storage/objectStore.js';

export const AUDIT_OBJECT_DIRECTORY = `${STATE_DIRECTORY}/audit/`;
/** A record is one line of a few KB; a longer object is not ours. */
const AUDIT_RECORD_READ_CAP = 1024 * 1024;

/** The object name of a record written at `time` (ISO): `.imageproxy/audit/{time}-{16 hex}.json`. */
function auditObjectName(time: string, random: string = randomBytes(8).toString('hex')): string {
  return `${AUDIT_OBJECT_DIRECTORY}${time}-${random}.json`;
}

const ISO_TIME_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * A log line as its record and its canonical text (`formatAuditLine` of the parsed
 * record: what compares a tree's line with an object's), or null when the line is no
 * record with an ISO time (a torn or foreign line).
 */
export function parseAuditLine(line: string): { record: AuditRecord; text: string } | null {
  const parsed = parseJsonObject(line);
  const time = parsed?.time;
  if (parsed === null || typeof time !== 'string' || !ISO_TIME_PATTERN.test(time)) return null;
  const record = parsed as unknown as AuditRecord;
  return { record, text: formatAuditLine(record) };
}

/** The object a record copied from a tree's log gets: its time, and the first 64 bits of its canonical line's sha256. */
export function copiedAuditObjectName(record: AuditRecord, text: string): string {
  return auditObjectName(record.time, createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 16));
}

/** The record time an audit object's name carries, or null for a name that is none of ours. */
export function auditObjectTime(name: string): string | null {
  if (!name.startsWith(AUDIT_OBJECT_DIRECTORY)) return null;
  const time = name.slice(AUDIT_OBJECT_DIRECTORY.length, name.lastIndexOf('-'));
  return ISO_TIME_PATTERN.test(time) ? time : null;
}

/** Stores the record as an object named by its time (now, if the record's is not ISO); answers the name. */
export async function appendBucketAuditRecord(store: ObjectStore, record: AuditRecord): Promise<string> {
  const body = Buffer.from(formatAuditLine(record), 'utf8');
  const time = ISO_TIME_PATTERN.test(record.time) ? record.time : new Date().toISOString();
  // 64 random bits: a second round is for the record books, not for this loop.
  for (;;) {
    const name = auditObjectName(time);
    if ((await store.create(name, body, { contentType: 'application/json' })) === 'created') return name;
  }
}

/** An audit object's line, or null when it is gone. */
export async function readBucketAuditRecord(store: ObjectStore, name: string): Promise<string | null> {
  const found = await store.get(name, { maxBytes: AUDIT_RECORD_READ_CAP });
  return found === null ? null : found.bytes.toString('utf8');
}

/** Every record's line in the bucket, oldest first (the objects' names order them). */
export async function* readBucketAuditLog(store: ObjectStore): AsyncIterable<{ name: string; line: string }> {
  for await (const listed of store.list(AUDIT_OBJECT_DIRECTORY)) {
    const line = await readBucketAuditRecord(store, listed.name);
    if (line !== null) yield { name: listed.name, line };
  }
}
