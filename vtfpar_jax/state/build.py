"""From a config to the pieces a run needs: the backbone, model config, attribute tokens.

Shared by training, evaluation and prediction so that a work dir always
rebuilds the same model. `config.backbone` picks CLIP (as published) or
SigLIP; `config.clip` says where the backbone's weights come from, whichever
it is (source 'hf' with a hub id or folder, or 'random' with a preset).
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from vtfpar_jax import attributes
from vtfpar_jax.backbones import (
    clip_tokenizer,
    hf_clip,
    hf_siglip,
    openai_clip,
    siglip_tokenizer,
    text,
)
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import clip, rng, siglip, towers, vtfpar
from vtfpar_jax.models.side_nets import parse_interaction_map

CLIP_PRESETS = {"tiny": clip.tiny, "vit_b16": clip.vit_b16, "vit_l14": clip.vit_l14}
BackboneConfig = clip.ClipConfig | siglip.SiglipConfig
SIGLIP_PRESETS = {"tiny": siglip.tiny, "base16": siglip.base16, "so400m14": siglip.so400m14}
# The checkpoint formats of each backbone: (load a HF folder or hub id, save one).
BACKBONE_FILES = {"clip": (hf_clip.load, hf_clip.save), "siglip": (hf_siglip.load, hf_siglip.save)}


def backbone_name(config: ml_collections.ConfigDict) -> str:
    """config.backbone, checked; runs saved before it existed were CLIP."""
    name = config.get("backbone", "clip")
    if name not in towers.BACKBONES:
        raise ConfigError(f"config.backbone={name!r}; expected one of "
                          f"{sorted(towers.BACKBONES)}")
    return name


def load_backbone(config: ml_collections.ConfigDict, seed: int):
    """(backbone cfg, params) of config.backbone, from config.clip's source."""
    if backbone_name(config) == "clip":
        return load_clip(config.clip, seed)
    return load_siglip(config.clip, seed)


def load_siglip(c: ml_collections.ConfigDict, seed: int) -> tuple[siglip.SiglipConfig, dict]:
    """SigLIP from a HuggingFace id/folder or a seeded random init (as `load_clip`)."""
    if c.source == "hf":
        cfg, params = hf_siglip.load(c.path)
        _check_sizes(c, cfg)
        return cfg, params
    if c.source == "random":
        return _random_backbone(c, siglip, SIGLIP_PRESETS, seed, " with backbone 'siglip'")
    raise ConfigError(f"config.clip.source={c.source!r} with backbone 'siglip'; expected 'hf' "
                      "or 'random'")


def _random_backbone(c: ml_collections.ConfigDict, module, presets: dict, seed: int,
                     which: str = ""):
    """(cfg, seeded random params) of preset `c.preset` of a backbone module (clip or
    siglip)."""
    cfg = _random_config(c, module, presets, which)
    return cfg, module.init_params(cfg, rng.stream(seed, "backbone_init"))


def _random_config(c: ml_collections.ConfigDict, module, presets: dict, which: str = ""):
    """The cfg of preset `c.preset`; the tiny preset takes the config's image and patch size."""
    if c.preset not in presets:
        raise ConfigError(f"config.clip.preset={c.preset!r}{which}; expected one of "
                          f"{sorted(presets)}")
    return (module.tiny(image_size=c.image_size, patch_size=c.patch_size) if c.preset == "tiny"
            else presets[c.preset]())


