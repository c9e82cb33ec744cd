#!/usr/bin/env bash
# I/O isolation scenarios (issue 4): per-volume limits, bursts, a noisy
# neighbour and work conservation, measured with fio (direct=1, io_uring) on
# volumes of one localvold disk. Prints a table, keeps the fio JSON and the
# per-second logs under tools/bench/results/isolation-<time>/, and with --doc
# rewrites the measured section of docs/isolation.md.
#
#   sudo tools/bench/isolation.sh [--quick] [--profile device|fast] [--doc]
#                                 [--read-passthrough auto|off]
#
#   --quick     shorter runs (about 3 minutes instead of 9)
#   --profile   device (default): loop device with direct I/O over a file on
#               the real disk; fast: over a file in RAM
#   --read-passthrough  what every volume is created with (default auto, the
#               agent's default: read-only opens of volumes with no read
#               limit and the default weight skip the I/O queue)
#
# Scenarios
#   1 limit accuracy   4K randread QD32 under read-iops; 4K randwrite QD32
#                      under write-iops; 128K read QD16 under read-bps
#   2 burst            4K randread QD32 under read-iops with a burst
#   3 noisy neighbour  victim 4K randread QD1, aggressor 128K randwrite QD64 on
#                      another volume: victim alone; unprotected (agent with
#                      io_scheduler: fifo, no limits); default weights;
#                      aggressor capped by write-bps; and the device's floor:
#                      the aggressor at QD1 on the disk's XFS, not through
#                      localvol
#   4 work conservation one volume alone, 4K randread QD32, fair scheduler vs
#                      fifo; then two saturating volumes weighted 2:1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
quick=0
profile=device
doc=0
passthrough=auto
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --profile) profile=${2:?--profile needs device or fast}; shift ;;
    --doc) doc=1 ;;
    --read-passthrough) passthrough=${2:?--read-passthrough needs auto or off}; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "isolation.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $profile in device|fast) ;; *) echo "isolation.sh: --profile must be device or fast" >&2; exit 2 ;; esac
case $passthrough in auto|off) ;; *) echo "isolation.sh: --read-passthrough must be auto or off" >&2; exit 2 ;; esac

"$here/../../scripts/install-deps.sh" >/dev/null
# shellcheck source=lib.sh
. "$here/lib.sh"
agentd=$bench_root/build/agent/localvold
ctl_bin=$bench_root/build/agent/localvolctl
[ -x "$agentd" ] && [ -x "$ctl_bin" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }

if [ $quick -eq 1 ]; then
  t_limit=20; t_burst_len=5; t_burst_run=15; t_nn=15; t_wc=10
else
  t_limit=60; t_burst_len=10; t_burst_run=30; t_nn=30; t_wc=20
fi
stamp=$(date -u +%Y%m%d-%H%M%S)
out=$here/results/isolation-$stamp
mkdir -p "$out"

agent_pid=""
ctl() { "$ctl_bin" --socket "$work/agent.sock" "$@"; }
agent_start() {  # agent_start fair|fifo
  cat >"$work/agent.yaml" <<CONF
disks:
  - device: $dev
state_dir: $work/state
publish_dir: $work/pub
socket: $work/agent.sock
metrics_port: 0
reserve: 1Gi
log_level: warn
io_scheduler: $1
CONF
  "$agentd" --config "$work/agent.yaml" >>"$out/localvold.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 300); do
    ctl disk list >/dev/null 2>&1 && return 0
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "localvold did not start; see $out/localvold.log" >&2
  exit 1
}
agent_stop() {
  [ -n "$agent_pid" ] || return 0
  kill -TERM "$agent_pid" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$agent_pid" 2>/dev/null || true
  agent_pid=""
}
trap 'agent_stop; bench_cleanup' EXIT

# fio_run NAME RUNTIME JOB_ARGS...: direct io_uring jobs on 1 GiB files, JSON
# to $out/NAME.json, per-second IOPS logs to $out/NAME_<job>_iops.*.log.
fio_run() {
  local name=$1 runtime=$2
  shift 2
  fio --output-format=json --output="$out/$name.json" --ioengine=io_uring --direct=1 \
    --time_based --runtime="$runtime" --size=1g --randrepeat=0 --group_reporting=0 \
    --log_avg_msec=1000 "$@"
}
# job NAME VOLUME RW BS QD: one fio job on a volume, with its own IOPS log.
job() {
  echo --name="$1" --directory="$work/pub/$2" --rw="$3" --bs="$4" --iodepth="$5" \
    --write_iops_log="$out/${run}_$1" 
}

