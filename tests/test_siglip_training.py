"""VTFPAR++ on a SigLIP backbone: the side networks, fusion and heads unchanged, trained,
evaluated and used for prediction on the tiny synthetic set
(configs/demo.py:smoke,backbone=siglip: a small random SigLIP)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke_runs import SMOKE

from vtfpar_jax.backbones import hf_siglip
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.evaluation import evaluate
from vtfpar_jax.inference import predict
from vtfpar_jax.models import clip, siglip, towers, vtfpar
from vtfpar_jax.state import build, model_dir
from vtfpar_jax.state.checkpoint import CheckpointStore
from vtfpar_jax.tools import param_count
from vtfpar_jax.training import config_file, train

SIGLIP_SMOKE = SMOKE + ",backbone=siglip"


def siglip_smoke_config(data_dir, **overrides):
    return config_file.load_config_file(SIGLIP_SMOKE, data_dir=data_dir, **overrides)


def test_smoke_config_is_a_tiny_siglip(data_dir):
    config = siglip_smoke_config(data_dir)
    cfg, params = build.load_backbone(config, config.seed)
    assert isinstance(cfg, siglip.SiglipConfig)
    assert towers.of(cfg).class_tokens == 0 and "class_embedding" not in params["vision"]
    phrases, tokens = build.attribute_tokens(config, _synthetic())
    assert tokens.shape == (len(phrases), 64) and tokens.max() < cfg.vocab_size


def _synthetic():
    from vtfpar_jax import attributes
    return attributes.SYNTHETIC


def test_side_nets_read_patch_tokens_only():
    """Both backbones hand the side nets (N, grid^2, W) patch tokens: CLIP's class token
    row is dropped (the side nets carry their own class token), SigLIP has none: its
    patch tokens are its whole output."""
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    for cfg, init in ((clip.tiny(), clip.init_params), (siglip.tiny(), siglip.init_params)):
        params = init(cfg, jax.random.key(0))
        tokens = towers.patch_tokens(cfg, params, images, (0, 2))
        assert [t.shape for t in tokens] == [(2, cfg.grid_size ** 2, cfg.vision.width)] * 2
    cfg = clip.tiny()
    params = clip.init_params(cfg, jax.random.key(0))
    full = clip.image_features(cfg, params, images, collect=(2,))[0]
    np.testing.assert_array_equal(towers.patch_tokens(cfg, params, images, (2,))[0],
                                  full[:, 1:])
    cfg = siglip.tiny()
    params = siglip.init_params(cfg, jax.random.key(0))
    np.testing.assert_array_equal(towers.patch_tokens(cfg, params, images, (2,))[0],
                                  siglip.image_features(cfg, params, images, collect=(2,))[0])


def test_map_past_the_last_layer_is_one_clear_error():
    with pytest.raises(ValueError, match=r"spatial_map entry 5->1 reads SigLIP feature 5; "
                                         r"this SigLIP has indices 0..4"):
        vtfpar.VTFPARConfig(backbone=siglip.tiny(), num_attributes=5, frames=2, dim=64, heads=4,
                            side_patch_size=8, spatial_map=((0, 0), (5, 1)))


def test_unknown_backbone_is_named(data_dir):
    config = siglip_smoke_config(data_dir)
    config.backbone.name = "dino"
    with pytest.raises(ConfigError, match=r"config.backbone.name='dino'; expected one of"):
        build.load_backbone(config, 0)


def test_trainable_count_differs_from_clip_only_by_the_text_embedding():
    """At the same side width, the trainable model is the same whichever backbone, but
    for the layers whose input sizes are the backbone's: the fusions' LayerNorm + Dense
    and the temporal first_linear read its width W, and word_embed its text feature size
    E. ViT-B/16 CLIP and SigLIP base/16 share W = 768; E is 512 for CLIP, 768 for SigLIP,
    so SigLIP's word_embed has (768 - 512) x 240 more weights, and nothing else differs."""
    def trainable(backbone):
        cfg = vtfpar.VTFPARConfig(backbone=backbone, num_attributes=43)
        return param_count.count(cfg)["trainable"]

    clip_b16, siglip_b16 = clip.vit_b16(), siglip.base16()
    assert clip_b16.vision.width == siglip_b16.vision.width == 768
    ours, published = trainable(siglip_b16), trainable(clip_b16)
    assert set(ours) == set(published)
    assert {k for k in ours if ours[k] != published[k]} == {"word_embed"}
    assert ours["word_embed"] - published["word_embed"] == (768 - 512) * 240


