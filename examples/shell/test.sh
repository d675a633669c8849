#!/usr/bin/env bash
# Runs the shell examples for real against a temporary service directory and checks their
# effects the way the device sees them: the Supervisor (`lockfile -r 0`, as uid 65534 when
# run as root) and the host OS update reboot (`flock -nx` on updates.lock).
#
#   bash examples/shell/test.sh        (builds lockctl with cargo if needed)
#
# Ends with "shell examples: N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail
# The test probes with the Supervisor's real lockfile; a probe of a held lock is an attempt
# that the example's next acquisition would yield to (up to 60 s). The yield has its own
# tests; here it is off.
export UPDATE_LOCK_YIELD_TO_UPDATES=0

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

if ! (cd "$ROOT" && cargo build -q -p lockctl); then
  echo "test.sh: cannot build lockctl" >&2
  exit 1
fi
export PATH="$ROOT/target/debug:$PATH"
for tool in lockctl lockfile flock; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

# The service directory as the Supervisor makes it (mode 1777), and the app's /data.
WORK=$(mktemp -d /tmp/shell-examples.XXXXXX)
chmod 0755 "$WORK"
SVC="$WORK/svc"
DATA="$WORK/data"
mkdir -p "$SVC" "$DATA"
chmod 1777 "$SVC"

# Point everything at the temporary service directory: the Supervisor's variables, and both
# lock names (updates.lock and the legacy resin-updates.lock) for the scripts.
unset RESIN_APP_LOCK_PATH RESIN_SERVICE_KILL_ME_PATH
export BALENA_APP_LOCK_PATH="$SVC/updates.lock"
export BALENA_SERVICE_HANDOVER_COMPLETE_PATH="$SVC/handover-complete"
export UPDATE_LOCK_PATHS="$SVC/updates.lock $SVC/resin-updates.lock"
LOCK_ARGS=(--path "$SVC/updates.lock" --path "$SVC/resin-updates.lock")

