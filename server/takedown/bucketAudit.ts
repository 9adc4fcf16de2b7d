/**
 * The takedown audit log in an S3 bucket: S3 cannot append, so each record is an object
 * of its own, `.imageproxy/audit/{ISO time}-{random}.json`, holding the line the tree's
 * log would get (server/takedown/audit.ts). The ISO time sorts as text, so a listing
 * (in name order) reads the log back in order; the random part keeps two commands of the
 * same millisecond apart. A record is created, never replaced (`If-None-Match: *`).
 */
import { randomBytes } from 'node:crypto';
import { formatAuditLine, type AuditRecord } from './audit.js';
import { STATE_DIRECTORY } from '../contract/layout.js';
import type { ObjectStore } from '../storage/objectStore.js';

const AUDIT_OBJECT_DIRECTORY = `${STATE_DIRECTORY}/audit/`;
/** A record is one line of a few KB; a longer object is not ours. */
const AUDIT_RECORD_READ_CAP = 1024 * 1024;

/** The object name of a record written at `time` (ISO): `.imageproxy/audit/{time}-{16 hex}.json`. */
function auditObjectName(time: string, random: string = randomBytes(8).toString('hex')): string {
  return `${AUDIT_OBJECT_DIRECTORY}${time}-${random}.json`;
}

const ISO_TIME_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

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

/** Every record's line in the bucket, oldest first (the objects' names order them). */
export async function* readBucketAuditLog(store: ObjectStore): AsyncIterable<{ name: string; line: string }> {
  for await (const listed of store.list(AUDIT_OBJECT_DIRECTORY)) {
    const found = await store.get(listed.name, { maxBytes: AUDIT_RECORD_READ_CAP });
    if (found !== null) yield { name: listed.name, line: found.bytes.toString('utf8') };
  }
}
