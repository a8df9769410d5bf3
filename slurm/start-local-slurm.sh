#!/usr/bin/env bash
# Start a single-node Slurm (munged, slurmctld, slurmd) on localhost without systemd. Idempotent:
# when the daemons already run with the same slurm.conf it only checks that the node is up.
# Needs root and the Debian packages (slurm/install-debian-slurm.sh). The partition is "debug"
# (STEM_SLURM_PARTITION overrides). Exits non-zero, printing the daemon logs, if the node is not up
# within STEM_SLURM_WAIT_S seconds (default 30).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
WAIT_S="${STEM_SLURM_WAIT_S:-30}"
# The node advertises this many CPUs more than it has, so two 1-core Dask worker jobs and a 2-task
# training job fit side by side on a 2-core CI machine.
EXTRA_CPUS="${STEM_SLURM_EXTRA_CPUS:-4}"

for prog in munged slurmctld slurmd sinfo; do
    command -v "$prog" >/dev/null || { echo "start-local-slurm: $prog not found; run slurm/install-debian-slurm.sh first" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "start-local-slurm: must run as root (daemons, /etc/slurm, /run)" >&2; exit 1; }
take_lock

show_logs() {
    echo "---- start-local-slurm: node $NODE not up; daemon logs follow" >&2
    for f in /var/log/munge/munged.log "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        echo "---- $f (last 40 lines)" >&2
        tail -n 40 "$f" >&2 2>/dev/null || echo "(missing)" >&2
    done
    sinfo -N -l >&2 2>&1 || true
}

# ---- render slurm.conf from this machine's cores and memory
# not plain `nproc`: it honours OMP_NUM_THREADS, and a changed count would restart the daemons under running jobs
cpus_real="$(nproc --all)"
cpus=$(( cpus_real + EXTRA_CPUS ))
mem_mib=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
if [ -r /sys/fs/cgroup/memory.max ] && grep -qE '^[0-9]+$' /sys/fs/cgroup/memory.max; then
    cg_mib=$(( $(cat /sys/fs/cgroup/memory.max) / 1024 / 1024 ))
    [ "$cg_mib" -lt "$mem_mib" ] && mem_mib="$cg_mib"
fi
real_memory=$(( mem_mib * 95 / 100 ))   # below the hardware: slurmd drains a node that claims more
def_mem_per_cpu=$(( real_memory / cpus ))
rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
sed -e "s|@MARKER@|$MARKER|" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$cpus|" \
    -e "s|@REAL_MEMORY_MB@|$real_memory|" -e "s|@DEF_MEM_PER_CPU@|$def_mem_per_cpu|" \
    -e "s|@PARTITION@|$PARTITION|" -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@RUN_DIR@|$RUN_DIR|g" \
    -e "s|@LOG_DIR@|$LOG_DIR|g" "$SLURM_DIR/slurm.conf.in" > "$rendered"

mkdir -p /etc/slurm
changed=0
if [ -e "$CONF" ] && ! grep -q "$MARKER" "$CONF"; then
    echo "start-local-slurm: $CONF exists and was not written by this script; not touching it" >&2
    exit 1
fi
if ! cmp -s "$rendered" "$CONF"; then
    install -m 644 "$rendered" "$CONF"
    changed=1
    echo "start-local-slurm: wrote $CONF (node $NODE, CPUs=$cpus of $cpus_real real, RealMemory=${real_memory}M, partition $PARTITION)"
fi
if [ "$changed" = 1 ] && { daemon_pid slurmd "$RUN_DIR/slurmd.pid" >/dev/null || daemon_pid slurmctld "$RUN_DIR/slurmctld.pid" >/dev/null; }; then
    echo "start-local-slurm: configuration changed; restarting slurmd and slurmctld"
    stop_daemon slurmd "$RUN_DIR/slurmd.pid"
    stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
fi

# ---- munge
if [ ! -s /etc/munge/munge.key ]; then
    echo "start-local-slurm: creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --force --keyfile=/etc/munge/munge.key; else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
if ! daemon_pid munged "$MUNGE_PIDFILE" >/dev/null; then
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock "$MUNGE_PIDFILE"
    runuser -u munge -- munged 9>&-
    echo "start-local-slurm: started munged"
fi
for i in $(seq 1 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    [ "$i" = 50 ] && { echo "start-local-slurm: munge does not answer" >&2; show_logs; exit 1; }
    sleep 0.1
done

# ---- slurmctld, then slurmd
mkdir -p "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$RUN_DIR" "$LOG_DIR"
if ! daemon_pid slurmctld "$RUN_DIR/slurmctld.pid" >/dev/null; then
    slurmctld 9>&-
    echo "start-local-slurm: started slurmctld"
fi
if ! daemon_pid slurmd "$RUN_DIR/slurmd.pid" >/dev/null; then
    slurmd -N "$NODE" 9>&-
    echo "start-local-slurm: started slurmd"
fi

# ---- wait until the node takes jobs
deadline=$(( $(date +%s) + WAIT_S ))
resumed=0
while :; do
    state="$(sinfo -h -N -n "$NODE" -p "$PARTITION" -o %t 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle|mix|alloc|comp)
            echo "start-local-slurm: node $NODE is $state in partition $PARTITION"
            exit 0 ;;
        down|drain|drng|fail)  # e.g. left down by an earlier run: bring it back once
            if [ "$resumed" = 0 ]; then
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "start-local-slurm: node $NODE state '${state:-none}' after ${WAIT_S} s" >&2
        show_logs
        exit 1
    fi
    sleep 0.2
done
