"""CLIP, as published: its presets, its weight files (a HuggingFace folder or hub id, an OpenAI
file) and its tokens (OpenAI's BPE, or one id per byte for random weights)."""

from __future__ import annotations

from vtfpar_jax.backbones import clip_tokenizer, hf_clip, openai_clip, registry
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import clip as clip_towers
from vtfpar_jax.models import towers


def _tokens(config, phrases):
    """OpenAI's (A, 77) layout, with the tokenizer that fits the checkpoint
    (`clip_tokenizer.for_checkpoint`)."""
    # A hub id resolves to its cached snapshot, which carries vocab.json/merges.txt.
    folder = hf_clip.resolve_folder(config.backbone.path) if config.backbone.source == "hf" \
        else None
    try:
        tok = clip_tokenizer.for_checkpoint(folder, config.text.bpe_path or None)
        return clip_tokenizer.tokenize(tok, phrases)
    except (FileNotFoundError, ValueError) as e:  # no BPE file, a bad one, a phrase too long
        raise ConfigError(f"config.text: {e}") from None


BACKBONE = registry.register(registry.Backbone(
    towers=towers.BACKBONES["clip"],
    presets={"tiny": clip_towers.tiny,
             "vit_b16": lambda **_: clip_towers.vit_b16(),
             "vit_l14": lambda **_: clip_towers.vit_l14()},
    shapes={"tiny": "tiny", "vit_b16": "vit_b16", "vit_l14": "vit_l14"},
    loaders={"hf": hf_clip.load, "openai": openai_clip.load},
    read_config=hf_clip.CLIP.config_at,
    save=hf_clip.save,
    model_types=("clip",),
    byte_tokens=clip_tokenizer.byte_tokens,
    tokens=_tokens,
))
