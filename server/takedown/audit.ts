/**
 * The takedown audit log, `{root}/.imageproxy/audit.log`: one JSON object per line for
 * every purge, block and unblock (when, what, who, with which command line). Pure: the
 * record's shape and its line; server/takedown/auditStore.ts appends it.
 */

export const AUDIT_LOG_FILE_NAME = 'audit.log';

type AuditAction = 'purge' | 'block' | 'unblock';

export interface AuditRecord {
  /** ISO time. */
  time: string;
  action: AuditAction;
  /** What the operator named: a link, an image URL or a host. */
  target: string;
  key?: string;
  url?: string;
  /** sha256 digests blocked (block) or released (unblock) with the key. */
  digests?: string[];
  host?: string;
  /** Files removed, relative to the root. */
  removed?: string[];
  /** How many files were removed, where listing them would make a line of megabytes (block --host). */
  removedCount?: number;
  /** Entries the command added to or removed from the blocklist (0: it was already so). */
  changed?: number;
  note?: string;
  user: string;
  /** The command's arguments after the program name, secrets redacted. */
  argv: string[];
}

const SECRET_FLAGS = new Set(['--secret']);
const REDACTED = '<redacted>';

/** The arguments with the values of secret-bearing flags replaced: the log is read by more people than the secret. */
export function redactArgv(argv: readonly string[]): string[] {
  const redacted: string[] = [];
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] ?? '';
    const equals = arg.indexOf('=');
    if (equals > 0 && SECRET_FLAGS.has(arg.slice(0, equals))) {
      redacted.push(`${arg.slice(0, equals)}=${REDACTED}`);
    } else if (SECRET_FLAGS.has(arg) && index + 1 < argv.length) {
      redacted.push(arg, REDACTED);
      index += 1;
    } else {
      redacted.push(arg);
    }
  }
  return redacted;
}

/** `imageproxy purge --block /i/full/…`: the blocklist's `by`, from redacted arguments. */
export function commandLineOf(redactedArgv: readonly string[]): string {
  const quoted = redactedArgv.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : JSON.stringify(arg)));
  return ['imageproxy', ...quoted].join(' ');
}

/** One line of the log: JSON without newlines inside, ending in one. */
export function formatAuditLine(record: AuditRecord): string {
  return `${JSON.stringify(record)}\n`;
}
