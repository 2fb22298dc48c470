#!/usr/bin/env bash
# The performance figures on one GPU, in one call of at most 8 minutes:
#   bash benchmarks/gpu_check.sh /path/to/OpenPAR/VTFPAR++ [OUT_DIR]
# Side by side with the published code at batch 16 and 64 (6 frames; the published
# model as released, this project with its default fast settings in bfloat16), the
# CLIP/side-network breakdown, then one table against the goals. Needs jax (CUDA),
# flax, optax, torch and timm; not TensorFlow. Runs from the repo root, uninstalled.
set -euo pipefail
openpar=${1:?usage: bash benchmarks/gpu_check.sh /path/to/OpenPAR/VTFPAR++ [OUT_DIR]}
out=${2:-gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
for batch in 16 64; do
  python3 -m vtfpar_jax.compare_pytorch --openpar "$openpar" --batch "$batch" --frames 6 \
    --device cuda --jax-dtype bfloat16 --jax-clip-dtype bfloat16 --steps 20 \
    --json "$out/compare_b$batch.json"
  python3 -m vtfpar_jax.bench --clip vit_b16 --batch "$batch" --frames 6 --dtype bfloat16 \
    --breakdown --steps 20 --json "$out/bench_b$batch.json"
done
# The same model on SigLIP base/16 (random weights of its shape), beside the table.
python3 -m vtfpar_jax.bench --backbone siglip --clip vit_b16 --batch 16 --frames 6 \
  --dtype bfloat16 --breakdown --steps 20 --json "$out/bench_siglip_b16.json"
python3 benchmarks/gpu_table.py "$out"
