/**
 * Appends to the audit log (server/takedown/audit.ts decides the line). O_APPEND and one write per
 * line: concurrent commands never interleave inside a line, and nothing already written
 * is ever rewritten.
 */
import { constants } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { AUDIT_LOG_FILE_NAME, formatAuditLine, type AuditRecord } from './audit.js';
import { STATE_DIRECTORY } from '../contract/layout.js';
import { IrregularFileError, kindOf } from '../tree/regularFile.js';

// 'a', plus: a symlink in the log's place is not followed (ELOOP), and a FIFO there
// fails at once (ENXIO without a reader) instead of blocking a pool thread.
const APPEND_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;

export function auditLogPath(root: string): string {
  return join(root, STATE_DIRECTORY, AUDIT_LOG_FILE_NAME);
}

export async function appendAuditRecord(root: string, record: AuditRecord): Promise<void> {
  await mkdir(join(root, STATE_DIRECTORY), { recursive: true });
  const path = auditLogPath(root);
  const handle = await open(path, APPEND_FLAGS, 0o640);
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new IrregularFileError('not_a_regular_file', path, `is ${kindOf(info)}, not a regular file`);
    await handle.write(formatAuditLine(record));
    await handle.sync();
  } finally {
    await handle.close();
  }
}
