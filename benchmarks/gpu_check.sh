#!/usr/bin/env bash
# The performance figures on one GPU, in one call of at most 8 minutes:
#   bash benchmarks/gpu_check.sh /path/to/OpenPAR/VTFPAR++ [OUT_DIR]
# Side by side with the published code at batch 16 and 64 (6 frames; the published
# model as released, this project with its default fast settings in bfloat16), the
# CLIP/side-network breakdown, then one table against the goals. First, the tests
# marked `gpu` (cuDNN attention against XLA's). Needs jax (CUDA), flax, optax, torch,
# timm and pytest; not TensorFlow. Runs from the repo root, uninstalled.
set -euo pipefail
openpar=${1:?usage: bash benchmarks/gpu_check.sh /path/to/OpenPAR/VTFPAR++ [OUT_DIR]}
out=${2:-gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# A failing test is reported, and at the end fails the script; the figures are still taken.
gpu_tests=0
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention.py \
  >"$out/gpu_tests.txt" 2>&1 || gpu_tests=$?
cat "$out/gpu_tests.txt"
for batch in 16 64; do
  python3 -m vtfpar_jax compare-pytorch --openpar "$openpar" --batch "$batch" --frames 6 \
    --device cuda --jax-dtype bfloat16 --jax-clip-dtype bfloat16 --steps 20 \
    --json "$out/compare_b$batch.json"
  python3 -m vtfpar_jax bench --shape vit_b16 --batch "$batch" --frames 6 --dtype bfloat16 \
    --breakdown --steps 20 --json "$out/bench_b$batch.json"
done
# The same model on SigLIP base/16 (random weights of its shape), beside the table.
python3 -m vtfpar_jax bench --backbone siglip --shape vit_b16 --batch 16 --frames 6 \
  --dtype bfloat16 --breakdown --steps 20 --json "$out/bench_siglip_b16.json"
python3 benchmarks/gpu_table.py "$out"
if [ "$gpu_tests" != 0 ]; then
  echo "the tests marked gpu failed (exit $gpu_tests): see $out/gpu_tests.txt" >&2
  exit "$gpu_tests"
fi
