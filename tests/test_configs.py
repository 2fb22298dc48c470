"""Every config file builds and yields a valid model config; bad arguments are clear errors."""

from __future__ import annotations

import os

import pytest

from vtfpar_jax import attributes
from vtfpar_jax.models import clip
from vtfpar_jax.state import build
from vtfpar_jax.training.config_file import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (config file[:arg], expected CLIP shape, attribute set)
CASES = [
    ("mars.py", clip.vit_b16, "mars"),
    ("duke.py", clip.vit_b16, "duke"),
    ("demo.py", None, "synthetic"),
    ("demo.py:smoke", None, "synthetic"),
    ("mars.py:vit=l14,bf16", clip.vit_l14, "mars"),
    ("duke.py:frames=8", clip.vit_b16, "duke"),
    ("duke.py:vit=l14", clip.vit_l14, "duke"),
    ("mars.py:frames=4,vit=b16", clip.vit_b16, "mars"),
]


def load(spec: str):
    return load_config_file(os.path.join(REPO, "configs", spec))


def clip_config_of(config, expected):
    """The CLIP config the run would use, from shapes only (no weights downloaded)."""
    if config.backbone.source == "random":
        return clip.tiny(image_size=config.backbone.image_size,
                         patch_size=config.backbone.patch_size)
    cfg = expected()
    assert config.backbone.patch_size == cfg.patch_size, "config patch size != CLIP's"
    assert config.backbone.image_size == cfg.image_size, "config image size != CLIP's"
    return cfg


def test_every_config_file_is_covered():
    files = {f for f in os.listdir(os.path.join(REPO, "configs"))
             if f.endswith(".py") and f not in ("__init__.py", "common.py")}
    assert files == {spec.partition(":")[0] for spec, _, _ in CASES}


@pytest.mark.parametrize("spec,expected_clip,aset", CASES, ids=[c[0] for c in CASES])
def test_config_builds_a_valid_model_config(spec, expected_clip, aset):
    config = load(spec)
    assert config.dataset
    backbone_cfg = clip_config_of(config, expected_clip)
    attribute_set = attributes.get(aset)
    model_cfg = build.model_config(config, backbone_cfg, attribute_set.num_attributes)
    assert model_cfg.backbone == backbone_cfg
    assert model_cfg.num_attributes == attribute_set.num_attributes
    assert model_cfg.frames == config.model.frames
    # Every interaction map reads CLIP features that exist.
    assert max(model_cfg.backbone_sources) <= backbone_cfg.vision.layers
    assert backbone_cfg.image_size % model_cfg.side_patch_size == 0
    assert config.input.batch_size > 0 and config.num_epochs > 0
    if "bf16" in spec:
        assert (config.model.dtype, config.model.backbone_dtype) == ("bfloat16", "bfloat16")
    else:
        assert (config.model.dtype, config.model.backbone_dtype) == ("float32", "float32")
    if "l14" in spec:
        assert config.backbone.path == "openai/clip-vit-large-patch14"
        # The map reaches ViT-L/14's last block, as the default reaches ViT-B/16's.
        assert max(model_cfg.backbone_sources) == 23
    elif expected_clip is clip.vit_b16:
        assert config.backbone.path == "openai/clip-vit-base-patch16"
        assert max(model_cfg.backbone_sources) == 11
    # The model config is hashable (a static jit argument).
    hash(model_cfg)


def test_published_recipe_fields():
    for spec in ("mars.py", "duke.py"):
        c = load(spec)
        assert (c.seed, c.input.batch_size, c.num_epochs, c.model.frames, c.model.dim) == (
            12240321, 16, 30, 6, 240)
        assert c.frozen_patterns == ("backbone/.*",)
        assert (c.model.spatial_map, c.model.temporal_map) == ("default", "default")
    assert load("duke.py:frames=8").model.frames == 8
    assert load("mars.py").dataset == "mars_attribute"
    assert load("duke.py").dataset == "dukemtmc_vid_attribute"
    smoke = load("demo.py:smoke")
    assert smoke.dataset == "synthetic_pedestrians/tiny"
    assert smoke.backbone.source == "random"


@pytest.mark.parametrize("spec,match", [
    ("mars.py:vit=h14", "vit='h14'"),
    ("duke.py:vit=b32", "vit='b32'"),
    ("mars.py:frame=6", "config argument 'frame'"),
    ("duke.py:bogus", "config argument 'bogus'"),
    ("demo.py:smok", "config argument 'smok'"),
    ("mars.py:frames=six", "six"),
])
def test_bad_config_arguments_are_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        load(spec)


@pytest.mark.parametrize("field,value,match", [
    ("frames", 9, "frames=9 with the temporal side net"),
    ("frames", 0, "frames=0"),
    ("spatial_map", "nine", "interaction map 'nine'"),
    ("temporal_map", "0->0,1->0", "distinct targets"),
    ("spatial_map", "13->0", "reads CLIP feature 13"),
    ("spatial_aggregation", "median", "unknown spatial_aggregation 'median'"),
    ("temporal_aggregation", "median", "unknown temporal_aggregation 'median'"),
    ("dtype", "int8", "dtype='int8'"),
    ("dim", 100, "dim=100"),
])
def test_bad_model_fields_are_clear_errors(field, value, match):
    config = load("mars.py")
    config.model[field] = value
    with pytest.raises(ValueError, match=match):
        build.model_config(config, clip.vit_b16(), attributes.get("mars").num_attributes)


def test_bad_clip_source_is_a_clear_error():
    config = load("demo.py")
    config.backbone.preset = "huge"
    with pytest.raises(ValueError, match="preset='huge'"):
        build.load_backbone(config, 0)
    config.backbone.source = "torchhub"
    with pytest.raises(ValueError, match="source='torchhub'"):
        build.load_backbone(config, 0)
