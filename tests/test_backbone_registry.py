"""A third backbone is one registration (vtfpar_jax.backbones.registry): nothing else in the
package names the backbones. A toy one, registered here, is CLIP's towers under its own
config type, weight folder format and name; everything a run asks of a backbone (config
check, random weights, tokens, text features, the model, the saved clip/ folder, the
benchmark's shapes, param-count) must work for it, and give CLIP's numbers."""

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

from vtfpar_jax import attributes
from vtfpar_jax.backbones import clip_tokenizer, registry, text
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.models import clip, towers, vtfpar
from vtfpar_jax.state import build
from vtfpar_jax.tools import bench_setup, param_count


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
        tokens=lambda config, phrases, folder: clip_tokenizer.byte_tokens(phrases)))
    yield entry
    del registry.REGISTRY["toy"], towers.BACKBONES["toy"]


def _logits(config, attribute_set):
    """The model of `config` (its backbone's random weights, seed 0) on a fixed clip."""
    build.check_config(config)
    cfg, params = build.load_backbone(config, 0)
    phrases, tokens = build.attribute_tokens(config, attribute_set)
    features = text.attribute_text_features(cfg, params, phrases, tokens)
    model_cfg = build.model_config(config, cfg, attribute_set.num_attributes)
    variables = vtfpar.init(model_cfg, jax.random.key(0))
    video = np.random.default_rng(0).random((1, model_cfg.frames, cfg.image_size,
                                             cfg.image_size, 3), dtype=np.float32)
    return cfg, params, np.asarray(vtfpar.apply(model_cfg, variables, params, video,
                                                features)[0])


def test_a_registered_backbone_runs_and_gives_its_towers_numbers(toy, data_dir, tmp_path):
    config = smoke_config(data_dir)
    config.backbone = "toy"
    cfg, params, logits = _logits(config, attributes.SYNTHETIC)
    assert type(cfg) is ToyConfig and towers.of(cfg) is toy.towers
    config.backbone = "clip"
    clip_cfg, clip_params, clip_logits = _logits(config, attributes.SYNTHETIC)
    assert type(clip_cfg) is clip.ClipConfig
    np.testing.assert_array_equal(logits, clip_logits)   # same towers, same seed stream

    folder = str(tmp_path / "clip")
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


def test_the_benchmark_and_param_count_take_a_registered_backbone(toy, capsys):
    assert type(bench_setup.clip_config("tiny", "toy")) is ToyConfig
    with pytest.raises(ValueError, match=r"--clip 'vit_b16' with --backbone toy; expected one "
                                         r"of \('tiny',\)"):
        bench_setup.clip_config("vit_b16", "toy")
    param_count.main(["--backbone", "toy", "--clip", "tiny", "--spatial_map", "0",
                      "--temporal_map", "0"])
    assert capsys.readouterr().out.startswith("VTFPAR++ with Toy tiny")
