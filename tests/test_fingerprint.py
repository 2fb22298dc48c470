"""What identifies a run: the frozen presets of each backbone, a training work dir's
config on restart, and the corruption definitions robustness results depend on."""

from __future__ import annotations

import dataclasses
import json

import jax
import pytest
from flax import traverse_util
from smoke_runs import SMOKE, smoke_config

from configs import common
from vtfpar_jax.experiments import ablate, corruptions
from vtfpar_jax.models import rng, towers, vtfpar
from vtfpar_jax.state import build, fingerprint, model_dir, old_names, optim
from vtfpar_jax.training import config_file, train


def _backbone_shapes(backbone_cfg) -> dict:
    return jax.eval_shape(lambda: towers.of(backbone_cfg).init_params(backbone_cfg,
                                                                     jax.random.key(0)))


def _trainable(config, preset: str) -> list[str]:
    """The '/'-joined trainable leaves of the config's model under a preset (shapes only)."""
    backbone_cfg = build.backbone_config(config)
    model_cfg = build.model_config(config, backbone_cfg, num_attributes=3)
    variables = jax.eval_shape(lambda: vtfpar.init(model_cfg, jax.random.key(0)))
    trainable, _ = optim.partition({"model": variables["params"],
                                    "backbone": _backbone_shapes(backbone_cfg)},
                                   ablate.frozen_preset(preset, config))
    return sorted(traverse_util.flatten_dict(trainable, sep="/"))


@pytest.mark.parametrize("backbone", ["clip", "siglip"])
def test_presets_freeze_every_leaf_outside_the_vision_tower(backbone):
    config = config_file.load_config_file(f"{SMOKE},backbone={backbone}")   # map '0': blocks 0..4
    backbone_cfg = build.backbone_config(config)
    backbone_leaves = sorted("backbone/" + k for k in traverse_util.flatten_dict(
        _backbone_shapes(backbone_cfg), sep="/"))
    vision = [k for k in backbone_leaves if k.startswith("backbone/vision/")]
    # The backbone names all it holds besides its vision tower: a new top-level param
    # of a backbone fails here until it is declared.
    declared = towers.BACKBONES[backbone].non_vision
    assert {k.split("/")[1] for k in backbone_leaves} == {"vision", *declared}
    assert backbone == "clip" or "logit_bias" in declared
    model = _trainable(config, "side_tuning")
    assert model and all(k.startswith("model/") for k in model)
    assert _trainable(config, "full_vision") == sorted(model + vision)
    last = [k for k in _trainable(config, "last_block") if k.startswith("backbone/")]
    assert last == [k for k in vision if k.startswith("backbone/vision/layers_3/")]


def _stored_run(tmp_path, **overrides):
    """A work dir whose config.json holds the smoke config (as a run writes it)."""
    config = smoke_config("/data", **overrides)
    (tmp_path / "config.json").write_text(json.dumps(
        {"config": config.to_dict(), "random_streams": rng.SCHEME,
         "fingerprint": fingerprint.fingerprint(fingerprint.run_identity(config))},
        default=list))
    return config


def _restart_changes(tmp_path, config, **allow):
    return fingerprint.restart_changes(str(tmp_path), fingerprint.started_run(str(tmp_path)),
                                       config, **allow)


def _edit_run(tmp_path, edit) -> None:
    run = json.loads((tmp_path / "config.json").read_text())
    edit(run)
    (tmp_path / "config.json").write_text(json.dumps(run))


def test_restart_with_another_lr_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    _stored_run(tmp_path)

    def not_built(*args):
        raise AssertionError("the trainer started building")

    monkeypatch.setattr(model_dir, "dataset_builder", not_built)   # its first step
    with pytest.raises(fingerprint.ConfigChangeError,
                       match=r"another config \(optimizer.lr 0.001 there, 0.002 now\).*"
                             r"--allow_config_change"):
        train.train_and_evaluate(smoke_config("/data", **{"optimizer.lr": 2e-3}),
                                 str(tmp_path))
    assert not (tmp_path / fingerprint.CHANGES_FILE).exists()
    changed = smoke_config("/elsewhere", num_epochs=5, log_every_steps=7)
    assert _restart_changes(tmp_path, changed) == [
        ("data_dir", "/data", "/elsewhere"), ("log_every_steps", 1, 7), ("num_epochs", 2, 5)]
    allowed = smoke_config("/data", **{"optimizer.lr": 2e-3})
    assert _restart_changes(tmp_path, allowed, allow_change=True) == [
        ("optimizer.lr", 0.001, 0.002)]


