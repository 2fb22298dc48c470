"""What identifies a run: the frozen presets of each backbone, a training work dir's
config on restart, and the corruption definitions robustness results depend on."""

from __future__ import annotations

import dataclasses
import json

import jax
import pytest
from flax import traverse_util
from smoke_runs import SMOKE, smoke_config

from vtfpar_jax.experiments import ablate, corruptions
from vtfpar_jax.models import towers, vtfpar
from vtfpar_jax.state import build, fingerprint, optim
from vtfpar_jax.training import config_file, train


def _backbone_shapes(clip_cfg) -> dict:
    return jax.eval_shape(lambda: towers.of(clip_cfg).init_params(clip_cfg,
                                                                     jax.random.key(0)))


def _trainable(config, preset: str) -> list[str]:
    """The '/'-joined trainable leaves of the config's model under a preset (shapes only)."""
    clip_cfg = build.backbone_config(config)
    model_cfg = build.model_config(config, clip_cfg, num_attributes=3)
    variables = jax.eval_shape(lambda: vtfpar.init(model_cfg, jax.random.key(0)))
    trainable, _ = optim.partition({"model": variables["params"],
                                    "clip": _backbone_shapes(clip_cfg)},
                                   ablate.frozen_preset(preset, config))
    return sorted(traverse_util.flatten_dict(trainable, sep="/"))


@pytest.mark.parametrize("backbone", ["clip", "siglip"])
def test_presets_freeze_every_leaf_outside_the_vision_tower(backbone):
    config = config_file.load_config_file(f"{SMOKE},backbone={backbone}")   # map '0': blocks 0..4
    clip_cfg = build.backbone_config(config)
    clip_leaves = sorted("clip/" + k for k in traverse_util.flatten_dict(
        _backbone_shapes(clip_cfg), sep="/"))
    vision = [k for k in clip_leaves if k.startswith("clip/vision/")]
    # The backbone names all it holds besides its vision tower: a new top-level param
    # of a backbone fails here until it is declared.
    declared = towers.BACKBONES[backbone].non_vision
    assert {k.split("/")[1] for k in clip_leaves} == {"vision", *declared}
    assert backbone == "clip" or "logit_bias" in declared
    model = _trainable(config, "side_tuning")
    assert model and all(k.startswith("model/") for k in model)
    assert _trainable(config, "full_vision") == sorted(model + vision)
    last = [k for k in _trainable(config, "last_block") if k.startswith("clip/")]
    assert last == [k for k in vision if k.startswith("clip/vision/layers_3/")]


def _stored_run(tmp_path, **overrides):
    """A work dir whose config.json holds the smoke config (as a run writes it)."""
    config = smoke_config("/data", **overrides)
    (tmp_path / "config.json").write_text(json.dumps({"config": config.to_dict()},
                                                     default=list))
    return config


def test_restart_with_another_lr_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    _stored_run(tmp_path)

    def not_built(*args):
        raise AssertionError("the trainer was built")

    monkeypatch.setattr(train, "Trainer", not_built)
    with pytest.raises(fingerprint.ConfigChangeError,
                       match=r"another config \(optimizer.lr 0.001 there, 0.002 now\).*"
                             r"--allow_config_change"):
        train.train_and_evaluate(smoke_config("/data", **{"optimizer.lr": 2e-3}),
                                 str(tmp_path))
    assert not (tmp_path / fingerprint.CHANGES_FILE).exists()
    changed = smoke_config("/elsewhere", num_epochs=5, log_every_steps=7)
    assert fingerprint.restart_changes(str(tmp_path), changed) == [
        ("data_dir", "/data", "/elsewhere"), ("log_every_steps", 1, 7), ("num_epochs", 2, 5)]
    allowed = smoke_config("/data", **{"optimizer.lr": 2e-3})
    assert fingerprint.restart_changes(str(tmp_path), allowed, allow_change=True) == [
        ("optimizer.lr", 0.001, 0.002)]


def test_a_work_dir_from_before_a_field_existed_still_resumes(tmp_path):
    config = _stored_run(tmp_path)
    run = json.loads((tmp_path / "config.json").read_text())
    del run["config"]["model"]["attention"], run["config"]["backbone"]
    (tmp_path / "config.json").write_text(json.dumps(run))
    assert fingerprint.restart_changes(str(tmp_path), config) == []


def test_the_config_in_force_replays_the_recorded_changes(tmp_path):
    config = _stored_run(tmp_path)
    fingerprint.record_changes(str(tmp_path), [("num_epochs", 2, 4)], step=6)
    fingerprint.record_changes(str(tmp_path), [("optimizer.lr", 1e-3, 5e-4)], step=9)
    lines = [json.loads(line) for line in open(tmp_path / fingerprint.CHANGES_FILE)]
    assert [(e["step"], e["allowed_by"]) for e in lines] == [(6, None),
                                                            (9, "allow_config_change")]
    stored = json.loads((tmp_path / "config.json").read_text())["config"]
    now = fingerprint.current_config(str(tmp_path), stored)
    assert (now["num_epochs"], now["optimizer"]["lr"]) == (4, 5e-4)
    assert stored["num_epochs"] == 2          # config.json itself is never rewritten
    # Restarting with what is now in force changes nothing.
    same = smoke_config("/data", num_epochs=4, **{"optimizer.lr": 5e-4})
    assert fingerprint.restart_changes(str(tmp_path), same) == []
    with pytest.raises(fingerprint.ConfigChangeError, match="optimizer.lr 0.0005 there, "
                                                            "0.001 now"):
        fingerprint.restart_changes(str(tmp_path), config)


def test_a_corruption_definition_names_its_levels_and_code(monkeypatch):
    before = fingerprint.corruption_definition(corruptions.CORRUPTIONS["occlusion"])
    monkeypatch.setitem(corruptions.CORRUPTIONS, "occlusion", dataclasses.replace(
        corruptions.CORRUPTIONS["occlusion"], apply=lambda clip, share, rng: clip))
    patched = fingerprint.corruption_definition(corruptions.CORRUPTIONS["occlusion"])
    assert [k for k, _, _ in fingerprint.differences(before, patched)] == ["function",
                                                                           "source"]
