#!/bin/sh
# Creates the bucket tree for imageproxy: the root, owned by the app's user, and the
# 64 × 64 directories of every configured bucket (imageproxy init-buckets, idempotent).
# Directories are 0755 and files the app writes 0644, so nginx (another user) can read
# them and only the app can write. First, as root, checks that the app's user can run
# the checkout and read the config (else exit 1 naming the directory or file and the
# fix). Then checks that nginx's user can enter every directory from / down to the
# root, and names the one that keeps it out (a warning).
#
# usage: scripts/setup-tree.sh CONFIG [APP_USER [NGINX_USER]]
#   CONFIG      the JSON config the app runs with (its "root" and "buckets" are used)
#   APP_USER    the user the app runs as (default: imageproxy); created if missing when run as root
#   NGINX_USER  the user nginx's workers run as (default: www-data, Debian's)
set -eu

config=${1:?usage: scripts/setup-tree.sh CONFIG [APP_USER [NGINX_USER]]}
app_user=${2:-imageproxy}
nginx_user=${3:-www-data}
here=$(cd "$(dirname "$0")/.." && pwd)
cli="$here/dist/server/cli.js"
[ -f "$cli" ] || { echo "setup-tree: $cli is missing: run 'npm ci && npm run build' in $here first" >&2; exit 1; }

root=$(node -e 'const c=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); process.stdout.write(c.root ?? "./data")' "$config")
case "$root" in
  /*) ;;
  *) echo "setup-tree: use an absolute \"root\" in $config (got $root)" >&2; exit 1 ;;
esac

# Can USER enter DIR? As root, the kernel answers for that user (ACLs included).
can_enter() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$1" -- test -x "$2"
  else
    test -x "$2"
  fi
}

# The topmost directory from / down to DIR that USER cannot enter (everything below it
# fails too), or nothing.
first_blocked() {
  blocked=
  dir=$2
  while :; do
    can_enter "$1" "$dir" || blocked=$dir
    [ "$dir" = / ] && break
    dir=$(dirname "$dir")
  done
  printf '%s' "$blocked"
}

# "DIR (mode 700, owner root:root)"
described() {
  printf '%s (mode %s, owner %s)' "$1" "$(stat -c %a "$1")" "$(stat -c %U:%G "$1")"
}

if [ "$(id -u)" = 0 ]; then
  if ! id "$app_user" >/dev/null 2>&1; then
    useradd --system --home-dir "$root" --no-create-home --shell /usr/sbin/nologin "$app_user"
    echo "setup-tree: created system user $app_user"
  fi
  # The app runs the checkout's code as its own user: say which directory keeps it out
  # rather than leave node's "Cannot find module".
  blocked=$(first_blocked "$app_user" "$(dirname "$cli")")
  if [ -n "$blocked" ]; then
    echo "setup-tree: the app's user $app_user cannot enter $(described "$blocked"), so it cannot run $cli: install the checkout where it can (e.g. /opt/imageproxy), or run chmod o+x '$blocked'" >&2
    exit 1
  fi
  if ! runuser -u "$app_user" -- test -r "$cli"; then
    echo "setup-tree: the app's user $app_user cannot read $(described "$cli"): run chmod -R o+rX '$here'" >&2
    exit 1
  fi
  if ! runuser -u "$app_user" -- test -r "$config"; then
    echo "setup-tree: the app's user $app_user cannot read $(described "$config"): run chown root:$app_user '$config' && chmod 0640 '$config'" >&2
    exit 1
  fi
  install -d -m 0755 -o "$app_user" -g "$app_user" "$root"
  runuser -u "$app_user" -- sh -c "umask 022; exec node '$cli' init-buckets --config '$config'"
else
  install -d -m 0755 "$root"
  (umask 022; node "$cli" init-buckets --config "$config")
fi
echo "setup-tree: $root ready"

if ! id "$nginx_user" >/dev/null 2>&1; then
  echo "setup-tree: warning: no user $nginx_user: cannot check that nginx can enter $root (name nginx's user as the third argument)" >&2
elif [ "$(id -u)" != 0 ] && [ "$(id -un)" != "$nginx_user" ]; then
  echo "setup-tree: warning: not root: cannot check that $nginx_user can enter $root (run as root, or look at namei -l $root)" >&2
else
  blocked=$(first_blocked "$nginx_user" "$root")
  if [ -n "$blocked" ]; then
    echo "setup-tree: warning: nginx's user $nginx_user cannot enter $(described "$blocked"), so nginx cannot read $root: run chmod o+x '$blocked' (or chgrp $nginx_user '$blocked' && chmod g+x '$blocked')" >&2
  fi
fi
