#!/bin/sh
# Creates the bucket tree for imageproxy: the root, owned by the app's user, and the
# 64 × 64 directories of every configured bucket (imageproxy init-buckets, idempotent).
# Directories are 0755 and files the app writes 0644, so nginx (another user) can read
# them and only the app can write.
#
# usage: scripts/setup-tree.sh CONFIG [APP_USER]
#   CONFIG    the JSON config the app runs with (its "root" and "buckets" are used)
#   APP_USER  the user the app runs as (default: imageproxy); created if missing when run as root
set -eu

config=${1:?usage: scripts/setup-tree.sh CONFIG [APP_USER]}
app_user=${2:-imageproxy}
here=$(cd "$(dirname "$0")/.." && pwd)
cli="$here/dist/server/cli.js"
[ -f "$cli" ] || { echo "setup-tree: $cli is missing: run 'npm ci && npm run build' in $here first" >&2; exit 1; }

root=$(node -e 'const c=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); process.stdout.write(c.root ?? "./data")' "$config")
case "$root" in
  /*) ;;
  *) echo "setup-tree: use an absolute \"root\" in $config (got $root)" >&2; exit 1 ;;
esac

if [ "$(id -u)" = 0 ]; then
  if ! id "$app_user" >/dev/null 2>&1; then
    useradd --system --home-dir "$root" --no-create-home --shell /usr/sbin/nologin "$app_user"
    echo "setup-tree: created system user $app_user"
  fi
  install -d -m 0755 -o "$app_user" -g "$app_user" "$root"
  runuser -u "$app_user" -- sh -c "umask 022; exec node '$cli' init-buckets --config '$config'"
else
  install -d -m 0755 "$root"
  (umask 022; node "$cli" init-buckets --config "$config")
fi
echo "setup-tree: $root ready"
