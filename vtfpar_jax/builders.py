"""From a config to the pieces a run needs: CLIP, model config, attribute tokens.

Shared by training, evaluation and prediction so that a work dir always
rebuilds the same model.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from vtfpar_jax import attributes, text, tokenizer
from vtfpar_jax.convert import hf_clip, openai_clip
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import clip, vtfpar
from vtfpar_jax.models.side_nets import parse_interaction_map

CLIP_PRESETS = {"tiny": clip.tiny, "vit_b16": clip.vit_b16, "vit_l14": clip.vit_l14}


def load_clip(c: ml_collections.ConfigDict, seed: int) -> tuple[clip.ClipConfig, dict]:
    """CLIP from a HuggingFace id/folder, an OpenAI file, or a seeded random init.

    `image_size` and `patch_size` shape a random CLIP; a loaded one brings its
    own, and the config must agree with them (frames are resized to them).
    """
    if c.source in ("hf", "openai"):
        cfg, params = (hf_clip.load if c.source == "hf" else openai_clip.load)(c.path)
        for field in ("image_size", "patch_size"):
            if c[field] != getattr(cfg, field):
                raise ConfigError(f"config.clip.{field}={c[field]}, but the CLIP at {c.path} has "
                                  f"{field} {getattr(cfg, field)}: set it to that (or leave "
                                  "the config file's value for this CLIP)")
        return cfg, params
    if c.source == "random":
        if c.preset not in CLIP_PRESETS:
            raise ConfigError(f"config.clip.preset={c.preset!r}; expected one of "
                              f"{sorted(CLIP_PRESETS)}")
        cfg = CLIP_PRESETS[c.preset]()
        if c.preset == "tiny":
            cfg = clip.tiny(image_size=c.image_size, patch_size=c.patch_size)
        return cfg, clip.init_params(cfg, jax.random.PRNGKey(seed))
    raise ConfigError(f"config.clip.source={c.source!r}; expected 'hf', 'openai' or 'random'")


def model_config(config: ml_collections.ConfigDict, clip_cfg: clip.ClipConfig,
                 num_attributes: int) -> vtfpar.VTFPARConfig:
    try:
        return _model_config(config, clip_cfg, num_attributes)
    except ValueError as e:  # the model config's checks: a field that cannot work
        raise ConfigError(str(e)) from None


def _model_config(config: ml_collections.ConfigDict, clip_cfg: clip.ClipConfig,
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
    """(phrases, (A, 77) ids) in OpenAI's layout, with the tokenizer that fits the CLIP."""
    phrases = attribute_set.phrases(config.text.phrases, config.text.template)
    source = config.clip.source
    if source == "random":
        return phrases, text.byte_tokens(phrases)
    if source == "hf" and clip_folder is None:
        # A hub id resolves to its cached snapshot, which carries vocab.json/merges.txt.
        clip_folder = hf_clip.resolve_folder(config.clip.path)
    try:
        if clip_folder and os.path.exists(os.path.join(clip_folder, "vocab.json")):
            tok = tokenizer.from_pretrained(clip_folder)
        else:
            tok = tokenizer.default_tokenizer(config.text.bpe_path or None)
        return phrases, tokenizer.tokenize(tok, phrases)
    except (FileNotFoundError, ValueError) as e:  # no BPE file, a bad one, a phrase too long
        raise ConfigError(f"config.text: {e}") from None