echo "isolation: profile $profile, read passthrough $passthrough, results in $out"
bench_attach_profile "$profile" 24G
agent_start fair
ctl volume create lim --size 4Gi --read-passthrough $passthrough >/dev/null
ctl volume create victim --size 4Gi --read-passthrough $passthrough >/dev/null
ctl volume create aggr --size 4Gi --read-passthrough $passthrough >/dev/null
ctl volume create heavy --size 4Gi --weight 200 --read-passthrough $passthrough >/dev/null
ctl volume create light --size 4Gi --weight 100 --read-passthrough $passthrough >/dev/null
# Lay the files out once, unthrottled, so no run measures file creation.
for v in lim victim aggr heavy light; do
  fio --name=layout --directory="$work/pub/$v" --rw=write --bs=1m --size=1g --ioengine=psync \
    --output=/dev/null
done

# Limits well below what the disk does, so that the limit binds.
iops_limit=2000
bps_limit=64Mi
burst_rate=4000
burst_base=1000

# --- 1 limit accuracy (ramp 2 s: the tenth-of-a-second credit is not the rate)
ctl volume set-limits lim --read-iops $iops_limit --write-iops $iops_limit >/dev/null
run=s1-read-iops; fio_run $run $t_limit --ramp_time=2 $(job j lim randread 4k 32)
run=s1-write-iops; fio_run $run $t_limit --ramp_time=2 $(job j lim randwrite 4k 32)
ctl volume set-limits lim --unlimited --read-bps $bps_limit >/dev/null
run=s1-read-bps; fio_run $run $t_limit --ramp_time=2 $(job j lim read 128k 16)

# --- 2 burst: a fresh limit starts with a full burst
ctl volume set-limits lim --unlimited --read-iops $burst_base --read-iops-burst $burst_rate \
  --read-iops-burst-seconds $t_burst_len >/dev/null
run=s2-burst; fio_run $run $t_burst_run $(job j lim randread 4k 32)

# --- 3 noisy neighbour
run=s3-solo; fio_run $run $t_nn $(job victim victim randread 4k 1)
run=s3-weights; fio_run $run $t_nn $(job victim victim randread 4k 1) $(job aggr aggr randwrite 128k 64)
# The device's own floor: the aggressor at QD1 writing straight into the
# disk's XFS, beside the volumes, with no localvol in its path.
disk_root=$(findmnt -rn -S "$dev" -o TARGET | head -1)
mkdir -p "$disk_root/bench-raw"
run=s3-device-qd1; fio_run $run $t_nn $(job victim victim randread 4k 1) \
  --name=aggr --directory="$disk_root/bench-raw" --rw=randwrite --bs=128k --iodepth=1 \
  --write_iops_log="$out/${run}_aggr"
rm -rf "${disk_root:?}/bench-raw"
ctl volume set-limits aggr --write-bps 200Mi >/dev/null
run=s3-capped; fio_run $run $t_nn $(job victim victim randread 4k 1) $(job aggr aggr randwrite 128k 64)
ctl volume set-limits aggr --unlimited >/dev/null

# --- 4 work conservation
run=s4-alone-fair; fio_run $run $t_wc $(job j heavy randread 4k 32)
run=s4-pair-fair; fio_run $run $t_wc $(job heavy heavy randread 4k 32) $(job light light randread 4k 32)

# --- unprotected runs: the same agent and disk with io_scheduler: fifo
agent_stop
agent_start fifo
run=s3-fifo; fio_run $run $t_nn $(job victim victim randread 4k 1) $(job aggr aggr randwrite 128k 64)
run=s4-alone-fifo; fio_run $run $t_wc $(job j heavy randread 4k 32)
run=s4-pair-fifo; fio_run $run $t_wc $(job heavy heavy randread 4k 32) $(job light light randread 4k 32)
agent_stop

cat >"$out/meta.json" <<META
{"profile": "$profile", "read_passthrough": "$passthrough", "quick": $quick, "iops_limit": $iops_limit, "bps_limit": "$bps_limit",
 "burst_rate": $burst_rate, "burst_base": $burst_base, "burst_seconds": $t_burst_len,
 "aggr_cap": "200Mi", "command": "sudo tools/bench/isolation.sh$([ $quick -eq 1 ] && echo ' --quick') --profile $profile --read-passthrough $passthrough",
 "kernel": "$(uname -r)", "cpus": $(nproc), "date": "$(date -u +%Y-%m-%dT%H:%MZ)"}
META
python3 "$here/isolation_report.py" "$out" $([ $doc -eq 1 ] && echo --doc "$bench_root/docs/isolation.md")