def backbone_config(config: ml_collections.ConfigDict) -> BackboneConfig | None:
    """The backbone's config without its weights: a random preset's, or a HF folder's
    config.json (checked against the config's sizes). None for an OpenAI file, whose
    shape only its weights tell; the run reads them when it starts."""
    c, name = config.clip, backbone_name(config)
    if c.source == "random":
        module, presets = (clip, CLIP_PRESETS) if name == "clip" else (siglip, SIGLIP_PRESETS)
        return _random_config(c, module, presets, "" if name == "clip" else
                              " with backbone 'siglip'")
    if c.source == "hf":
        if name == "clip":
            cfg = hf_clip.read_config(hf_clip.resolve_folder(c.path))
        else:
            cfg = hf_siglip.read_config(hf_clip.resolve_folder(c.path, hf_siglip.HUB_PATTERNS))
        _check_sizes(c, cfg)
        return cfg
    if c.source == "openai" and name == "clip":
        return None
    raise ConfigError(f"config.clip.source={c.source!r} with backbone {name!r}; expected "
                      f"{'hf, openai' if name == 'clip' else 'hf'} or random")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuse a config that a run would refuse when building its model, without building
    anything: the backbone's source and shape, every model field (maps, aggregations,
    widths, dtypes...), the input transforms and the frozen_patterns regexes."""
    import re

    from vtfpar_jax.models import preprocess
    cfg = backbone_config(config)
    if cfg is not None:
        model_config(config, cfg, num_attributes=1)   # the count shapes only the heads
        try:
            preprocess.Preprocess.from_config(config.input).check((cfg.image_size,) * 2)
        except ValueError as e:
            raise ConfigError(f"config.input.{e}") from None
    for pattern in config.frozen_patterns:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ConfigError(f"config.frozen_patterns: {pattern!r} is not a regex ({e})") \
                from None


def _check_sizes(c: ml_collections.ConfigDict, cfg) -> None:
    for field in ("image_size", "patch_size"):
        if c[field] != getattr(cfg, field):
            raise ConfigError(f"config.clip.{field}={c[field]}, but the backbone at {c.path} has "
                              f"{field} {getattr(cfg, field)}: set it to that (or leave "
                              "the config file's value for this backbone)")


def save_backbone(cfg, params, folder: str) -> None:
    """The backbone in its HF format (a model dir's clip/ folder)."""
    BACKBONE_FILES[towers.of(cfg).name][1](cfg, params, folder)


def load_backbone_folder(folder: str):
    """(cfg, params) of the HF checkpoint in `folder`, CLIP or SigLIP by its config.json."""
    try:
        with open(os.path.join(folder, hf_clip.CONFIG_FILE), encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None  # hf_clip.load names what is wrong with the folder
    if model_type in ("siglip", "siglip2"):
        return hf_siglip.load(folder)
    return hf_clip.load(folder)


def load_clip(c: ml_collections.ConfigDict, seed: int) -> tuple[clip.ClipConfig, dict]:
    """CLIP from a HuggingFace id/folder, an OpenAI file, or a seeded random init.

    `image_size` and `patch_size` shape a random CLIP; a loaded one brings its
    own, and the config must agree with them (frames are resized to them).
    """
    if c.source in ("hf", "openai"):
        cfg, params = (hf_clip.load if c.source == "hf" else openai_clip.load)(c.path)
        _check_sizes(c, cfg)
        return cfg, params
    if c.source == "random":
        return _random_backbone(c, clip, CLIP_PRESETS, seed)
    raise ConfigError(f"config.clip.source={c.source!r}; expected 'hf', 'openai' or 'random'")


def model_config(config: ml_collections.ConfigDict, clip_cfg: BackboneConfig,
                 num_attributes: int) -> vtfpar.VTFPARConfig:
    try:
        return _model_config(config, clip_cfg, num_attributes)
    except ValueError as e:  # the model config's checks: a field that cannot work
        raise ConfigError(str(e)) from None


def _model_config(config: ml_collections.ConfigDict, clip_cfg: BackboneConfig,
                  num_attributes: int) -> vtfpar.VTFPARConfig:
    m = config.model
    return vtfpar.VTFPARConfig(
        clip=clip_cfg, num_attributes=num_attributes, frames=m.frames,
        spatial_map=parse_interaction_map(m.spatial_map),
        temporal_map=parse_interaction_map(m.temporal_map),
        spatial_aggregation=m.spatial_aggregation, temporal_aggregation=m.temporal_aggregation,
        dim=m.dim, heads=m.heads or None, side_patch_size=m.side_patch_size,
        use_spatial=m.use_spatial, use_temporal=m.use_temporal,
        drop_path_rate=m.drop_path_rate, dtype=m.dtype, clip_dtype=m.clip_dtype,
        remat=_remat_policy(m.get("remat", "none")), attention=m.get("attention", "auto"))


def _remat_policy(value) -> str:
    """model.remat as a policy name. Runs made before the policies saved a bool
    (or no field at all: no remat), which mean 'blocks' and 'none'."""
    if isinstance(value, bool):
        return "blocks" if value else "none"
    return value


def attribute_tokens(config: ml_collections.ConfigDict, attribute_set: attributes.AttributeSet,
                     clip_folder: str | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """(phrases, (A, context) ids) in the layout of the backbone: OpenAI's (A, 77) for
    CLIP, SigLIP's padded (A, 64), with the tokenizer that fits its checkpoint."""
    phrases = attribute_set.phrases(config.text.phrases, config.text.template)
    source = config.clip.source
    if backbone_name(config) == "siglip":
        return phrases, _siglip_tokens(config, phrases, clip_folder)
    if source == "random":
        return phrases, text.byte_tokens(phrases)
    if source == "hf" and clip_folder is None:
        # A hub id resolves to its cached snapshot, which carries vocab.json/merges.txt.
        clip_folder = hf_clip.resolve_folder(config.clip.path)
    try:
        if clip_folder and os.path.exists(os.path.join(clip_folder, "vocab.json")):
            tok = clip_tokenizer.from_pretrained(clip_folder)
        else:
            tok = clip_tokenizer.default_tokenizer(config.text.bpe_path or None)
        return phrases, clip_tokenizer.tokenize(tok, phrases)
    except (FileNotFoundError, ValueError) as e:  # no BPE file, a bad one, a phrase too long
        raise ConfigError(f"config.text: {e}") from None


def _siglip_tokens(config: ml_collections.ConfigDict, phrases, folder: str | None) -> np.ndarray:
    if config.clip.source == "random":
        return siglip_tokenizer.byte_tokens(phrases)
    try:
        folder = folder or hf_clip.resolve_folder(config.clip.path, hf_siglip.HUB_PATTERNS)
        return siglip_tokenizer.tokenize(siglip_tokenizer.from_pretrained(folder), phrases)
    except (OSError, ValueError) as e:  # no tokenizer files, a phrase too long
        raise ConfigError(f"config.text with the SigLIP at {config.clip.path}: {e}") from None
