#!/bin/sh
# A job that an update must not cut short. The entrypoint `lockctl run --` holds the update
# lock while this runs (the file exists and is flocked) and releases it when it exits.
# Environment: WORK_SECONDS (2), how long the work takes.
set -eu
echo "holding the update lock: ${BALENA_APP_LOCK_PATH:-/tmp/balena/updates.lock} (lockctl run)"
sleep "${WORK_SECONDS:-2}" # the work an update must not interrupt
echo "job done: lockctl releases the update lock"
