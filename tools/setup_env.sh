#!/usr/bin/env bash
# Set up (or verify) the mmeff environment: a virtualenv with the pinned OpenMMLab stack.
#
#   bash tools/setup_env.sh            # idempotent; seconds when nothing changed
#
# MMEFF_VENV   virtualenv to use           (default: <repo>/.venv)
# MMEFF_CACHE  wheelhouse for the mmcv build (default: ~/.cache/mmeff); the next set-up reuses it
#
# mmcv 2.1.0 (the newest mmdet 3.3.0 accepts) has no wheels for torch 2.14 on PyPI, only an
# sdist, so it is built here once with its compiled ops (CPU ops, plus CUDA ops where nvcc and a
# GPU exist) and cached per torch build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMEFF_VENV:-$ROOT/.venv}
CACHE=${MMEFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmeff}
CONSTRAINTS=$ROOT/requirements/constraints.txt
PY=$VENV/bin/python
SECONDS=0

log() { printf '[setup %4ds] %s\n' "$SECONDS" "$*"; }

stamp_of() { cat "$CONSTRAINTS" "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" | sha256sum | cut -c1-16; }
STAMP_FILE=$VENV/.mmeff-setup-stamp
if [[ -f $STAMP_FILE && "$(cat "$STAMP_FILE")" == "$(stamp_of)" ]]; then
  log "environment $VENV is up to date"
  exit 0
fi

if [[ ! -x $PY ]]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
# This machine's pip config lists local indexes that lack most packages; hide that noise only.
pip_q() { "$PY" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }

log "installing torch, torchvision and the build tools (pinned in requirements/constraints.txt)"
pip_q install -c "$CONSTRAINTS" torch torchvision setuptools wheel ninja numpy

# One wheel per torch build (version + CUDA flavour) and per ops flavour.
TORCH_TAG=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
if command -v nvcc >/dev/null 2>&1 && "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  OPS=cuda
else
  OPS=cpu
fi
WHEELHOUSE=$CACHE/wheels/torch-$TORCH_TAG-$OPS-ops
MMCV_VERSION=$(sed -n 's/^mmcv==//p' "$CONSTRAINTS")
shopt -s nullglob
wheels=("$WHEELHOUSE"/mmcv-"$MMCV_VERSION"-*.whl)
if (( ${#wheels[@]} == 0 )); then
  log "building mmcv $MMCV_VERSION with $OPS ops against torch $TORCH_TAG (first set-up only; ~14 min on 2 cores)"
  BUILD=$(mktemp -d)
  trap 'rm -rf "$BUILD"' EXIT
  pip_q download --no-deps --no-binary mmcv --no-build-isolation -d "$BUILD" "mmcv==$MMCV_VERSION"
  tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
  SRC=$BUILD/mmcv-$MMCV_VERSION
  # torch >= 2.10 headers use C++20 features; mmcv 2.1.0 asks for C++14/17.
  sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$SRC/setup.py"
  export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0"
  if [[ $OPS == cuda ]]; then export FORCE_CUDA=1; fi
  mkdir -p "$WHEELHOUSE"
  # ninja numbers the compiled files "[n/N]": poll the log for the newest one as progress.
  "$PY" -m pip wheel --no-deps --no-build-isolation -v -w "$BUILD/dist" "$SRC" >"$BUILD/build.log" 2>&1 &
  build_pid=$!
  while kill -0 "$build_pid" 2>/dev/null; do
    sleep 20
    step=$(grep -oE '\[[0-9]+/[0-9]+\]' "$BUILD/build.log" | tail -n 1 || true)
    log "mmcv build ${step:-configuring}"
  done
  if ! wait "$build_pid"; then
    tail -n 40 "$BUILD/build.log"
    log "mmcv build failed (log above)"; exit 1
  fi
  mv "$BUILD"/dist/mmcv-*.whl "$WHEELHOUSE"/
  wheels=("$WHEELHOUSE"/mmcv-"$MMCV_VERSION"-*.whl)
  log "cached ${wheels[0]}"
fi

log "installing mmcv (cached wheel), mmengine, mmdet, mmpretrain and mmeff"
pip_q install -c "$CONSTRAINTS" "${wheels[0]}"
pip_q install -c "$CONSTRAINTS" -e "$ROOT[tests,deploy,analysis]"

"$PY" - <<'EOF'
import mmcv, mmdet, mmengine, mmpretrain, torch
from mmcv.ops import nms  # noqa: F401  (the compiled ops load)
import mmdet.models, mmpretrain.models, mmeff  # noqa: F401,E401
print(f'[setup] torch {torch.__version__}, mmcv {mmcv.__version__} (ops), mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}')
EOF
stamp_of > "$STAMP_FILE"
log "done: activate with 'source $VENV/bin/activate'"
