#!/usr/bin/env bash
# Stop the single-node Slurm started by start-local-slurm.sh (slurmd, slurmctld, munged). Idempotent.
# Running jobs lose their node; slurmctld keeps its state, so a later start resumes job ids.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
take_lock
echo "stop-local-slurm:"
stop_daemon slurmd "$RUN_DIR/slurmd.pid"
stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
stop_daemon munged "$MUNGE_PIDFILE"
