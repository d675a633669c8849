#!/usr/bin/env bash
# Several shell commands as one critical section: `lockctl acquire` before, `lockctl release`
# after, and a trap so that the lock is released however the script ends (a failed step,
# Ctrl-C, `docker stop`). The lock is held by a small background process that `acquire`
# leaves behind, so it stays held across all the commands in between; if that process were
# killed, the lock would show as stale in `lockctl status` and the next acquire takes it over.
#
# The example installs a new configuration made of several files: write them to a staging
# directory, validate them, then swap them into place. An update must not stop the container
# half-way through the swap.
#
# Settings (environment):
#   CONFIG_DIR         live configuration directory    (default /data/config)
#   VALIDATE_CMD       command run on the staged directory (its path is $1); non-zero
#                      aborts and keeps the old configuration (default: check files exist)
#   LOCK_TIMEOUT       seconds to wait for the lock (default 60)
#   UPDATE_LOCK_PATHS  space-separated lock files instead of the defaults. Leave it unset on
#                      a device: lockctl then locks $BALENA_APP_LOCK_PATH (set by the
#                      Supervisor) and the legacy /tmp/resin/resin-updates.lock.
set -euo pipefail

CONFIG_DIR=${CONFIG_DIR:-/data/config}
VALIDATE_CMD=${VALIDATE_CMD:-'test -s "$1/app.conf" && test -s "$1/limits.conf"'}
LOCK_TIMEOUT=${LOCK_TIMEOUT:-60}

lock_args=()
for p in ${UPDATE_LOCK_PATHS:-}; do lock_args+=(--path "$p"); done

staging="$CONFIG_DIR.new"
locked=0
cleanup() {
  # Interrupted between the two renames of step 4: put the old configuration back.
  if [ ! -e "$CONFIG_DIR" ] && [ -e "$CONFIG_DIR.old" ]; then
    mv "$CONFIG_DIR.old" "$CONFIG_DIR"
  fi
  rm -rf "$staging" "$CONFIG_DIR.old"
  if [ "$locked" = 1 ]; then
    locked=0
    lockctl release "${lock_args[@]}" || echo "multi-step: could not release the update lock; see \`lockctl status\`" >&2
  fi
}
trap cleanup EXIT
# On a signal: run the EXIT trap (release), then exit with 128+N.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# 1. Take the lock (exit status 73 when it stays held for LOCK_TIMEOUT: try again later).
lockctl acquire --timeout "$LOCK_TIMEOUT" "${lock_args[@]}"
locked=1
echo "multi-step: update lock held"

# 2. Write the new configuration, several files.
rm -rf "$staging"
mkdir -p "$staging" "$CONFIG_DIR"
printf 'mode=production\ngenerated=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$staging/app.conf"
printf 'max_clients=64\n' > "$staging/limits.conf"
sync

# 3. Validate it (a failure here aborts: the trap releases the lock, the old config stays).
bash -c "$VALIDATE_CMD" validate "$staging"

# 4. Swap it into place: two renames, so there is a moment without $CONFIG_DIR. This is the
#    window the update lock protects.
rm -rf "$CONFIG_DIR.old"
mv "$CONFIG_DIR" "$CONFIG_DIR.old"
mv "$staging" "$CONFIG_DIR"
sync

# 5. Done: release now rather than at exit, and say so.
locked=0
lockctl release "${lock_args[@]}"
echo "multi-step: new configuration installed in $CONFIG_DIR"
