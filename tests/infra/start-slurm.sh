#!/bin/bash
# start-slurm.sh - bring up a real Slurm 22.05 cluster on ONE Debian 12 machine, without systemd.
# Idempotent: installs what is missing, (re)writes configs, starts only daemons that are not running
# (restarts Slurm daemons when a config file changed), exits 0 once every node is up (idle, or running jobs).
#
# Env knobs (defaults in brackets):
#   SLURM_NODES=2              number of fake compute nodes node0..N-1 (multiple-slurmd mode, one slurmd each)
#   SLURM_CPUS=2               CPUs advertised per node (not enforced: task/none, no cgroups)
#   SLURM_GPUS=2               fake GPUs per node (gres/gpu backed by char devs under /var/lib/slurm/fakegpu; 0=off)
#   SLURM_ACCOUNTING=slurmdbd  slurmdbd (mariadb; full sacct incl. MaxRSS) | filetxt (sacct -c only) | none
#   SLURM_CLEAN=0              1 = wipe slurmctld state (job ids restart at 1) before starting
#   SLURM_WAIT=60              seconds to wait for nodes to come up
#   SLURM_NETNS=0              1 = run slurmd for node$i INSIDE network namespace node$i made by start-test-hosts.sh
#                              (NodeAddr 10.77.0.1$i, hostname node$i): Slurm nodes == the ssh test hosts.
#                              Run start-test-hosts.sh first. 0 = all slurmds on 127.0.0.1, ports 17000+i
# Stop with stop-slurm.sh (kills by pidfile).
set -euo pipefail

NODES=${SLURM_NODES:-2}
CPUS=${SLURM_CPUS:-2}
GPUS=${SLURM_GPUS:-2}
ACCT=${SLURM_ACCOUNTING:-slurmdbd}
CLEAN=${SLURM_CLEAN:-0}
WAIT=${SLURM_WAIT:-60}
NETNS=${SLURM_NETNS:-0}
HOST=$(hostname -s)
T_START=$(date +%s.%N)
log(){ printf '[start-slurm %6.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T_START" 'BEGIN{print a-b}')" "$*" >&2; }
alive(){ [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pidfile(){ # stop_pidfile FILE : SIGTERM the pid in FILE, wait up to 10s, then SIGKILL
  local f=$1 p; [ -f "$f" ] || return 0; p=$(cat "$f"); [ -n "$p" ] || return 0
  kill -0 "$p" 2>/dev/null || { rm -f "$f"; return 0; }
  kill "$p"; for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || { rm -f "$f"; return 0; }; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true; rm -f "$f"; }

stop_pidfiles(){ # stop_pidfiles FILE... : SIGTERM all at once (daemons take ~1.5-3s each to exit), then wait
  local f p pids=""; for f in "$@"; do [ -f "$f" ] || continue; p=$(cat "$f")
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill "$p"; pids="$pids $p"; fi; done
  for _ in $(seq 1 150); do local left=""; for p in $pids; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    pids=$left; [ -z "$pids" ] && break; sleep 0.1; done
  for p in $pids; do echo "pid $p ignored SIGTERM for 15s, sending SIGKILL" >&2; kill -9 "$p" 2>/dev/null; done
  rm -f "$@"; }

# ---------------------------------------------------------------- 1. packages
PKGS="slurm-wlm munge"
[ "$ACCT" = slurmdbd ] && PKGS="$PKGS slurmdbd mariadb-server"
MISSING=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || MISSING="$MISSING $p"; done
if [ -n "$MISSING" ]; then
  log "installing:$MISSING"
  # without systemd, postinst would run /etc/init.d scripts: forbid that while installing
  POLICY_ADDED=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; POLICY_ADDED=1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $MISSING >/dev/null
  [ "$POLICY_ADDED" = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
fi

# ---------------------------------------------------------------- 2. host name must resolve
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts

# ---------------------------------------------------------------- 3. config files
install -d -o slurm -g slurm /var/spool/slurmctld /var/log/slurm
install -d /var/spool/slurmd /etc/slurm
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key

case $ACCT in
  slurmdbd) ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none" ;;
  filetxt)  ACCT_LINES="AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log" ;;
  none)     ACCT_LINES="AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none" ;;
  *) echo "SLURM_ACCOUNTING must be slurmdbd|filetxt|none" >&2; exit 2 ;;
