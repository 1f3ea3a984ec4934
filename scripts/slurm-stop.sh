#!/usr/bin/env bash
# Stop what scripts/slurm-start.sh started, and nothing else: the processes recorded in
# $SLURMPROTO_DIR/run/*.pid whose name matches. Jobs still queued are cancelled first, so no job or
# slurmstepd process outlives the cluster. munged is stopped only if slurm-start.sh started it.
set -uo pipefail

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "slurm-stop: needs root (or sudo)" >&2; exit 1; }
  exec sudo -E "$0" "$@"
fi

BASE=${SLURMPROTO_DIR:-/tmp/diffuse-slurm}
RUN=$BASE/run
export SLURM_CONF=$BASE/etc/slurm.conf
log() { echo "[slurm-stop] $*"; }

# pid_of NAME -> the pid in $RUN/NAME.pid if that process is alive and called NAME
pid_of() {
  local pid
  [ -s "$RUN/$1.pid" ] || return 1
  pid=$(cat "$RUN/$1.pid")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

stop() {  # stop NAME: SIGTERM, then SIGKILL after 10 s
  local pid
  if ! pid=$(pid_of "$1"); then
    rm -f "$RUN/$1.pid"
    return 0
  fi
  log "stopping $1 ($pid)"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  if [ -d "/proc/$pid" ]; then
    log "$1 still alive after 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$RUN/$1.pid"
}

if pid_of slurmctld >/dev/null; then
  jobs=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 100); do
      [ -z "$(squeue -h -o '%i' 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
fi
stop slurmd
stop slurmctld
stop munged
log "stopped"