cleanup() {
  lockctl release "${LOCK_ARGS[@]}" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

# What the two readers see right now, one line each. Run inside a critical section (as the
# cron job's COLLECT command or the multi-step script's validator) it shows whether the lock
# is really held there; a successful `lockfile` or `flock` probe cleans up after itself.
cat > "$WORK/probe" <<'PROBE'
#!/bin/sh
svc=$1
for name in updates.lock resin-updates.lock; do
  f="$svc/$name"
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=65534 --regid=65534 --clear-groups lockfile -r 0 "$f" 2>/dev/null
  else
    lockfile -r 0 "$f" 2>/dev/null
  fi
  rc=$?
  [ "$rc" = 0 ] && rm -f "$f"
  echo "supervisor $name $rc"
done
existed=0
[ -e "$svc/updates.lock" ] && existed=1
flock -nx "$svc/updates.lock" true
rc=$?
[ "$existed" = 0 ] && rm -f "$svc/updates.lock"
echo "reboot updates.lock $rc"
PROBE
chmod 0755 "$WORK/probe"
HELD=$'supervisor updates.lock 73\nsupervisor resin-updates.lock 73\nreboot updates.lock 1'
FREE=$'supervisor updates.lock 0\nsupervisor resin-updates.lock 0\nreboot updates.lock 0'

# --- assertions: print what is wrong and fail (checks run in `if`, where set -e is off) ---
want_eq() { # ACTUAL EXPECTED WHAT
  [ "$1" == "$2" ] && return 0
  printf '%s:\n  expected: %s\n  actual:   %s\n' "$3" "${2//$'\n'/ | }" "${1//$'\n'/ | }"
  return 1
}
want_contains() { # TEXT NEEDLE WHAT
  [[ "$1" == *"$2"* ]] && return 0
  printf '%s: %q does not contain %q\n' "$3" "$1" "$2"
  return 1
}
lock_released() { # nothing left in the service directory and both readers free
  want_eq "$(ls -A "$SVC" | grep -vx update-waiting)" "" "files left in the service directory (but the update-waiting note)" || return 1
  want_eq "$("$WORK/probe" "$SVC")" "$FREE" "readers after the script" || return 1
}

# --- the checks ---

# cron_job COLLECT TIMEOUT: run cron-job.sh on $DATA/report.txt; sets $out and $rc.
cron_job() {
  out=$(DATA_FILE="$DATA/report.txt" COLLECT="$1" LOCK_TIMEOUT="$2" "$HERE/cron-job.sh" 2>&1)
  rc=$?
}

cron_job_runs_its_critical_section_under_the_lock() {
  echo old > "$DATA/report.txt"
  local out rc
  cron_job "'$WORK/probe' '$SVC'" 5
  want_eq "$rc" 0 "cron-job.sh exit status ($out)" || return 1
  # The data file now holds what the readers saw while the job wrote it.
  want_eq "$(cat "$DATA/report.txt")" "$HELD" "readers during the critical section" || return 1
}

cron_job_replaces_the_file_atomically_and_releases() {
  echo old > "$DATA/report.txt"
  local out rc
  cron_job 'echo new; echo data' 5
  want_eq "$rc" 0 "cron-job.sh exit status ($out)" || return 1
  want_contains "$out" "wrote $DATA/report.txt" "cron-job.sh output" || return 1
  want_eq "$(cat "$DATA/report.txt")" $'new\ndata' "new content" || return 1
  want_eq "$(ls -A "$DATA")" "report.txt" "temporary files left in the data directory" || return 1
  lock_released
}

cron_job_skips_its_run_while_the_lock_is_held() {
  echo keep > "$DATA/report.txt"
  lockctl acquire "${LOCK_ARGS[@]}" || { echo "lockctl acquire failed"; return 1; }
  local out rc
  cron_job 'echo overwritten' 0.3
  lockctl release "${LOCK_ARGS[@]}" 2>/dev/null || { echo "lockctl release failed"; return 1; }
  want_eq "$rc" 73 "cron-job.sh exit status while held ($out)" || return 1
  want_contains "$out" "skipping this run" "cron-job.sh message" || return 1
  want_eq "$(cat "$DATA/report.txt")" keep "data file while the lock was held" || return 1
  lock_released
}

multi_step_holds_the_lock_across_its_commands() {
  rm -rf "$DATA/config" "$WORK/probe.out"
  mkdir -p "$DATA/config" && echo old > "$DATA/config/app.conf"
  local out rc
  # The validator is a separate process run between acquire and release: it sees the lock
  # as the device would, then checks the staged files (its $1) as the default does.
  out=$(CONFIG_DIR="$DATA/config" LOCK_TIMEOUT=5 \
    VALIDATE_CMD="'$WORK/probe' '$SVC' > '$WORK/probe.out' && test -s \"\$1/app.conf\"" \
    "$HERE/multi-step.sh" 2>&1)
  rc=$?
  want_eq "$rc" 0 "multi-step.sh exit status ($out)" || return 1
  want_eq "$(cat "$WORK/probe.out")" "$HELD" "readers between acquire and release" || return 1
  want_contains "$(cat "$DATA/config/app.conf")" "mode=production" "installed app.conf" || return 1
  want_eq "$(cat "$DATA/config/limits.conf")" "max_clients=64" "installed limits.conf" || return 1
  want_eq "$(ls -A "$DATA" | grep config)" "config" "staging or backup left behind" || return 1
  lock_released
}

multi_step_releases_the_lock_when_a_step_fails_or_it_is_killed() {
  local how validator out rc
  for how in failure SIGTERM; do
    rm -rf "$DATA/config" "$WORK/probe.out"
    mkdir -p "$DATA/config" && echo old > "$DATA/config/app.conf"
    if [ "$how" = failure ]; then
      validator="'$WORK/probe' '$SVC' > '$WORK/probe.out'; exit 3"
    else
      # The validator's parent is the script itself: stop it as `docker stop` would.
      validator="'$WORK/probe' '$SVC' > '$WORK/probe.out'; kill -TERM \$PPID"
    fi
    out=$(CONFIG_DIR="$DATA/config" LOCK_TIMEOUT=5 VALIDATE_CMD="$validator" \
      "$HERE/multi-step.sh" 2>&1)
    rc=$?
    if [ "$how" = failure ]; then
      want_eq "$rc" 3 "multi-step.sh exit status after a failed step ($out)" || return 1
    else
      want_eq "$rc" 143 "multi-step.sh exit status after SIGTERM ($out)" || return 1
    fi
    want_eq "$(cat "$WORK/probe.out")" "$HELD" "readers before the $how" || return 1
    want_eq "$(cat "$DATA/config/app.conf")" old "configuration after the $how" || return 1
    want_eq "$(ls -A "$DATA" | grep config)" "config" "staging left after the $how" || return 1
    lock_released || return 1
  done
}

pass=0
fail=0
for check in \
  cron_job_runs_its_critical_section_under_the_lock \
  cron_job_replaces_the_file_atomically_and_releases \
  cron_job_skips_its_run_while_the_lock_is_held \
  multi_step_holds_the_lock_across_its_commands \
  multi_step_releases_the_lock_when_a_step_fails_or_it_is_killed; do
  if log=$("$check" 2>&1); then
    pass=$((pass + 1))
    echo "ok   $check"
  else
    fail=$((fail + 1))
    echo "FAIL $check"
    printf '%s\n' "$log" | sed 's/^/     /'
    # Leave a clean service directory for the next check.
    lockctl release "${LOCK_ARGS[@]}" >/dev/null 2>&1
    rm -f "$SVC"/* 2>/dev/null
  fi
done
echo "shell examples: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
