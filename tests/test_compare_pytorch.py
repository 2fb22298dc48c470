"""The side-by-side command's summary line (the comparison itself needs a published checkout)."""

from __future__ import annotations

from vtfpar_jax import compare_pytorch


def _result(**over):
    r = {"batch": 16, "frames": 6, "device": "cuda", "jax_dtype": "bfloat16",
         "jax_clip_dtype": "bfloat16", "max_abs_logit_diff": 0.03,
         "published": {"predict_clips_per_s": 254.0, "train_s_per_step": 0.177,
                       "train_peak_bytes": 6 * 2 ** 30},
         "jax": {"predict_clips_per_s": 1016.0, "train_s_per_step": 0.0221,
                 "train_peak_bytes": 3 * 2 ** 30}}
    r.update(over)
    return r


def test_summary_gives_speed_and_memory_ratios():
    line = compare_pytorch.summary(_result())
    assert "(JAX bfloat16, CLIP bfloat16)" in line
    assert "4.00x" in line                      # predict 1016 / 254
    assert "8.01x faster" in line               # train 0.177 / 0.0221
    assert "6.00 vs 3.00 GiB (50% of published)" in line


def test_summary_without_training_or_peaks():
    r = _result(device="cpu")
    r["published"] = {**r["published"], "train_s_per_step": None, "train_peak_bytes": None}
    r["jax"] = {**r["jax"], "train_s_per_step": None, "train_peak_bytes": None}
    line = compare_pytorch.summary(r)
    assert "train not run" in line and "GiB" not in line
