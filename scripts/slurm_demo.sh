#!/bin/sh
# flac2all on a real Slurm, through dask-jobqueue: a single-node Slurm from
# Debian's packages (slurm-wlm, munge) on this host, then
#   flac2all mp3,opus --dask-jobqueue slurm --dask-jobs 2 --dask-cores 1 ...
# on a small library, and a check of the outputs and of the worker jobs.
# As root, on a throwaway Debian 12 machine: it installs packages, writes
# /etc/slurm/slurm.conf (the previous one kept as .flac2all-demo.bak) and
# starts munged, slurmctld and slurmd, which it stops at the end.
# Not part of the test suite (minutes, and root). See BENCHMARKS.md.
#   scripts/slurm_demo.sh            (from a clone, after ./run.sh install)
set -eu
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=$REPO/build/slurm-demo
NODE=$(hostname -s)
CPUS=${CPUS:-2}
MEMORY_MB=${MEMORY_MB:-2048}

say() { printf '\n== %s\n' "$*"; }

say "installing slurm-wlm and munge from Debian"
export DEBIAN_FRONTEND=noninteractive
command -v slurmctld >/dev/null 2>&1 || { apt-get update -q; apt-get install -y -q --no-install-recommends slurm-wlm munge; }
[ -x .venv/bin/flac2all ] || ./run.sh install

say "munge: key and daemon"
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge | grep -q 'STATUS: *Success'

say "slurm: one node ($NODE, $CPUS CPUs, $MEMORY_MB MB), one partition"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
[ -f /etc/slurm/slurm.conf ] && [ ! -f /etc/slurm/slurm.conf.flac2all-demo.bak ] &&
    cp /etc/slurm/slurm.conf /etc/slurm/slurm.conf.flac2all-demo.bak
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=flac2all-demo
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=demo Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
stop_slurm() {
    scontrol shutdown >/dev/null 2>&1 || true
    [ -f /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
}
trap stop_slurm EXIT
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
    sinfo -h -o '%T' 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo
srun -N1 -n1 hostname

say "a small library: the sample library and 24 tracks of 60 s"
rm -rf "$WORK"
mkdir -p "$WORK/logs"
.venv/bin/python scripts/make_sample_library.py "$WORK/music" >/dev/null
for i in $(seq 24); do
    mkdir -p "$WORK/music/Long/Album $((i % 3))"
    sox -V1 -n -r 44100 -b 16 -c 2 "$WORK/music/Long/Album $((i % 3))/$i.flac" synth 60 sine $((200 + 40 * i)) pinknoise vol 0.4
done

say "flac2all through dask-jobqueue's SLURMCluster: 2 worker jobs of 1 core"
# Site settings come from Dask's jobqueue config; here as variables: the
# loopback interface (scheduler and workers), a walltime, where jobs log.
export DASK_JOBQUEUE__SLURM__INTERFACE=lo
export DASK_JOBQUEUE__SLURM__WALLTIME=00:20:00
export DASK_JOBQUEUE__SLURM__LOG_DIRECTORY="$WORK/logs"
export DASK_JOBQUEUE__SLURM__LOCAL_DIRECTORY=/tmp
(while sleep 1; do squeue -h -o '%i %j %T %C %m %M' >>"$WORK/squeue.txt"; echo -- >>"$WORK/squeue.txt"; done) &
WATCH=$!
status=0
time .venv/bin/flac2all mp3,opus --dask-jobqueue slurm --dask-jobs 2 --dask-cores 1 --dask-memory 1GB \
    -o "$WORK/out" "$WORK/music" || status=$?
sleep 3
kill "$WATCH" 2>/dev/null || true

say "checks"
echo "flac2all exit status: $status"
sources=$(find "$WORK/music" -name '*.flac' | wc -l)
rows=$(($(wc -l <"$WORK/out/conversion_results.log") - 1))
ok=$(grep -c ',SUCCESS' "$WORK/out/conversion_results.log" || true)
echo "sources: $sources, log rows: $rows, SUCCESS rows: $ok"
echo "worker jobs seen in the queue, each state once (id name state cpus memory):"
grep -v -- -- "$WORK/squeue.txt" | cut -d' ' -f1-5 | sort -u || true
echo "most worker jobs running at once: $(awk '/^--/ {print n; n=0; next} / RUNNING / {n++}' "$WORK/squeue.txt" | sort -n | tail -1)"
echo "queue after the run (empty: the jobs were cancelled):"
squeue -h
[ "$status" -eq 0 ] && [ "$rows" -eq $((2 * sources)) ] && [ "$ok" -eq "$rows" ] &&
    [ -z "$(squeue -h)" ] && [ -z "$(find "$WORK/out" -name '.flac2all-tmp-*')" ]
echo "slurm demo: OK"
