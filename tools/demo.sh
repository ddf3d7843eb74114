#!/usr/bin/env bash
# The main job on the bundled default: set up the environment if needed, train a detector on the
# demo shapes, evaluate it with COCO mAP, draw its predictions beside the ground truth on the
# validation images, and print its efficiency table.
#   bash tools/demo.sh [CONFIG]            (WORK_DIR=work_dirs/demo by default)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY=${MMEFF_VENV:-$ROOT/.venv}/bin/python
CONFIG=${1:-configs/rtdetr/rtdetr_r18vd_demo-256.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo}

"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
"$PY" tools/test.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" --work-dir "$WORK_DIR/test" --show-dir pictures
PICTURES=$(ls -d "$WORK_DIR"/test/*/pictures | tail -n 1)
echo "annotated validation images (ground truth left, predictions scoring >= 0.3 right): $PICTURES" \
  "($(ls "$PICTURES" | wc -l) images)"
"$PY" tools/benchmark.py "$CONFIG" --metrics params flops latency --img-size 256
