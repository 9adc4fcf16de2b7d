/**
 * Can an account enter every directory down to a path? nginx's workers run as another
 * user than the app (www-data, nobody), and a tree below a directory they cannot enter
 * (a 0700 home or temp directory) is invisible to them: every hit becomes a miss and
 * every answer a 403. Pure: the caller says what each directory's mode and owner are.
 */

/** What stat says of a directory: its mode bits and owner. */
export interface DirectoryOwnership {
  mode: number;
  uid: number;
  gid: number;
}

/** An account as the kernel checks it: its uid and every group it is in. */
export interface Account {
  name: string;
  uid: number;
  gids: readonly number[];
}

export interface BlockedDirectory {
  directory: string;
  ownership: DirectoryOwnership;
  /** The shell command that lets the account in. */
  fix: string;
}

/** `/srv/imageproxy/tree` → `/`, `/srv`, `/srv/imageproxy`, `/srv/imageproxy/tree`. */
export function directoriesDownTo(path: string): string[] {
  if (!path.startsWith('/')) throw new Error(`not an absolute path: ${path}`);
  const segments = path.split('/').filter((segment) => segment !== '' && segment !== '.');
  return ['/', ...segments.map((_, index) => `/${segments.slice(0, index + 1).join('/')}`)];
}

type PermissionClass = 'owner' | 'group' | 'other';

/** The one class of permission bits the kernel applies: owner, else group, else others. */
function permissionClass(ownership: DirectoryOwnership, account: Account): PermissionClass {
  if (account.uid === ownership.uid) return 'owner';
  if (account.gids.includes(ownership.gid)) return 'group';
  return 'other';
}

const SEARCH_BIT: Record<PermissionClass, number> = { owner: 0o100, group: 0o010, other: 0o001 };

/** Whether `account` may enter (search) a directory: root always may. */
export function canEnter(ownership: DirectoryOwnership, account: Account): boolean {
  if (account.uid === 0) return true;
  return (ownership.mode & SEARCH_BIT[permissionClass(ownership, account)]) !== 0;
}

function fixFor(directory: string, ownership: DirectoryOwnership, account: Account): string {
  const quoted = `'${directory.replaceAll("'", "'\\''")}'`;
  const which = permissionClass(ownership, account);
  if (which === 'owner') return `chmod u+x ${quoted}`;
  if (which === 'group') return `chmod g+x ${quoted}`;
  return `chmod o+x ${quoted} (or chgrp ${account.name} ${quoted} && chmod g+x ${quoted})`;
}

/**
 * The first directory from `/` down to `path` (inclusive) that `account` cannot enter,
 * or null. `statOf` returns null for a directory that does not exist: the check stops
 * there (what is still to be made is made 0755 by init-buckets).
 */
export function firstBlockedDirectory(
  path: string,
  account: Account,
  statOf: (directory: string) => DirectoryOwnership | null,
): BlockedDirectory | null {
  for (const directory of directoriesDownTo(path)) {
    const ownership = statOf(directory);
    if (ownership === null) return null;
    if (!canEnter(ownership, account)) return { directory, ownership, fix: fixFor(directory, ownership, account) };
  }
  return null;
}

/** One line for the admin: who cannot enter what, why, and the command that fixes it. */
export function blockedDirectoryMessage(blocked: BlockedDirectory, account: Account, path: string): string {
  const { directory, ownership } = blocked;
  const mode = (ownership.mode & 0o7777).toString(8).padStart(4, '0');
  return (
    `nginx's user ${account.name} cannot enter ${directory} (mode ${mode}, owner ${ownership.uid}:${ownership.gid}), ` +
    `so nginx cannot read ${path}: run ${blocked.fix}`
  );
}
