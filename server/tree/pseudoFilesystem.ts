/**
 * Refuses a tree root on a kernel pseudo filesystem (/proc, /sys, cgroup, …): nothing can
 * be stored there, and Node's recursive mkdir under /proc never returns (it spins). The
 * table is pure data; the check is one statfs of the nearest existing directory.
 */
import { statfsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** statfs f_type magic numbers (linux/magic.h) of filesystems that hold no files of ours. */
const PSEUDO_FILESYSTEMS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0xcafe4a11, 'bpf'],
  [0x6165676c, 'pstore'],
  [0x62656570, 'configfs'],
  [0xde5e81e4, 'efivarfs'],
  [0x1cd1, 'devpts'],
  [0x19800202, 'mqueue'],
  [0x42494e4d, 'binfmt_misc'],
  [0x65735543, 'fusectl'],
]);

/** The pseudo filesystem a statfs type names, or null for an ordinary one. */
export function pseudoFilesystemName(type: number | bigint): string | null {
  return PSEUDO_FILESYSTEMS.get(Number(type)) ?? null;
}

/**
 * The pseudo filesystem `path` would be created on (that of its nearest existing
 * ancestor), or null. Anything statfs cannot answer is left to the write that follows,
 * which reports it.
 */
export function pseudoFilesystemOf(path: string): string | null {
  let candidate = resolve(path);
  for (;;) {
    try {
      return pseudoFilesystemName(statfsSync(candidate).type);
    } catch (error) {
      const parent = dirname(candidate);
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === candidate) return null;
      candidate = parent;
    }
  }
}
