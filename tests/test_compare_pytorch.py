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
@pytest.mark.parametrize("case_name", ["default", "group_variant"])
def test_model_dir_in_the_published_code(openpar_case, tmp_path, case_name):
    """The parity fixture as a model dir, exported and run by the published code on an
    H.264 clip (base_block, or base_block_marco for the group head): the same logits (1e-4)
    and decisions on both sides."""
    import torch

    from vtfpar_jax.convert import openpar_cli
    from vtfpar_jax.inference import video

    case = openpar_case(case_name)
    state, options = case["state_dict"], case["meta"].get("openpar_options", {})
    torch.save({"epoch": 30, "model_state_dict": {
        k.removeprefix("model/"): torch.from_numpy(v) for k, v in state.items()
        if k.startswith("model/")}}, tmp_path / "ckpt.pth")
    torch.save({k.removeprefix("clip/"): torch.from_numpy(v) for k, v in state.items()
                if k.startswith("clip/")}, tmp_path / "ViT-B-16.pt")
    openpar_cli.main(["--checkpoint", str(tmp_path / "ckpt.pth"), "--clip",
                      str(tmp_path / "ViT-B-16.pt"), "--dataset", "mars", "--out",
                      str(tmp_path / "model"), *[f"--{k}={v}" for k, v in options.items()]])
    frames = np.random.default_rng(0).integers(0, 256, (12, 128, 64, 3), dtype=np.uint8)
    video.write_video(tmp_path / "walk.mp4", frames)
    r = compare_pytorch.main(["--openpar", os.environ["VTFPAR_OPENPAR"], "--model",
                              str(tmp_path / "model"), "--clips", str(tmp_path / "walk.mp4")])
    assert r["max_abs_logit_diff"] <= 1e-4
    assert all(c["same_decisions"] for c in r["clips"])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VTFPAR_OPENPAR"),
                    reason="set VTFPAR_OPENPAR to the VTFPAR++ folder of an OpenPAR checkout "
                    "(with torch and timm installed)")
def test_group_head_export_loads_strictly_in_the_published_code(openpar_case, tmp_path):
    """A train_marco.py checkpoint -> vtfpar convert -> vtfpar to-openpar: the file loads
    strictly into the published base_block_marco.TransformerClassifier and gives the
    logits the checkpoint itself gives there. (The tensors the variant options leave
    unused come back as zeros.)"""
    import torch

    from vtfpar_jax.convert import openpar_cli, to_openpar_cli
    from vtfpar_jax.tools.published_code import published_code

    case = openpar_case("group_variant")
    state, options = case["state_dict"], case["meta"]["openpar_options"]
    checkpoint = {k.removeprefix("model/"): torch.from_numpy(v) for k, v in state.items()
                  if k.startswith("model/")}
    torch.save({"epoch": 30, "model_state_dict": checkpoint}, tmp_path / "ckpt.pth")
    clip_state = {k.removeprefix("clip/"): torch.from_numpy(v) for k, v in state.items()
                  if k.startswith("clip/")}
    torch.save(clip_state, tmp_path / "ViT-B-16.pt")
    openpar_cli.main(["--checkpoint", str(tmp_path / "ckpt.pth"), "--clip",
                      str(tmp_path / "ViT-B-16.pt"), "--dataset", "mars", "--out",
                      str(tmp_path / "model"), *[f"--{k}={v}" for k, v in options.items()]])
    to_openpar_cli.main(["--model", str(tmp_path / "model"), "--out",
                         str(tmp_path / "back.pth")])
    exported = torch.load(tmp_path / "back.pth", weights_only=True)["model_state_dict"]
    # The published file also holds the frozen CLIP's visual tower and BatchNorm's counter,
    # which the drawn checkpoint leaves out.
    checkpoint.update({k: v for k, v in exported.items()
                       if k.startswith("clip_visual_extractor.") or k == "bn.num_batches_tracked"})
    logits = {}
    with published_code(os.environ["VTFPAR_OPENPAR"], options, "cpu") as pub:
        phrases = case["meta"]["attributes"]
        for name, weights in (("checkpoint", checkpoint), ("exported", exported)):
            clip_torch = pub.clip_model.build_model(dict(clip_state)).float()
            net = pub.base_block_marco().TransformerClassifier(clip_torch, len(phrases),
                                                               attr_words=phrases)
            net.load_state_dict(weights, strict=True)
            net.eval()
            clip_torch.eval()
            with torch.no_grad():
                logits[name] = net(torch.from_numpy(case["video"]), clip_torch).numpy()
    np.testing.assert_allclose(logits["exported"], logits["checkpoint"], atol=1e-6, rtol=0)


