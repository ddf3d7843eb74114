#!/usr/bin/env bash
# The test command: set up the environment if needed (tools/setup_env.sh), then run pytest.
#   bash tools/run_tests.sh                 # the default suite (slow tests deselected)
#   bash tools/run_tests.sh -m slow         # only the slow ones; any pytest arguments pass through
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${MMEFF_VENV:-$ROOT/.venv}/bin/python" -m pytest tests "$@"
