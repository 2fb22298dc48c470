"""The side-by-side command's summaries (the comparison itself needs a published checkout:
set VTFPAR_OPENPAR to run it)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vtfpar_jax.tools import compare_pytorch


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


def test_model_summary_names_clips_and_disagreements():
    r = {"model": "/runs/mars", "step": 120, "device": "cpu", "max_abs_logit_diff": 2e-5,
         "clips": [{"clip": "a.mp4", "same_decisions": True, "max_abs_logit_diff": 2e-5,
                    "jax": "female, pose=back", "published": "female, pose=back"},
                   {"clip": "b.mp4", "same_decisions": False, "max_abs_logit_diff": 1e-5,
                    "jax": "hat", "published": "no binary attribute present"}]}
    lines = compare_pytorch.model_summary(r).splitlines()
    assert "max |dlogits| 2.00e-05 over 2 clip(s)" in lines[0]
    assert lines[1].startswith("a.mp4: same decisions")
    assert "b.mp4: DIFFERENT decisions" in lines[4] and lines[6].endswith("no binary attribute "
                                                                            "present")


def test_model_needs_clips(capsys):
    with pytest.raises(SystemExit):
        compare_pytorch.main(["--openpar", "/nowhere", "--model", "/runs/mars"])
    assert "--model needs --clips" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VTFPAR_OPENPAR"),
                    reason="set VTFPAR_OPENPAR to the VTFPAR++ folder of an OpenPAR checkout "
                    "(with torch and timm installed)")
def test_model_dir_in_the_published_code(openpar_case, tmp_path):
    """The parity fixture as a model dir, exported and run by the published code on an
    H.264 clip: the same logits (1e-4) and decisions on both sides."""
    import torch

    from vtfpar_jax.convert import openpar_cli
    from vtfpar_jax.inference import video

    state = openpar_case("default")["state_dict"]
    torch.save({"epoch": 30, "model_state_dict": {
        k.removeprefix("model/"): torch.from_numpy(v) for k, v in state.items()
        if k.startswith("model/")}}, tmp_path / "ckpt.pth")
    torch.save({k.removeprefix("clip/"): torch.from_numpy(v) for k, v in state.items()
                if k.startswith("clip/")}, tmp_path / "ViT-B-16.pt")
    openpar_cli.main(["--checkpoint", str(tmp_path / "ckpt.pth"), "--clip",
                      str(tmp_path / "ViT-B-16.pt"), "--dataset", "mars", "--out",
                      str(tmp_path / "model")])
    frames = np.random.default_rng(0).integers(0, 256, (12, 128, 64, 3), dtype=np.uint8)
    video.write_video(tmp_path / "walk.mp4", frames)
    r = compare_pytorch.main(["--openpar", os.environ["VTFPAR_OPENPAR"], "--model",
                              str(tmp_path / "model"), "--clips", str(tmp_path / "walk.mp4")])
    assert r["max_abs_logit_diff"] <= 1e-4
    assert all(c["same_decisions"] for c in r["clips"])
