"""Parity with the published PyTorch VTFPAR++ on its fixtures (tests/fixtures/openpar_parity).

Tolerances from the fixtures' README: 1e-4 absolute on features and logits,
1e-4 relative on the loss, 1e-3 relative on each module's gradient norm.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.convert import openpar
from vtfpar_jax.inference import predict
from vtfpar_jax.models import clip, vtfpar
from vtfpar_jax.training import losses

pytestmark = pytest.mark.slow

# Published top-level modules -> our parameter groups.
MODULES = {"spatial_sidenet": ["spatial_side_net"], "crossframe_sidenet": ["temporal_side_net"],
           "word_embed": ["word_embed"], "blocks": ["fusion_block"], "norm": ["norm"],
           "weight_layer": ["heads_kernel", "heads_bias"], "bn": ["bn"],
           "spatial_feat_aggregation": ["spatial_aggregation"],
           "temporal_feat_aggregation": ["temporal_aggregation"]}


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                             for x in jax.tree.leaves(tree))))


@pytest.fixture(scope="module", params=["default", "variant"])
def converted(request, openpar_case):
    case = openpar_case(request.param)
    cfg, variables = openpar.convert(case["state_dict"], **case["meta"]["openpar_options"])
    video = jnp.asarray(case["video"].transpose(0, 1, 3, 4, 2))  # NCHW frames -> NHWC
    return case, cfg, variables, video


def test_logits_and_intermediates_match_published(converted):
    case, cfg, variables, video = converted
    e = case["expected"]
    logits = predict.compute_logits(cfg, variables, np.asarray(video), e["tokens"])
    np.testing.assert_allclose(logits, e["logits"], atol=1e-4, rtol=0)
    text = clip.text_features(cfg.backbone, variables["backbone"], e["tokens"])
    np.testing.assert_allclose(text, e["text_features"], atol=1e-4, rtol=0)
    model_vars = {k: v for k, v in variables.items() if k != "backbone"}
    _, state = vtfpar.apply(cfg, model_vars, variables["backbone"], video, text,
                            capture_intermediates=True)
    got = state["intermediates"]
    # The published temporal tokens are (streams, B, ...); ours keep the batch first.
    want = {**e, "temporal_side": np.moveaxis(e["temporal_side"], 0, 1)}
    for name in ("spatial_side", "temporal_side", "logits_pre_bn"):
        np.testing.assert_allclose(got[name][0], want[name], atol=1e-4, rtol=0, err_msg=name)


def test_loss_and_gradient_norms_match_published(converted):
    case, cfg, variables, video = converted
    e = case["expected"]
    text = clip.text_features(cfg.backbone, variables["backbone"], e["tokens"])

    def loss_fn(params):
        logits, _ = vtfpar.apply(cfg, {"params": params, "batch_stats": variables["batch_stats"]},
                                 variables["backbone"], video, text)
        return losses.weighted_bce(logits, e["labels"], e["pos_ratio"])

    loss, grads = jax.value_and_grad(loss_fn)(variables["params"])
    np.testing.assert_allclose(float(loss), float(e["loss"]), rtol=1e-4)
    for module, expected in case["meta"]["grad_norms"].items():
        ours = _norm([grads[name] for name in MODULES[module]])
        assert abs(ours - expected) <= 1e-3 * expected, (module, ours, expected)


def test_bfloat16_logits_stay_close(openpar_case):
    case = openpar_case("default")
    cfg, variables = openpar.convert(case["state_dict"], **case["meta"]["openpar_options"])
    video = case["video"].transpose(0, 1, 3, 4, 2)
    bf16 = vtfpar.VTFPARConfig(**{**cfg.__dict__, "dtype": "bfloat16",
                                  "backbone_dtype": "bfloat16"})
    logits = predict.compute_logits(bf16, variables, video, case["expected"]["tokens"])
    delta = np.abs(logits - case["expected"]["logits"]).max()
    assert delta <= 5e-2, delta


def test_unknown_and_missing_keys_are_named(openpar_case):
    case = openpar_case("default")
    options = case["meta"]["openpar_options"]
    state = dict(case["state_dict"])
    state["model/surprise.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightImportError, match="surprise.weight"):
        openpar.convert(state, **options)
    state = dict(case["state_dict"])
    del state["model/word_embed.bias"]
    with pytest.raises(WeightImportError, match="word_embed.bias"):
        openpar.convert(state, **options)
    state = dict(case["state_dict"])
    state["model/norm.weight"] = np.zeros(7, np.float32)
    with pytest.raises(WeightImportError, match=r"norm.weight.*\(7,\).*\(240,\)"):
        openpar.convert(state, **options)


def test_bad_options_are_clear_errors(openpar_case):
    state = openpar_case("default")["state_dict"]
    with pytest.raises(ValueError, match="temporal"):
        openpar.convert(state, frames=9)
    with pytest.raises(ValueError, match="interaction map"):
        openpar.convert(state, spatial_interact_map="nine")
    with pytest.raises(ValueError, match="spatial_feat_aggregation"):
        openpar.convert(state, spatial_feat_aggregation="max")
    with pytest.raises(ValueError, match="unknown option"):
        openpar.convert(state, lr=1)


def test_converted_model_dir_gives_the_published_logits(openpar_case, tmp_path, monkeypatch,
                                                        capsys):
    """A published-format checkpoint + OpenAI CLIP file -> model dir -> the same logits. A
    first run that fails as its checkpoint is written (a full disk) leaves --out, an empty
    folder, as it was, so the same command then runs."""
    import errno

    import torch

    from vtfpar_jax.convert import openpar_cli
    from vtfpar_jax.state import model_dir
    from vtfpar_jax.state.checkpoint import CheckpointStore

    case = openpar_case("default")
    state = case["state_dict"]
    model = {k.removeprefix("model/"): torch.from_numpy(v) for k, v in state.items()
             if k.startswith("model/")}
    torch.save({"epoch": 30, "model_state_dict": model}, tmp_path / "ckpt.pth")
    torch.save({k.removeprefix("clip/"): torch.from_numpy(v) for k, v in state.items()
                if k.startswith("clip/")}, tmp_path / "ViT-B-16.pt")
    out = tmp_path / "model"
    out.mkdir()
    command = ["--checkpoint", str(tmp_path / "ckpt.pth"), "--clip", str(tmp_path / "ViT-B-16.pt"),
               "--dataset", "mars", "--out", str(out)]

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(CheckpointStore, "save", full_disk)
        with pytest.raises(SystemExit) as failed:
            openpar_cli.main(command)
    assert failed.value.code == 1
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ViT-B-16.pt", "ckpt.pth", "model"]
    assert list(out.iterdir()) == []
    openpar_cli.main(command)
    loaded = model_dir.load(str(out))
    e = case["expected"]
    tokens = np.asarray(json.loads((out / "config.json").read_text())["tokens"], np.int32)
    np.testing.assert_array_equal(tokens, e["tokens"])
    logits = predict.compute_logits(loaded.model_cfg, loaded.variables(),
                                    case["video"].transpose(0, 1, 3, 4, 2), tokens)
    np.testing.assert_allclose(logits, e["logits"], atol=1e-4, rtol=0)
    with pytest.raises(SystemExit):  # an existing model dir is never overwritten
        openpar_cli.main(command)


def test_convert_refuses_a_folder_that_holds_anything_before_reading(tmp_path, capsys):
    from vtfpar_jax.convert import openpar_cli
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text("{}")   # not ours: never replaced
    with pytest.raises(SystemExit):
        openpar_cli.main(["--checkpoint", str(tmp_path / "missing.pth"), "--clip",
                          str(tmp_path / "missing.pt"), "--dataset", "mars", "--out",
                          str(tmp_path / "project")])
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'project'} holds "
                                       "config.json; choose a new or empty --out\n")
    assert (tmp_path / "project" / "config.json").read_text() == "{}"

def test_convert_calls_random_bytes_not_a_checkpoint(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "random.pth"
    path.write_bytes(b"\x00" + np.random.default_rng(0).bytes(4095))
    with pytest.raises(WeightImportError) as info:
        openpar.read_checkpoint(path)
    assert f"{path}: not a PyTorch checkpoint" in str(info.value)
    assert "run code" not in str(info.value)


def test_convert_calls_an_empty_file_empty(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(WeightImportError, match="empty.pth: an empty file"):
        openpar.read_checkpoint(path)
