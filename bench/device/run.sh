#!/usr/bin/env bash
# The accelerator suite's one entry point (bench/device/README.md).
#   bash bench/device/run.sh            # on the device machine: install, then measure into $OUT
#   bash bench/device/run.sh --dry_run  # on CPU: every item with tiny shapes, same code
# Extra arguments go to `python -m bench.device.suite` (--out DIR, --only a,b, --budget_s S).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DRY=0
for a in "$@"; do [ "$a" = "--dry_run" ] && DRY=1; done
export PYTHONUNBUFFERED=1
if [ "$DRY" = 0 ]; then
  # The packages the device image lacks (make device-wheels), offline, into a folder of their
  # own that goes first on the path; then the project itself without dependencies.
  WHEELS=${DEVICE_WHEELS:-device-wheels}
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/instant3d-site "$WHEELS"/*.whl \
      || echo "warning: installing $WHEELS failed; items that need those packages report it"
    export PYTHONPATH=/tmp/instant3d-site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "warning: no wheels in $WHEELS/ (make device-wheels, and carry it)"
  fi
  PIP_BREAK_SYSTEM_PACKAGES=1 $PY -m pip install -q --no-index --no-deps --no-build-isolation \
      -e . || echo "warning: pip install -e . failed; the project runs from PYTHONPATH"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec $PY -m bench.device.suite "$@"
