/**
 * Appends to the audit log (server/audit.ts decides the line). O_APPEND and one write per
 * line: concurrent commands never interleave inside a line, and nothing already written
 * is ever rewritten.
 */
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { AUDIT_LOG_FILE_NAME, formatAuditLine, type AuditRecord } from './audit.js';
import { STATE_DIRECTORY } from './layout.js';

export function auditLogPath(root: string): string {
  return join(root, STATE_DIRECTORY, AUDIT_LOG_FILE_NAME);
}

export async function appendAuditRecord(root: string, record: AuditRecord): Promise<void> {
  await mkdir(join(root, STATE_DIRECTORY), { recursive: true });
  const handle = await open(auditLogPath(root), 'a', 0o640);
  try {
    await handle.write(formatAuditLine(record));
    await handle.sync();
  } finally {
    await handle.close();
  }
}
