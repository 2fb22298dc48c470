"""From a config to the pieces a run needs: the backbone, model config, attribute tokens.

Shared by training, evaluation and prediction so that a work dir always
rebuilds the same model. `config.backbone.name` names an entry of the backbone
registry (vtfpar_jax.backbones.registry: CLIP, as published, or SigLIP); the rest of
`config.backbone` says where its weights come from, whichever it is (a source its
loaders read, e.g. 'hf' with a hub id or folder, or 'random' with a preset).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vtfpar_jax import attributes
from vtfpar_jax.backbones import registry
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import rng, vtfpar
from vtfpar_jax.models.side_nets import parse_interaction_map

BackboneConfig = Any   # the config type of a registered backbone (models/towers.py)


def backbone(config: ml_collections.ConfigDict) -> registry.Backbone:
    """The registry's entry for config.backbone.name; runs saved before it existed were
    CLIP."""
    return registry.get(config.backbone.get("name", "clip"))


def load_backbone(config: ml_collections.ConfigDict, seed: int):
    """(backbone cfg, params) of config.backbone.name from config.backbone's source: a file or
    hub id its loaders read (CLIP: 'hf', 'openai'; SigLIP: 'hf'), or seeded random weights of
    preset config.backbone.preset ('random'). A loaded backbone brings its own image and patch
    size, and the config must agree with them (frames are resized to them)."""
    entry, c = backbone(config), config.backbone
    if c.source == "random":
        cfg = _random_config(config)
        return cfg, entry.towers.init_params(cfg, rng.stream(seed, "backbone_init"))
    cfg, params = _loader(config)(c.path)
    _check_sizes(c, cfg)
    return cfg, params


def _loader(config: ml_collections.ConfigDict):
    entry, source = backbone(config), config.backbone.source
    if source not in entry.loaders:
        raise ConfigError(f"config.backbone.source={source!r} with backbone {entry.name!r}; "
                          f"expected one of {sorted([*entry.loaders, 'random'])}")
    return entry.loaders[source]


def _random_config(config: ml_collections.ConfigDict):
    """The cfg of preset config.backbone.preset; the tiny preset takes the config's image and
    patch size."""
    entry, c = backbone(config), config.backbone
    if c.preset not in entry.presets:
        raise ConfigError(f"config.backbone.preset={c.preset!r} with backbone {entry.name!r}; "
                          f"expected one of {sorted(entry.presets)}")
    return entry.presets[c.preset](image_size=c.image_size, patch_size=c.patch_size)


def backbone_config(config: ml_collections.ConfigDict) -> BackboneConfig | None:
    """The backbone's config without its weights: a random preset's, or a HF folder's
    config.json (checked against the config's sizes). None for a source whose shape only its
    weights tell (an OpenAI file); the run reads them when it starts."""
    c = config.backbone
    if c.source == "random":
        return _random_config(config)
    _loader(config)   # a source the backbone has
    if c.source != "hf":
        return None
    cfg = backbone(config).read_config(c.path)
    _check_sizes(c, cfg)
    return cfg


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuse a config that a run would refuse when building its model, without building
    anything: the backbone's source and shape, every model field (maps, aggregations,
    widths, dtypes...), the input transforms and the frozen_patterns regexes."""
    import re

    from vtfpar_jax.models import preprocess
    cfg = backbone_config(config)
    if cfg is not None:
        # The attribute count and the groups shape only the heads.
        model_config(config, cfg, num_attributes=1, group_columns=((0,),))
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
            raise ConfigError(f"config.backbone.{field}={c[field]}, but the backbone at {c.path} "
                              f"has {field} {getattr(cfg, field)}: set it to that (or leave "
                              "the config file's value for this backbone)")


def save_backbone(cfg, params, folder: str) -> None:
    """The backbone in the format its 'hf' loader reads (a model dir's backbone/ folder)."""
    registry.of(cfg).save(cfg, params, folder)


def load_backbone_folder(folder: str):
    """(cfg, params) of the checkpoint saved in `folder`, of the backbone its config.json
    names."""
    return registry.of_folder(folder).loaders["hf"](folder)


def model_config(config: ml_collections.ConfigDict, backbone_cfg: BackboneConfig,
                 num_attributes: int,
                 group_columns: tuple[tuple[int, ...], ...] = ()) -> vtfpar.VTFPARConfig:
    """The model of `config`; `group_columns` (AttributeSet.head_groups) shape the group
    head and are dropped for the attribute head."""
    m = config.model
    # Runs saved before model.head existed had the attribute head.
    head = m.get("head", "attribute")
    try:
        return vtfpar.VTFPARConfig(
            backbone=backbone_cfg, num_attributes=num_attributes, frames=m.frames,
            spatial_map=parse_interaction_map(m.spatial_map),
            temporal_map=parse_interaction_map(m.temporal_map),
            spatial_aggregation=m.spatial_aggregation,
            temporal_aggregation=m.temporal_aggregation,
            dim=m.dim, heads=m.heads or None, side_patch_size=m.side_patch_size,
            use_spatial=m.use_spatial, use_temporal=m.use_temporal,
            drop_path_rate=m.drop_path_rate, dtype=m.dtype, backbone_dtype=m.backbone_dtype,
            remat=m.get("remat", "none"), attention=m.get("attention", "auto"),
            head=head, group_columns=tuple(map(tuple, group_columns)) if head == "group" else ())
    except ValueError as e:  # the model config's checks: a field that cannot work
        raise ConfigError(str(e)) from None


def attribute_tokens(config: ml_collections.ConfigDict, attribute_set: attributes.AttributeSet
                     ) -> tuple[tuple[str, ...], np.ndarray]:
    """(phrases, (A, context) ids) in the layout of the backbone (OpenAI's (A, 77) for CLIP,
    SigLIP's padded (A, 64)), with the tokenizer that fits the checkpoint config.backbone
    names; random weights have no vocabulary, so one id per byte."""
    phrases = attribute_set.phrases(config.text.phrases, config.text.template)
    entry = backbone(config)
    if config.backbone.source == "random":
        return phrases, entry.byte_tokens(phrases)
    return phrases, entry.tokens(config, phrases)