def test_step_holds_only_the_siglip_part_it_reads():
    """The frozen SigLIP on the devices: no text tower (its features are computed once),
    no block past the deepest index read, no post-LayerNorm or pooling head."""
    from vtfpar_jax.state.train_state import step_frozen_params

    cfg = vtfpar.VTFPARConfig(backbone=siglip.tiny(), num_attributes=5, frames=2, dim=64, heads=4,
                              side_patch_size=8, spatial_map=((0, 0), (2, 1)),
                              temporal_map=((1, 0),))
    params = siglip.init_params(cfg.backbone, jax.random.key(0))
    held = step_frozen_params(cfg, {"backbone": params})["backbone"]
    assert "text" not in held
    assert sorted(held["vision"]) == ["layers_0", "layers_1", "patch_embed",
                                      "position_embedding"]


@pytest.mark.slow
def test_trains_evaluates_and_predicts(data_dir, tmp_path):
    """(Resuming does not depend on the backbone: tests/test_train.py.)"""
    workdir = tmp_path / "run"
    overrides = {"num_epochs": 1, "eval_every_epochs": 1, "checkpoint_every_steps": 100}
    results = train.train_and_evaluate(siglip_smoke_config(data_dir, max_steps=2, **overrides),
                                       str(workdir))
    assert "group" in results
    assert CheckpointStore(str(workdir)).steps() == [2]
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")
             if "loss" in json.loads(line)]
    assert steps == [1, 2]
    # The work dir holds the SigLIP in HF format, and loads back as one.
    saved_cfg, _ = hf_siglip.load(workdir / "backbone")
    loaded = model_dir.load(str(workdir))
    assert loaded.model_cfg.backbone == saved_cfg and isinstance(saved_cfg, siglip.SiglipConfig)
    assert np.asarray(loaded.frozen.text_features).shape == (loaded.attribute_set.num_attributes,
                                                             saved_cfg.projection_dim)
    table = evaluate.evaluate_workdir(str(workdir))
    assert "group" in table
    size = saved_cfg.image_size
    videos = jax.random.normal(jax.random.key(0), (2, loaded.model_cfg.frames, size, size, 3))
    probs = predict.predict_clips(loaded, np.asarray(videos))
    assert probs.shape == (2, loaded.attribute_set.num_attributes)
    assert np.all(np.isfinite(probs)) and np.all((probs > 0) & (probs < 1))
    assert jnp.asarray(probs).std() > 0
    # A run file that names another backbone than its backbone/ folder holds is refused.
    run = json.loads((workdir / "config.json").read_text())
    run["config"]["backbone"]["name"] = "clip"
    (workdir / "config.json").write_text(json.dumps(run))
    with pytest.raises(model_dir.ModelDirError, match="backbone 'clip', but backbone/ holds a "
                                                      "SigLIP checkpoint"):
        model_dir.load(str(workdir))


def test_published_configs_take_backbone_siglip():
    from configs import duke, mars

    for module in (mars, duke):
        config = module.get_config("backbone=siglip")
        assert config.backbone.name == "siglip"
        assert config.backbone.path == "google/siglip-base-patch16-224"
        assert config.model.spatial_map == config.model.temporal_map == "default"
        assert module.get_config("").backbone.name == "clip"
    with pytest.raises(ConfigError, match="backbone=siglip and vit=l14"):
        mars.get_config("backbone=siglip,vit=l14")
    with pytest.raises(ConfigError, match="backbone='dino'"):
        mars.get_config("backbone=dino")
