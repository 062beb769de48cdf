#!/usr/bin/env bash
# N processes of one training command on this host, wired with jax.distributed (CPU: gloo).
#
#   launch/local_multiprocess.sh NUM_PROCESSES [--devices_per_process D] [--port P] -- \
#       python -m instant3d_jax.train_lrm --config configs/lrm.py:tiny --workdir outputs/mp
#
# Each process gets JAX_COORDINATOR_ADDRESS=localhost:PORT, JAX_NUM_PROCESSES, JAX_PROCESS_ID
# (read by instant3d_jax.base.multihost.initialize) and, on CPU, JAX_NUM_CPU_DEVICES=D and
# JAX_PLATFORMS=cpu. Process 0 logs to the console; the others to WORKDIR-independent files
# logs/process_<i>.log. Exit status: the first non-zero status of any process.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,12p' "$0"; exit 2
fi
NUM="$1"; shift
DEVICES=1; PORT=$((20000 + RANDOM % 20000)); LOGDIR=logs
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --devices_per_process) DEVICES="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --logdir) LOGDIR="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
shift  # the --
mkdir -p "$LOGDIR"
pids=()
for ((i = 0; i < NUM; i++)); do
  env JAX_COORDINATOR_ADDRESS="localhost:${PORT}" JAX_NUM_PROCESSES="$NUM" JAX_PROCESS_ID="$i" \
      JAX_NUM_CPU_DEVICES="$DEVICES" JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" \
      "$@" > >(if [[ $i == 0 ]]; then cat; else cat > "$LOGDIR/process_$i.log"; fi) 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for p in "${pids[@]}"; do
  wait "$p" || { s=$?; [[ $status == 0 ]] && status=$s; }
done
exit $status
