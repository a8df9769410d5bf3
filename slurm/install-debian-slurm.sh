#!/usr/bin/env bash
# Install Debian's Slurm (slurmctld + slurmd + client tools) and munge, if they are missing.
# Idempotent: does nothing when all four programs are already on PATH. Needs root (CI runs as root).
# Tested on Debian 12 (Slurm 22.05).
set -euo pipefail

missing=()
for prog in slurmctld slurmd sinfo munged; do
    command -v "$prog" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$prog" >/dev/null 2>&1 || missing+=("$prog")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-debian-slurm: slurmctld, slurmd, sinfo and munged are present; nothing to do"
    exit 0
fi
echo "install-debian-slurm: missing ${missing[*]}; installing Debian packages"

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
    command -v sudo >/dev/null 2>&1 || { echo "install-debian-slurm: not root and no sudo; install slurmctld slurmd slurm-client munge by hand" >&2; exit 1; }
else
    SUDO=
fi
$SUDO apt-get update -q
# No init system here: keep the packages' service start-up from failing the install.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge
echo "install-debian-slurm: done ($(PATH="$PATH:/usr/sbin" slurmctld -V 2>/dev/null || echo 'slurmctld version unknown'))"