# The config's fields when config.json was first written (a7ca9d4), by their names then; every
# field since is in fingerprint.ADDED_FIELDS, with the value that behaves as runs did before
# it, and every field renamed since in old_names.FIELDS.
FIRST_FIELDS = (
    "dataset data_dir seed clip.source clip.path clip.preset clip.image_size clip.patch_size "
    "model.frames model.spatial_map model.temporal_map model.spatial_aggregation "
    "model.temporal_aggregation model.dim model.heads model.side_patch_size model.use_spatial "
    "model.use_temporal model.drop_path_rate model.dtype model.clip_dtype text.phrases "
    "text.template text.bpe_path input.batch_size input.eval_batch_size input.frame_choice "
    "input.augment input.normalization optimizer.name optimizer.lr optimizer.b1 optimizer.b2 "
    "optimizer.eps optimizer.weight_decay optimizer.schedule optimizer.warmup_epochs "
    "optimizer.warmup_lr optimizer.min_lr optimizer.grad_clip_norm optimizer.accumulate_steps "
    "frozen_patterns num_epochs log_every_steps checkpoint_every_steps keep_checkpoints "
    "keep_every_steps eval_every_epochs max_steps").split()


def test_every_field_added_since_the_first_config_json_has_its_old_value():
    fields = set(fingerprint.flatten(fingerprint.jsonable(common.base_config())))
    first = {old_names.field(name) for name in FIRST_FIELDS}
    assert fields - first == set(fingerprint.ADDED_FIELDS)
    assert first <= fields


def test_a_field_added_since_a_work_dir_was_written_resumes_only_at_its_old_value(tmp_path):
    config = _stored_run(tmp_path)
    _edit_run(tmp_path, lambda run: (run["config"]["model"].pop("attention"),
                                     run["config"]["backbone"].pop("name")))
    assert config.model.attention == "auto" and config.backbone.name == "clip"
    with pytest.raises(fingerprint.ConfigChangeError,
                       match=r"another config \(model.attention 'xla' there, 'auto' now\) "
                             r"\(model.attention came after that run started, which ran as "
                             r"model.attention='xla'\); a restart may change only"):
        _restart_changes(tmp_path, config)
    config.model.attention = "xla"     # CLIP, the old backbone, is the config's already
    assert _restart_changes(tmp_path, config) == []
    # A field no value of which behaves as before never resumes.
    _edit_run(tmp_path, lambda run: run["config"]["input"].pop("frame_size"))
    with pytest.raises(fingerprint.ConfigChangeError,
                       match=r"input.frame_size '<absent>' there, \[0, 0\] now\) "
                             r"\(input.frame_size came after that run started, and no value of "
                             r"it behaves as the run did\)"):
        _restart_changes(tmp_path, config)


def _under_old_names(run: dict) -> None:
    """config.json as main@fd7faaf wrote it: the backbone called "clip" (the name a
    string beside the group `clip`, model.clip_dtype, frozen_patterns over 'clip/...')."""
    c = run["config"]
    group = c.pop("backbone")
    c["backbone"], c["clip"] = group.pop("name"), group
    c["model"]["clip_dtype"] = c["model"].pop("backbone_dtype")
    c["frozen_patterns"] = [p.replace("backbone/", "clip/") for p in c["frozen_patterns"]]


def test_a_run_stored_under_the_backbones_old_names_resumes_under_the_new(tmp_path):
    config = _stored_run(tmp_path, **{"model.backbone_dtype": "bfloat16"})
    _edit_run(tmp_path, _under_old_names)
    assert "clip" in json.loads((tmp_path / "config.json").read_text())["config"]
    assert _restart_changes(tmp_path, config) == []
    config.backbone.preset = "vit_b16"
    config.frozen_patterns = ("backbone/text/.*",)
    assert _restart_changes(tmp_path, config, allow_change=True) == [
        ("backbone.preset", "tiny", "vit_b16"), ("frozen_patterns", ["backbone/.*"],
                                                 ["backbone/text/.*"])]
    # A change recorded under an old name is replayed under the new one.
    fingerprint.record_changes(str(tmp_path), [("clip.preset", "tiny", "vit_b16")], 5)
    started = fingerprint.started_run(str(tmp_path))
    assert fingerprint.current_config(started.config, started.changes)["backbone"][
        "preset"] == "vit_b16"


