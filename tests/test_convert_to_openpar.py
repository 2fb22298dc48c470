"""Export to the published checkpoint format: the parity fixtures round-trip bit for bit.

Fixture (published tensors) -> our variables -> published tensors again, and,
through the two commands, fixture -> model dir -> .pth -> the fixture's logits.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from vtfpar_jax.convert import openpar, to_openpar
from vtfpar_jax.models import siglip


def _published_keys(case) -> dict[str, tuple]:
    """What the published model's state_dict holds: the fixture's model tensors, the
    CLIP visual tower under `clip_visual_extractor.` (the fixture lists it once, under
    `clip/visual.`, without ln_post and proj) and the BatchNorm counter."""
    keys = {t["name"]: tuple(t["shape"]) for t in case["meta"]["tensors"]
            if t["name"].startswith("model/")}
    for t in case["meta"]["tensors"]:
        name = t["name"].removeprefix("clip/visual.")
        if t["name"].startswith("clip/visual.") and not name.startswith(("ln_post", "proj")):
            keys["model/clip_visual_extractor." + name.replace("transformer.resblocks.",
                                                                "resblocks.")] = tuple(t["shape"])
    keys["model/bn.num_batches_tracked"] = ()
    return keys


def _never_run(key: str, frames: int) -> bool:
    """docs/published-model.md §5-§7: created by the published model, never run."""
    block = re.match(r"model/(spatial|crossframe)_sidenet\.vit_model\.blocks\.(\d+)\.", key)
    if block:
        return int(block.group(2)) >= (7 if block.group(1) == "spatial" else frames)
    return re.match(r"model/(w_temporal|visual_embed\.|spa_embed\.|tem_embed\.|bn\.num_batches"
                    r"|crossframe_sidenet\.(projection_layers|vit_model\.patch_embed)\.)",
                    key) is not None


def _check_against_fixture(case, exported: dict):
    fixture, frames = case["state_dict"], case["meta"]["frames"]
    expected = _published_keys(case)
    assert sorted(exported) == sorted(expected)
    for key, shape in expected.items():
        got = np.asarray(exported[key])
        assert got.shape == shape, key
        assert got.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float32), key
        if _never_run(key, frames):
            assert not got.any(), key   # zeros: no output can depend on them
        else:
            source = key.replace("model/clip_visual_extractor.resblocks.",
                                 "clip/visual.transformer.resblocks.").replace(
                "model/clip_visual_extractor.", "clip/visual.")
            np.testing.assert_array_equal(got, fixture[source], err_msg=key)


@pytest.mark.parametrize("name", ["default", "variant"])
def test_state_dict_inverts_the_import_bit_for_bit(openpar_case, name):
    case = openpar_case(name)
    cfg, variables = openpar.convert(case["state_dict"], **case["meta"]["openpar_options"])
    _check_against_fixture(case, to_openpar.state_dict(cfg, variables))


@pytest.mark.slow
def test_model_dir_exports_to_the_published_logits(openpar_case, tmp_path):
    """fixture -> model dir (convert.openpar_cli) -> .pth (convert.to_openpar_cli): every run
    tensor identical, and the re-imported file gives the fixture's logits."""
    import torch

    from vtfpar_jax.convert import openpar_cli, to_openpar_cli
    from vtfpar_jax.inference import predict

    case = openpar_case("default")
    state = case["state_dict"]
    torch.save({"epoch": 30, "model_state_dict": {
        k.removeprefix("model/"): torch.from_numpy(v) for k, v in state.items()
        if k.startswith("model/")}}, tmp_path / "ckpt.pth")
    clip_tensors = {k: v for k, v in state.items() if k.startswith("clip/")}
    torch.save({k.removeprefix("clip/"): torch.from_numpy(v) for k, v in clip_tensors.items()},
               tmp_path / "ViT-B-16.pt")
    model, out = tmp_path / "model", tmp_path / "exported.pth"
    openpar_cli.main(["--checkpoint", str(tmp_path / "ckpt.pth"), "--clip",
                      str(tmp_path / "ViT-B-16.pt"), "--dataset", "mars", "--out", str(model)])
    to_openpar_cli.main(["--model", str(model), "--out", str(out)])

    written = torch.load(out, map_location="cpu", weights_only=True)
    assert set(written) == {"epoch", "model_state_dict"} and written["epoch"] == 0
    _check_against_fixture(case, {"model/" + k: v.numpy()
                                  for k, v in written["model_state_dict"].items()})
    sidecar = json.loads((tmp_path / "exported.pth.json").read_text())
    assert sidecar["openpar_options"] == case["meta"]["openpar_options"]
    assert sidecar["step"] == 0

    reimported = {**openpar.read_checkpoint(out), **clip_tensors}
    cfg, variables = openpar.convert(reimported, **sidecar["openpar_options"])
    logits = predict.compute_logits(cfg, variables, case["video"].transpose(0, 1, 3, 4, 2),
                                    case["expected"]["tokens"])
    np.testing.assert_allclose(logits, case["expected"]["logits"], atol=1e-4, rtol=0)
    with pytest.raises(SystemExit):  # an existing file is never overwritten
        to_openpar_cli.main(["--model", str(model), "--out", str(out)])


@pytest.fixture(scope="module")
def published_model(openpar_case):
    """(config, model config) of the default parity case, as a model dir records them."""
    import configs.mars

    case = openpar_case("default")
    cfg, _ = openpar.convert(case["state_dict"], **case["meta"]["openpar_options"])
    return configs.mars.get_config(), cfg


@pytest.mark.parametrize("change, option", [
    (dict(backbone=siglip.tiny(), spatial_map=((0, 0),), temporal_map=((0, 0),)),
     "backbone.name='siglip'"),
    (dict(temporal_aggregation="attention"), "model.temporal_aggregation='attention'"),
    (dict(spatial_aggregation="max"), "model.spatial_aggregation='max'"),
    (dict(dim=192, heads=6), "model.dim=192"),
    (dict(dim=256), "model.dim=256 with model.spatial_aggregation='mean'"),
    (dict(spatial_map=((0, 0), (5, 1))), "model.spatial_map=0->0,5->1"),
])
def test_models_the_published_code_cannot_run_are_refused(published_model, change, option):
    config, cfg = published_model
    with pytest.raises(to_openpar.ExportRefusedError, match=re.escape(option)):
        to_openpar.published_options(config, dataclasses.replace(cfg, **change), {})


def test_trained_text_tower_and_other_settings_are_refused(published_model):
    config, cfg = published_model
    with pytest.raises(to_openpar.ExportRefusedError, match="frozen_patterns"):
        to_openpar.published_options(config, cfg, {"backbone": {"text": {}}})
    other = config.copy_and_resolve_references()
    other.input.normalization = "clip"
    with pytest.raises(to_openpar.ExportRefusedError, match="input.normalization='clip'"):
        to_openpar.published_options(other, cfg, {})


@pytest.mark.slow
def test_cli_refuses_a_model_dir_on_another_clip(demo_model, tmp_path, capsys):
    from vtfpar_jax.convert import to_openpar_cli

    with pytest.raises(SystemExit):
        to_openpar_cli.main(["--model", str(demo_model["model"]), "--out",
                             str(tmp_path / "x.pth")])
    assert "error: backbone.path=" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()
