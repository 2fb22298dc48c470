"""What earlier code stored under the backbone's old name "clip" reads as today's names
(vtfpar_jax/state/old_names.py); the fixtures of tests/test_legacy_model_dir.py load whole."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from smoke_runs import SMOKE

from vtfpar_jax.errors import ConfigError
from vtfpar_jax.state import old_names
from vtfpar_jax.state.checkpoint import CheckpointStore, abstract
from vtfpar_jax.state.train_state import TrainState
from vtfpar_jax.training import config_file

OLD = {"backbone": "siglip", "clip": {"source": "random", "preset": "tiny"},
       "model": {"clip_dtype": "bfloat16", "dim": 16},
       "frozen_patterns": ["clip/text/.*", "clip/vision/(?!layers_1/).*", "model/clip/.*"]}
NEW = {"backbone": {"name": "siglip", "source": "random", "preset": "tiny"},
       "model": {"backbone_dtype": "bfloat16", "dim": 16},
       "frozen_patterns": ["backbone/text/.*", "backbone/vision/(?!layers_1/).*",
                           "model/clip/.*"]}


def test_a_config_of_earlier_code_reads_under_todays_names():
    assert old_names.config(OLD) == NEW
    assert old_names.config(NEW) == NEW
    assert OLD["backbone"] == "siglip"          # the stored config is left as it was
    # Before config.backbone existed (2d1f5f4) there was no name: fingerprint.ADDED_FIELDS
    # fills it in.
    assert old_names.config({"clip": {"preset": "tiny"}}) == {"backbone": {"preset": "tiny"}}
    # model.remat was a bool before the remat policies (1db70a4).
    assert old_names.config({"model": {"remat": True}}) == {"model": {"remat": "blocks"}}
    assert old_names.config({**NEW, "model": {"remat": False}})["model"] == {"remat": "none"}
    assert [old_names.field(f) for f in ("clip.path", "backbone", "model.clip_dtype",
                                         "clipboard", "model.dim")] == [
        "backbone.path", "backbone.name", "model.backbone_dtype", "clipboard", "model.dim"]


def test_a_model_dir_of_earlier_code_has_its_backbone_in_clip(tmp_path):
    assert old_names.backbone_folder(str(tmp_path)) == str(tmp_path / "backbone")
    (tmp_path / "clip").mkdir()
    assert old_names.backbone_folder(str(tmp_path)) == str(tmp_path / "clip")
    (tmp_path / "backbone").mkdir()
    assert old_names.backbone_folder(str(tmp_path)) == str(tmp_path / "backbone")


def _state(key: str, value: float) -> TrainState:
    trainable = {"model": {"w": jnp.full(2, value)}, key: {"vision": {"b": jnp.full(3, value)}}}
    return TrainState(step=jnp.asarray(7, jnp.int32), trainable=trainable,
                      opt_state=optax.adam(1e-3).init(trainable), batch_stats={})


def test_a_checkpoint_that_trains_part_of_the_backbone_under_clip_restores(tmp_path):
    store = CheckpointStore(str(tmp_path), async_save=False)
    store.save(7, _state("clip", 1.0), {"step": 7})
    store.close()
    assert old_names.holds_old_params_key(
        CheckpointStore(str(tmp_path))._saved_tree(7))

    restored, meta = CheckpointStore(str(tmp_path)).restore(abstract(_state("backbone", 0.0)))
    assert meta["step"] == 7 and set(restored.trainable) == {"model", "backbone"}
    np.testing.assert_array_equal(restored.trainable["backbone"]["vision"]["b"], [1.0] * 3)
    assert set(restored.opt_state[0].mu) == {"model", "backbone"}
    # Inference restores part of it, onto a plain dict.
    wanted = {"step": jnp.zeros((), jnp.int32), "trainable": _state("backbone", 0.0).trainable}
    restored, _ = CheckpointStore(str(tmp_path)).restore(abstract(wanted), partial=True)
    np.testing.assert_array_equal(restored["trainable"]["backbone"]["vision"]["b"], [1.0] * 3)


def test_an_override_by_an_old_name_is_refused_naming_the_name_now():
    with pytest.raises(ConfigError, match=r"--config.clip.path: .* has no field 'clip.path' "
                                          r"\(it is called 'backbone.path' now\)"):
        config_file.check_config_overrides(["--config", SMOKE, "--config.clip.path=/x"])
