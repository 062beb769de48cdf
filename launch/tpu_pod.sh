#!/usr/bin/env bash
# Runs the same training command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [PROJECT] -- --config configs/lrm.py:large \
#       --workdir gs://bucket/runs/lrm_large --config.mesh.fsdp=64
#
# Cloud TPU needs no coordinator flags: jax.distributed.initialize() reads the pod's metadata
# (instant3d_jax.base.multihost takes the "cloud tpu" path). The repository must already be
# checked out at $REPO_DIR (default ~/instant3d-jax) on every worker with `make install-tpu
# install-gcs` run there (launch/README.md: the slice from creation to the first log line). The
# workdir should be a GCS bucket (orbax writes there from every worker). Multi-slice (several
# pod slices over DCN): set mesh.dcn_data = number of slices.
set -euo pipefail
if [[ $# -lt 3 ]]; then sed -n '2,12p' "$0"; exit 2; fi
TPU="$1"; ZONE="$2"; shift 2
PROJECT_ARGS=()
if [[ "$1" != "--" ]]; then PROJECT_ARGS=(--project "$1"); shift; fi
shift  # the --
REPO="${REPO_DIR:-\$HOME/instant3d-jax}"
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" "${PROJECT_ARGS[@]}" --worker=all \
  --command "cd $REPO && source .venv/bin/activate && python -m instant3d_jax.train_lrm $ARGS"
