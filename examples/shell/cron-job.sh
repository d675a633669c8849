#!/usr/bin/env bash
# A cron-style job that replaces a data file atomically under the update lock, so that
# neither an application update (the Supervisor) nor a host OS update reboot can stop the
# container in the middle of the write.
#
#   crontab:  */15 * * * *  /usr/src/app/cron-job.sh
#   or a loop: while :; do /usr/src/app/cron-job.sh; sleep 900; done
#
# Settings (environment):
#   DATA_FILE          file to replace            (default /data/report.txt)
#   COLLECT            command whose stdout becomes the new content
#                                                 (default: a timestamp and the uptime)
#   LOCK_TIMEOUT       seconds to wait for the lock before skipping this run (default 60)
#   UPDATE_LOCK_PATHS  space-separated lock files instead of the defaults. Leave it unset on
#                      a device: lockctl then locks $BALENA_APP_LOCK_PATH (set by the
#                      Supervisor) and the legacy /tmp/resin/resin-updates.lock.
#
# Exit status: 0 done; 73 the lock stayed held for LOCK_TIMEOUT (an update is being applied,
# or another job holds it): this run is skipped, the data file is untouched; anything else
# is an error of the job itself or of lockctl (its message is on stderr).
set -euo pipefail

DATA_FILE=${DATA_FILE:-/data/report.txt}
COLLECT=${COLLECT:-'date -u +%Y-%m-%dT%H:%M:%SZ; cat /proc/uptime'}
LOCK_TIMEOUT=${LOCK_TIMEOUT:-60}

lock_args=()
for p in ${UPDATE_LOCK_PATHS:-}; do lock_args+=(--path "$p"); done

# The critical section runs in its own shell under `lockctl run`: the lock (the files the
# Supervisor checks and the flock the reboot script checks) is held exactly while it runs,
# and released however it ends - even if it is killed.
export DATA_FILE COLLECT
critical_section='
  set -euo pipefail
  tmp=$(mktemp "$DATA_FILE.XXXXXX")
  trap '\''rm -f "$tmp"'\'' EXIT
  bash -c "$COLLECT" > "$tmp"
  chmod 0644 "$tmp"
  sync "$tmp"              # the new content is on disk ...
  mv -f "$tmp" "$DATA_FILE"  # ... before it replaces the old one (rename is atomic)
  sync "$(dirname "$DATA_FILE")"
  trap - EXIT
'

status=0
lockctl run --timeout "$LOCK_TIMEOUT" "${lock_args[@]}" -- bash -c "$critical_section" || status=$?
case $status in
  0) echo "cron-job: wrote $DATA_FILE" ;;
  73) echo "cron-job: the update lock stayed held for ${LOCK_TIMEOUT}s (an update in progress?); skipping this run, $DATA_FILE is unchanged" >&2 ;;
  *) echo "cron-job: failed with status $status; $DATA_FILE is unchanged" >&2 ;;
esac
exit "$status"
