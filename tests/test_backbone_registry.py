"""A third backbone is one registration (vtfpar_jax.backbones.registry): nothing else in the
package names the backbones. A toy one, registered here, is CLIP's towers under its own
config type, weight folder format and name; everything a run asks of a backbone (config
check, random weights, tokens, text features, the model, training, the saved backbone/ folder,
a model dir's reload, evaluation, prediction, the benchmark's shapes, param-count) must work
for it."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util
from smoke_runs import smoke_config

from vtfpar_jax.backbones import clip_tokenizer, registry
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.evaluation import evaluate
from vtfpar_jax.inference import predict
from vtfpar_jax.models import clip, towers
from vtfpar_jax.state import build, model_dir
from vtfpar_jax.state.checkpoint import CheckpointStore
from vtfpar_jax.tools import param_count
from vtfpar_jax.training import train


@dataclasses.dataclass(frozen=True)
class ToyConfig(clip.ClipConfig):
    """CLIP's shape, under a type of its own: the registry tells backbones apart by it."""


def _tiny(image_size: int = 64, patch_size: int = 8) -> ToyConfig:
    return ToyConfig(**vars(clip.tiny(image_size, patch_size)))


def _save(cfg: ToyConfig, params, folder: str) -> None:
    """The toy's own folder format: config.json (model_type 'toy') and one safetensors file."""
    os.makedirs(folder, exist_ok=True)
    fields = dataclasses.asdict(cfg)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "toy", **fields}, f)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    safetensors.numpy.save_file({k: np.asarray(v) for k, v in flat.items()},
                                os.path.join(folder, "model.safetensors"))


def _read_config(folder: str) -> ToyConfig:
    with open(os.path.join(folder, "config.json")) as f:
        raw = json.load(f)
    raw.pop("model_type")
    return ToyConfig(**{**raw, "vision": clip.TowerConfig(**raw["vision"]),
                        "text": clip.TowerConfig(**raw["text"])})


def _load(folder: str):
    flat = safetensors.numpy.load_file(os.path.join(folder, "model.safetensors"))
    return _read_config(folder), traverse_util.unflatten_dict(flat, sep="/")


@pytest.fixture
def toy():
    clip_towers = towers.BACKBONES["clip"]
    entry = registry.register(registry.Backbone(
        towers=dataclasses.replace(clip_towers, name="toy", display_name="Toy",
                                   config_type=ToyConfig),
        presets={"tiny": _tiny}, shapes={"tiny": "tiny"},
        loaders={"hf": _load}, read_config=_read_config, save=_save, model_types=("toy",),
        byte_tokens=clip_tokenizer.byte_tokens,
        # Its saved folders carry no vocabulary either: bytes again.
        tokens=lambda config, phrases: clip_tokenizer.byte_tokens(phrases)))
    yield entry
    del registry.REGISTRY["toy"], towers.BACKBONES["toy"]


def test_a_registered_backbone_is_built_saved_and_found_again(toy, data_dir, tmp_path):
    config = smoke_config(data_dir)
    config.backbone.name = "toy"
    build.check_config(config)
    cfg, params = build.load_backbone(config, 0)
    assert type(cfg) is ToyConfig and towers.of(cfg) is toy.towers
    # The same towers and the same random stream as CLIP's: the same weights.
    config.backbone.name = "clip"
    jax.tree.map(np.testing.assert_array_equal, params, build.load_backbone(config, 0)[1])

    folder = str(tmp_path / "backbone")
    build.save_backbone(cfg, params, folder)             # a model dir's copy, its format
    loaded_cfg, loaded = build.load_backbone_folder(folder)
    assert loaded_cfg == cfg and type(loaded_cfg) is ToyConfig
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))

    with open(os.path.join(folder, "config.json")) as f:
        raw = json.load(f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**raw, "model_type": "dino"}, f)
    with pytest.raises(WeightImportError, match=r"model_type is 'dino'; expected one of "
                                                r"\['clip', 'siglip', 'siglip2', 'toy'\]"):
        build.load_backbone_folder(folder)


@pytest.mark.slow
def test_a_registered_backbone_trains_reloads_evaluates_and_predicts(toy, data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = smoke_config(data_dir, max_steps=2, num_epochs=1, eval_every_epochs=1)
    config.backbone.name = "toy"
    assert "group" in train.train_and_evaluate(config, workdir)
    assert CheckpointStore(workdir).steps() == [2]
    saved_cfg, _ = _load(os.path.join(workdir, "backbone"))   # the toy's own folder format
    loaded = model_dir.load(workdir)
    assert loaded.model_cfg.backbone == saved_cfg and type(saved_cfg) is ToyConfig
    assert "group" in evaluate.evaluate_workdir(workdir)
    size = saved_cfg.image_size
    clips = np.random.default_rng(0).random((2, loaded.model_cfg.frames, size, size, 3),
                                            dtype=np.float32)
    probs = predict.predict_clips(loaded, clips)
    assert probs.shape == (2, loaded.attribute_set.num_attributes)
    assert np.all((probs > 0) & (probs < 1)) and probs.std() > 0


def test_the_benchmark_and_param_count_take_a_registered_backbone(toy, capsys):
    assert type(registry.shape_config("toy", "tiny")) is ToyConfig
    with pytest.raises(ValueError, match=r"--shape 'vit_b16' with --backbone toy; expected one "
                                         r"of \('tiny',\)"):
        registry.shape_config("toy", "vit_b16")
    param_count.main(["--backbone", "toy", "--shape", "tiny", "--spatial_map", "0",
                      "--temporal_map", "0"])
    assert capsys.readouterr().out.startswith("VTFPAR++ with Toy tiny")
