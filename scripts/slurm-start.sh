#!/usr/bin/env bash
# Start a single-node SLURM (munged + slurmctld + slurmd) on localhost, for tests and CI.
#
#   scripts/slurm-start.sh && source "${SLURMPROTO_DIR:-/tmp/diffuse-slurm}/env.sh"   # sets SLURM_CONF
#   ... sbatch / squeue / diffuse --cluster slurm ...
#   scripts/slurm-stop.sh
#
# Idempotent: installs the Debian packages only when a command is missing, rewrites the config, starts
# only the daemons that are not running, then waits until the node accepts jobs (about 7 s here).
# Everything but the packages and munged's /run/munge lives under $SLURMPROTO_DIR; the daemons started
# here are recorded in $SLURMPROTO_DIR/run/*.pid so that slurm-stop.sh stops exactly those.
#
# Environment (all optional):
#   SLURMPROTO_DIR    state, config, logs, env.sh              (default /tmp/diffuse-slurm)
#   SLURM_NODE_CPUS   CPUs the node offers                     (default: what slurmd -C detects)
#   SLURM_NODE_MEM_MB memory the node offers, MB               (default: 85% of detected)
#   SLURM_PARTITION   name of the one partition                (default debug)
#   SLURMCTLD_PORT    first port tried for slurmctld           (default 6817; the next free one is used)
#   SLURMD_PORT       first port tried for slurmd              (default 6818; the next free one is used)
#   SLURM_WAIT_S      seconds to wait for each daemon          (default 60)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "slurm-start: needs root (or sudo)" >&2; exit 1; }
  exec sudo -E "$0" "$@"
fi

BASE=${SLURMPROTO_DIR:-/tmp/diffuse-slurm}
CONF=$BASE/etc/slurm.conf
RUN=$BASE/run
LOG=$BASE/log
PARTITION=${SLURM_PARTITION:-debug}
WAIT_S=${SLURM_WAIT_S:-60}
export SLURM_CONF=$CONF

T0=$(date +%s.%N)
log() { echo "[slurm-start +$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s] $*"; }
die() { echo "[slurm-start] ERROR: $*" >&2; exit 1; }

# running NAME -> true when $RUN/NAME.pid names a live process called NAME (i.e. one we started)
running() {
  local pid
  [ -s "$RUN/$1.pid" ] || return 1
  pid=$(cat "$RUN/$1.pid")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

# wait_for SECONDS COMMAND... -> true once COMMAND succeeds, polling every 0.2 s
wait_for() {
  local n=$(( $1 * 5 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# free_port FIRST -> FIRST, or the next port nobody listens on (another SLURM may use 6817/6818)
free_port() {
  local p=$1
  while [ -n "$(ss -Hltn "( sport = :$p )" 2>/dev/null)" ]; do p=$((p + 1)); done
  echo "$p"
}

# ------------------------------------------------------------------ 1. packages
missing=0
for cmd in slurmctld slurmd sbatch sinfo munged munge ss; do command -v "$cmd" >/dev/null || missing=1; done
if [ "$missing" = 1 ]; then
  log "installing slurm-wlm, munge"
  # Keep the packages' maintainer scripts from starting the daemons with the distribution's config.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge iproute2
fi

# ------------------------------------------------------------------ 2. munge (authentication)
mkdir -p "$RUN" "$LOG" "$BASE/etc" "$BASE/spool/ctld" "$BASE/spool/d"
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key --force
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  log "starting munged"
  install -d -o munge -g munge -m 0755 /run/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force
  wait_for 10 test -s /run/munge/munged.pid || die "munged did not start (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "$RUN/munged.pid"   # tells slurm-stop.sh that we started it
  munge -n | unmunge >/dev/null || die "munge round trip failed"
fi

# ------------------------------------------------------------------ 3. config
HOST=$(hostname -s)
HW=$(slurmd -C | head -1)   # e.g. NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 ... RealMemory=24105
hw() { echo "$HW" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
CPUS=${SLURM_NODE_CPUS:-$(hw CPUs)}
MEM=${SLURM_NODE_MEM_MB:-$(( $(hw RealMemory) * 85 / 100 ))}
if [ "$CPUS" = "$(hw CPUs)" ]; then
  TOPOLOGY="Boards=$(hw Boards) SocketsPerBoard=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore)"
else
  TOPOLOGY=""   # more (or fewer) CPUs than the hardware: let slurm derive the sockets
fi
if running slurmctld && [ -f "$CONF" ]; then   # keep the ports of the daemons that are up
  CTLD_PORT=$(sed -n 's/^SlurmctldPort=//p' "$CONF")
  D_PORT=$(sed -n 's/^SlurmdPort=//p' "$CONF")
else
  CTLD_PORT=$(free_port "${SLURMCTLD_PORT:-6817}")
  D_PORT=$(free_port "${SLURMD_PORT:-6818}")
  [ "$D_PORT" = "$CTLD_PORT" ] && D_PORT=$(free_port $((CTLD_PORT + 1)))
fi

NEW=$(mktemp)
cat >"$NEW" <<EOF
# Written by scripts/slurm-start.sh: a single-node SLURM on localhost for tests and CI.
ClusterName=diffuseci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${D_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${BASE}/spool/ctld
SlurmdSpoolDir=${BASE}/spool/d
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd.log
# No cgroups in containers: track processes through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Notice dead nodes and finished jobs quickly.
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} ${TOPOLOGY} RealMemory=${MEM} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "$NEW" "$CONF"; then
  install -m 0644 "$NEW" "$CONF"
  log "wrote $CONF"
  for daemon in slurmd slurmctld; do   # node and partition changes need a restart
    if running "$daemon"; then
      log "config changed: restarting $daemon"
      kill -TERM "$(cat "$RUN/$daemon.pid")"
      wait_for 10 bash -c "! kill -0 $(cat "$RUN/$daemon.pid") 2>/dev/null" || kill -KILL "$(cat "$RUN/$daemon.pid")"
      rm -f "$RUN/$daemon.pid"
    fi
  done
fi
rm -f "$NEW"
echo "export SLURM_CONF=$CONF" >"$BASE/env.sh"

# ------------------------------------------------------------------ 4. daemons
if running slurmctld; then
  log "slurmctld already running"
else
  log "starting slurmctld on port $CTLD_PORT"
  slurmctld -f "$CONF" -c -i   # -c: forget jobs of earlier runs
fi
ctld_up() { scontrol ping | grep -q 'is UP'; }
wait_for "$WAIT_S" ctld_up || { tail -n 20 "$LOG/slurmctld.log" >&2; die "slurmctld does not answer"; }
if running slurmd; then
  log "slurmd already running"
else
  log "starting slurmd on port $D_PORT"
  slurmd -f "$CONF"
fi

# ------------------------------------------------------------------ 5. wait until the node takes jobs
node_ready() {
  case "$(sinfo -h -N -n "$HOST" -o '%t' | head -1)" in
    idle | mix | alloc) return 0 ;;
    down* | drain* | drng) scontrol update NodeName="$HOST" State=RESUME ;;
  esac
  return 1
}
if ! wait_for "$WAIT_S" node_ready; then
  sinfo -R >&2 || true
  tail -n 20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
  die "node $HOST does not take jobs after ${WAIT_S}s"
fi
log "ready: partition $PARTITION, node $HOST ($CPUS CPUs, $MEM MB); export SLURM_CONF=$CONF"