def test_training_batches_hold_one_class_per_group():
    from vtfpar_jax import attributes
    from vtfpar_jax.tools import compare_training

    mars = attributes.get("mars")
    drawn = compare_training.draw_batches(3, steps=2, batch=4, frames=1, attribute_set=mars)
    again = compare_training.draw_batches(3, steps=2, batch=4, frames=1, attribute_set=mars)
    np.testing.assert_array_equal(drawn["labels"], again["labels"])
    assert drawn["videos"].shape == (2, 4, 1, 3, 224, 224)
    assert drawn["eval_video"].shape == (4, 1, 3, 224, 224)
    for group in mars.groups:
        if not group.is_binary:
            np.testing.assert_array_equal(drawn["labels"][..., list(group.columns)].sum(-1), 1)
    assert set(np.unique(drawn["labels"])) == {0.0, 1.0}


def test_update_differences_are_relative_per_tensor():
    from vtfpar_jax.tools import compare_training

    reference = {"a": np.array([3.0, 4.0]), "b": np.array([1.0, 0.0])}
    updates = {"a": np.array([3.0, 4.5]), "b": np.array([1.0, 0.0])}
    d = compare_training.update_differences(updates, reference)
    assert d["per_tensor"] == {"a": pytest.approx(0.1), "b": 0.0}
    assert d["worst_tensor"] == "a" and d["max"] == pytest.approx(0.1)
    assert d["median"] == pytest.approx(0.05)


def test_biases_ahead_of_batchnorm_are_left_out_of_the_updates():
    from vtfpar_jax.tools import compare_training

    before = {"weight_layer.3.bias": np.zeros(1), "weight_layer.3.weight": np.zeros(2),
              "bn.running_mean": np.zeros(1), "clip_visual_extractor.conv1.weight": np.zeros(1),
              "norm.bias": np.zeros(2), "norm.weight": np.zeros(2),
              "blocks.0.norm.bias": np.zeros(2)}
    moved = {"after": {k: v + 1 for k, v in before.items()}}
    assert compare_training.trained_keys(before, moved) == [
        "blocks.0.norm.bias", "norm.weight", "weight_layer.3.weight"]


def test_training_summary_puts_each_figure_beside_its_noise_floor():
    from vtfpar_jax.tools import compare_training

    figures = {"loss_rel": 6.5e-8, "eval_logits_abs": 3.4e-4, "bn_running_abs": 2.5e-7,
               "update_rel_median": 8.4e-4, "update_rel_max": 2e-3}
    r = {"steps": 2, "optimizer": "sgd", "lr": 1e-3, "head": "attribute", "batch": 2,
         "frames": 2, "published_losses": [58.62, 57.9], "jax_losses": [58.62, 57.91],
         "jax_vs_published": figures,
         "noise_floor": {**figures, "eval_logits_abs": 4.2e-4}}
    lines = compare_training.summary(r).splitlines()
    assert lines[1] == "  step 1: 58.6200000 | 58.6200000"
    assert "eval logits after training, max |delta|: 3.40e-04 (4.20e-04)" in lines[5]


def test_bad_training_options_are_refused_before_any_work():
    from vtfpar_jax.tools import compare_training

    with pytest.raises(ValueError, match="--train_steps 0"):
        compare_training.compare("/nowhere", 0)
    with pytest.raises(ValueError, match="--optimizer 'rmsprop'"):
        compare_training.compare("/nowhere", 2, optimizer="rmsprop")
    with pytest.raises(ValueError, match="--head 'marco'"):
        compare_training.compare("/nowhere", 2, head="marco")
    with pytest.raises(FileNotFoundError, match="/nowhere: no models/base_block.py"):
        compare_training.compare("/nowhere", 2, head="group")
