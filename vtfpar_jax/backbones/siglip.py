"""SigLIP in place of CLIP: its presets, its weight files (a HuggingFace folder or hub id) and
its tokens (its SentencePiece tokenizer, padded to 64, or one id per byte for random
weights)."""

from __future__ import annotations

from vtfpar_jax.backbones import hf_clip, hf_siglip, registry, siglip_tokenizer
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import siglip as siglip_towers
from vtfpar_jax.models import towers


def _tokens(config, phrases):
    try:
        folder = hf_clip.resolve_folder(config.backbone.path, hf_siglip.HUB_PATTERNS)
        return siglip_tokenizer.tokenize(siglip_tokenizer.from_pretrained(folder), phrases)
    except (OSError, ValueError) as e:  # no tokenizer files, a phrase too long
        raise ConfigError(f"config.text with the SigLIP at {config.backbone.path}: {e}") from None


BACKBONE = registry.register(registry.Backbone(
    towers=towers.BACKBONES["siglip"],
    presets={"tiny": siglip_towers.tiny,
             "base16": lambda **_: siglip_towers.base16(),
             "so400m14": lambda **_: siglip_towers.so400m14()},
    shapes={"tiny": "tiny", "vit_b16": "base16", "so400m14": "so400m14"},
    loaders={"hf": hf_siglip.load},
    read_config=hf_siglip.SIGLIP.config_at,
    save=hf_siglip.save,
    model_types=("siglip", "siglip2"),
    byte_tokens=siglip_tokenizer.byte_tokens,
    tokens=_tokens,
))