def test_a_field_stored_in_an_older_form_reads_as_its_name_now(tmp_path):
    config = _stored_run(tmp_path, **{"model.remat": "none"})
    _edit_run(tmp_path, lambda run: run["config"]["model"].update(remat=False))
    assert _restart_changes(tmp_path, config) == []
    config.model.remat = "blocks"
    with pytest.raises(fingerprint.ConfigChangeError, match="model.remat 'none' there"):
        _restart_changes(tmp_path, config)


def test_a_work_dir_resumes_only_under_its_own_random_streams(tmp_path):
    config = _stored_run(tmp_path)
    # Written after the named streams, before they were recorded: it has a fingerprint.
    _edit_run(tmp_path, lambda run: run.pop("random_streams"))
    assert _restart_changes(tmp_path, config) == []
    _edit_run(tmp_path, lambda run: run.pop("fingerprint"))     # older still
    with pytest.raises(fingerprint.ConfigChangeError) as before:
        _restart_changes(tmp_path, config)
    assert str(before.value) == (
        f"{tmp_path / 'config.json'} was written before the named random streams; this "
        f"version draws '{rng.SCHEME}', so the run would resume with another data order and "
        "initialisation. Use another work dir, or resume it with the version that started it")
    _edit_run(tmp_path, lambda run: run.update(random_streams="named-streams/9"))
    with pytest.raises(fingerprint.ConfigChangeError, match="records random streams "
                                                            "'named-streams/9'; this version"):
        _restart_changes(tmp_path, config)


def test_a_stored_identity_says_what_it_left_unsaid():
    identity = fingerprint.run_identity(smoke_config("/data"))
    assert identity["random_streams"] == rng.SCHEME
    then = json.loads(json.dumps({k: v for k, v in identity.items() if k != "random_streams"}))
    del then["config"]["model"]["remat"]
    assert fingerprint.differences(fingerprint.identity_as_recorded(then), identity) == [
        ("config.model.remat", "none", "dots")]


def test_the_config_in_force_replays_the_recorded_changes(tmp_path):
    config = _stored_run(tmp_path)
    fingerprint.record_changes(str(tmp_path), [("num_epochs", 2, 4)], step=6)
    fingerprint.record_changes(str(tmp_path), [("optimizer.lr", 1e-3, 5e-4)], step=9)
    lines = [json.loads(line) for line in open(tmp_path / fingerprint.CHANGES_FILE)]
    assert [(e["step"], e["allowed_by"]) for e in lines] == [(6, None),
                                                            (9, "allow_config_change")]
    stored = json.loads((tmp_path / "config.json").read_text())["config"]
    now = fingerprint.current_config(stored, fingerprint.read_changes(str(tmp_path)))
    assert (now["num_epochs"], now["optimizer"]["lr"]) == (4, 5e-4)
    assert stored["num_epochs"] == 2          # config.json itself is never rewritten
    # Restarting with what is now in force changes nothing.
    same = smoke_config("/data", num_epochs=4, **{"optimizer.lr": 5e-4})
    assert _restart_changes(tmp_path, same) == []
    with pytest.raises(fingerprint.ConfigChangeError, match="optimizer.lr 0.0005 there, "
                                                            "0.001 now"):
        _restart_changes(tmp_path, config)


def test_a_corruption_definition_names_its_levels_and_code(monkeypatch):
    before = fingerprint.corruption_definition(corruptions.CORRUPTIONS["occlusion"])
    monkeypatch.setitem(corruptions.CORRUPTIONS, "occlusion", dataclasses.replace(
        corruptions.CORRUPTIONS["occlusion"], apply=lambda clip, share, rng: clip))
    patched = fingerprint.corruption_definition(corruptions.CORRUPTIONS["occlusion"])
    assert [k for k, _, _ in fingerprint.differences(before, patched)] == ["function",
                                                                           "source"]


def test_the_dataset_check_reads_the_data_dir_a_restart_set(tmp_path, monkeypatch):
    """evaluate and robustness check the dataset before the model loads: in the data dir in
    force (config.json's, changed by a restart), as the loaded model then reads it."""
    (tmp_path / "config.json").write_text(json.dumps({"config": {"data_dir": "/old/tfds"},
                                                      "attribute_set": "mars"}))
    fingerprint.record_changes(str(tmp_path), [("data_dir", "/old/tfds", "/new/tfds")], 100)
    checked = []
    monkeypatch.setattr(model_dir, "dataset_builder",
                        lambda config, *args: checked.append(config.data_dir))
    model_dir.check_dataset(str(tmp_path), "test")
    model_dir.check_dataset(str(tmp_path), "test", data_dir="/given")
    assert checked == ["/new/tfds", "/given"]