esac
GRES_LINES=""; NODE_GRES=""
if [ "$GPUS" -gt 0 ]; then
  GRES_LINES="GresTypes=gpu"; [ "$ACCT" = slurmdbd ] && GRES_LINES="$GRES_LINES
AccountingStorageTRES=gres/gpu"
  NODE_GRES=" Gres=gpu:$GPUS"
fi

CTLD_ADDR=127.0.0.1
if [ "$NETNS" = 1 ]; then
  CTLD_ADDR=10.77.0.1   # the root-namespace end of bridge ckbr0: reachable from host and from every namespace
  for i in $(seq 0 $((NODES-1))); do
    [ -e /run/netns/node$i ] || { echo "SLURM_NETNS=1 needs namespace node$i: run start-test-hosts.sh first" >&2; exit 1; }
  done
fi
NEW=$(mktemp -d)
{
cat <<EOF
# generated by start-slurm.sh
ClusterName=cockpit
SlurmctldHost=$HOST($CTLD_ADDR)
SlurmUser=slurm
SlurmctldPort=6817
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
# no cgroups anywhere (no systemd, cgroup v1 hybrid in the sandbox)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
$ACCT_LINES
$GRES_LINES
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
EOF
for i in $(seq 0 $((NODES-1))); do
  if [ "$NETNS" = 1 ]; then
    echo "NodeName=node$i NodeHostname=node$i NodeAddr=10.77.0.$((10+i)) CPUs=$CPUS RealMemory=2000$NODE_GRES State=UNKNOWN"
  else
    echo "NodeName=node$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((17000+i)) CPUs=$CPUS RealMemory=2000$NODE_GRES State=UNKNOWN"
  fi
done
echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$NEW/slurm.conf"

: > "$NEW/gres.conf"
if [ "$GPUS" -gt 0 ]; then
  # gres/gpu silently drops file-less GPUs ("Removing file-less GPU"), so back them by dummy char
  # devices (same major/minor as /dev/null) outside /dev. Slurm then sets CUDA_VISIBLE_DEVICES.
  install -d /var/lib/slurm/fakegpu
  for i in $(seq 0 $((NODES*GPUS-1))); do
    [ -c /var/lib/slurm/fakegpu/nvidia$i ] || mknod /var/lib/slurm/fakegpu/nvidia$i c 1 3
  done
  for i in $(seq 0 $((NODES-1))); do
    echo "NodeName=node$i Name=gpu File=/var/lib/slurm/fakegpu/nvidia[$((i*GPUS))-$((i*GPUS+GPUS-1))]" >> "$NEW/gres.conf"
  done
fi

cat > "$NEW/slurmdbd.conf" <<'EOF'
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
EOF

CHANGED=0; DBD_CHANGED=0
for f in slurm.conf gres.conf; do
  cmp -s "$NEW/$f" "/etc/slurm/$f" || { cp "$NEW/$f" "/etc/slurm/$f"; chmod 644 "/etc/slurm/$f"; CHANGED=1; }
done
if [ "$ACCT" = slurmdbd ]; then
  cmp -s "$NEW/slurmdbd.conf" /etc/slurm/slurmdbd.conf || { cp "$NEW/slurmdbd.conf" /etc/slurm/slurmdbd.conf; DBD_CHANGED=1; }
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 600 /etc/slurm/slurmdbd.conf   # slurmdbd refuses other modes
fi
rm -rf "$NEW"
for i in $(seq 0 $((NODES-1))); do install -d /var/spool/slurmd/node$i; done

if [ "$CHANGED" = 1 ] || [ "$CLEAN" = 1 ]; then
  log "config changed (or SLURM_CLEAN=1): stopping running slurm daemons"
  stop_pidfiles /run/slurmd-node*.pid /run/slurmd.pid /run/slurmctld.pid
fi
[ "$DBD_CHANGED" = 1 ] && stop_pidfile /run/slurmdbd.pid
[ "$CLEAN" = 1 ] && rm -rf /var/spool/slurmctld/* /var/spool/slurmd/node*/*

# ---------------------------------------------------------------- 4. munged
if ! alive /run/munge/munged.pid; then
  rm -f /run/munge/munged.pid; runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  log "munged up (pid $(cat /run/munge/munged.pid))"
fi

# ---------------------------------------------------------------- 5. mariadb + slurmdbd
if [ "$ACCT" = slurmdbd ]; then
  if ! alive /run/mysqld/mysqld.pid; then
    install -d -o mysql -g root /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 \
      --innodb-buffer-pool-size=128M >>/var/log/slurm/mariadb.log 2>&1 </dev/null &
    for _ in $(seq 1 150); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb-admin ping >/dev/null || { echo "mariadb did not start; see /var/log/slurm/mariadb.log" >&2; exit 1; }
    log "mariadb up (pid $(cat /run/mysqld/mysqld.pid))"
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  if ! alive /run/slurmdbd.pid; then
    rm -f /run/slurmdbd.pid; /usr/sbin/slurmdbd
    for _ in $(seq 1 300); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
    sacctmgr -n list cluster >/dev/null || { echo "slurmdbd not answering; see /var/log/slurm/slurmdbd.log" >&2; exit 1; }
    log "slurmdbd up (pid $(cat /run/slurmdbd.pid))"
  fi
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx cockpit; then
    sacctmgr -i add cluster cockpit >/dev/null; log "cluster 'cockpit' registered in slurmdbd"
  fi
else
  stop_pidfiles /run/slurmdbd.pid /run/mysqld/mysqld.pid   # not needed without slurmdbd accounting
fi

# ---------------------------------------------------------------- 6. slurmctld + slurmd per node
if ! alive /run/slurmctld.pid; then
  rm -f /run/slurmctld.pid; /usr/sbin/slurmctld      # slurmctld leaves a stale pidfile behind on exit
  for _ in $(seq 1 50); do [ -s /run/slurmctld.pid ] && break; sleep 0.1; done
  log "slurmctld started (pid $(cat /run/slurmctld.pid 2>/dev/null))"
fi
for i in $(seq 0 $((NODES-1))); do
  if ! alive /run/slurmd-node$i.pid; then
    rm -f /run/slurmd-node$i.pid
    if [ "$NETNS" = 1 ]; then
      # nsenter, NOT `ip netns exec`: the latter remounts /sys, hiding /sys/fs/cgroup, and slurmd 22.05
      # then dies with "Unable to initialize cgroup plugin" even with proctrack/linuxproc + task/none
      nsenter --net=/run/netns/node$i unshare --uts -- sh -c "hostname node$i; exec /usr/sbin/slurmd -N node$i"
    else
      /usr/sbin/slurmd -N node$i   # forks; pidfile appears a moment later
    fi
    for _ in $(seq 1 50); do [ -s /run/slurmd-node$i.pid ] && break; sleep 0.1; done
    log "slurmd node$i started (pid $(cat /run/slurmd-node$i.pid 2>/dev/null))"
  fi
done

# ---------------------------------------------------------------- 7. wait until every node is up
DEADLINE=$(( $(date +%s) + WAIT )); RESUMED=0
while :; do
  STATES=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)
  # ready = every node up and schedulable; a node running someone's job (mixed/allocated) is up too
  if [ -n "$STATES" ] && [ -z "$(echo "$STATES" | awk '$2 !~ /^(idle|mixed|allocated|completing)$/')" ] \
     && [ "$(echo "$STATES" | wc -l)" = "$NODES" ]; then break; fi
  # nodes left down/drained/inval by an earlier run: resume them once
  if [ $RESUMED = 0 ] && echo "$STATES" | grep -qE 'down|drain|inval|fail'; then
    scontrol update nodename="node[0-$((NODES-1))]" state=resume 2>/dev/null || true; RESUMED=1
  fi
  if [ "$(date +%s)" -ge $DEADLINE ]; then
    echo "nodes not up after ${WAIT}s:"; echo "$STATES"; sinfo -R; tail -n 20 /var/log/slurm/slurmctld.log; exit 1
  fi
  sleep 0.2
done
log "ready"
sinfo
exit 0
