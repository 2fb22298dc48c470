"""HuggingFace SigLIP checkpoints (`SiglipModel.save_pretrained` folders or hub ids) <-> our params.

    cfg, params = hf_siglip.load("google/siglip-base-patch16-224")   # cached hub repo
    cfg, params = hf_siglip.load("/data/siglip-base-patch16-224")    # local folder
    hf_siglip.save(cfg, params, "/tmp/siglip")                       # and back

The folder layout, the safetensors-only reading and the checked name table are
those of `hf_clip` (whose block table and q/k/v packing this module shares:
transformers' SigLIP encoder layers carry CLIP's names). SigLIP's own pieces
are the patch embedding's bias, the vision attention-pooling head (a torch
`nn.MultiheadAttention`, whose in-projection is already packed [q | k | v]),
the text head and `logit_bias`.

Fixed-resolution SigLIP 2 checkpoints (e.g. google/siglip2-base-patch16-224)
are SiglipModel checkpoints and load here; the NaFlex ones (model_type
'siglip2', variable resolution and aspect ratio) are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from vtfpar_jax.backbones.hf_clip import (
    BLOCK_TABLE,
    CONV,
    COPY,
    LINEAR,
    Transform,
    hf_tensors,
    params_from_tables,
    read_config_file,
    read_tensors,
    resolve_folder,
    write_folder,
)
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.models import siglip
from vtfpar_jax.models.layers import ACTIVATIONS

# What a hub snapshot needs: weights, config and the SentencePiece tokenizer beside them.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "tokenizer*"]

_VISION_TABLE = (  # HF names of the vision tower outside its encoder layers -> ours
    ("embeddings.patch_embedding.weight", "patch_embed/kernel", CONV),
    ("embeddings.patch_embedding.bias", "patch_embed/bias", COPY),
    ("embeddings.position_embedding.weight", "position_embedding", COPY),
    ("post_layernorm.weight", "post_layernorm/scale", COPY),
    ("post_layernorm.bias", "post_layernorm/bias", COPY),
)
_HEAD_TABLE = (  # the attention-pooling head (vision_use_head)
    ("head.probe", "head/probe", COPY),
    ("head.attention.in_proj_weight", "head/qkv_kernel", LINEAR),
    ("head.attention.in_proj_bias", "head/qkv_bias", COPY),
    ("head.attention.out_proj.weight", "head/out/kernel", LINEAR),
    ("head.attention.out_proj.bias", "head/out/bias", COPY),
    ("head.layernorm.weight", "head/layernorm/scale", COPY),
    ("head.layernorm.bias", "head/layernorm/bias", COPY),
    ("head.mlp.fc1.weight", "head/fc1/kernel", LINEAR),
    ("head.mlp.fc1.bias", "head/fc1/bias", COPY),
    ("head.mlp.fc2.weight", "head/fc2/kernel", LINEAR),
    ("head.mlp.fc2.bias", "head/fc2/bias", COPY),
)
_TEXT_TABLE = (
    ("embeddings.token_embedding.weight", "token_embedding/embedding", COPY),
    ("embeddings.position_embedding.weight", "position_embedding", COPY),
    ("final_layer_norm.weight", "final_layernorm/scale", COPY),
    ("final_layer_norm.bias", "final_layernorm/bias", COPY),
    ("head.weight", "head/kernel", LINEAR),
    ("head.bias", "head/bias", COPY),
)
_TOWERS = (("vision_model", "vision"), ("text_model", "text"))


def _name_table(cfg: siglip.SiglipConfig) -> Iterator[tuple[str, str, tuple[Transform,
                                                                            Transform]]]:
    """Every one-to-one (HF key, our path, layouts) of a SigLIP of this shape."""
    yield "logit_scale", "logit_scale", COPY
    yield "logit_bias", "logit_bias", COPY
    vision = _VISION_TABLE + (_HEAD_TABLE if cfg.vision_use_head else ())
    for tower_table, (hf_tower, tower) in zip((vision, _TEXT_TABLE), _TOWERS, strict=True):
        for src, dst, layouts in tower_table:
            yield f"{hf_tower}.{src}", f"{tower}/{dst}", layouts
        for i in range(getattr(cfg, tower).layers):
            for src, dst, layouts in BLOCK_TABLE:
                yield f"{hf_tower}.encoder.layers.{i}.{src}", f"{tower}/layers_{i}/{dst}", layouts


def _qkv_table(cfg: siglip.SiglipConfig) -> Iterator[tuple[str, str, int]]:
    """(HF layer prefix, our attention path, width) of every encoder attention layer."""
    for hf_tower, tower in _TOWERS:
        c = getattr(cfg, tower)
        for i in range(c.layers):
            yield f"{hf_tower}.encoder.layers.{i}", f"{tower}/layers_{i}/attn/qkv", c.width


# ---------------------------------------------------------------------------- reading


def read_config(folder: str) -> siglip.SiglipConfig:
    """Our `SiglipConfig` from a checkpoint folder's config.json (defaults filled by
    transformers)."""
    from transformers import SiglipConfig

    file, raw = read_config_file(folder)
    found = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
    if found == "siglip2":
        raise WeightImportError(
            f"{file}: a SigLIP 2 NaFlex checkpoint (model_type 'siglip2': variable resolution "
            "and aspect ratio, patches embedded by a Linear layer). Only fixed-resolution "
            "SigLIP / SigLIP 2 checkpoints (model_type 'siglip', e.g. "
            "google/siglip2-base-patch16-224) are supported")
    if found != "siglip":
        raise WeightImportError(f"{file}: model_type is {found!r}, expected 'siglip' (a "
                                "SiglipModel checkpoint with both towers)")
    try:
        cfg = siglip.SiglipConfig.from_hf(SiglipConfig.from_dict(raw))
    except (KeyError, TypeError, ValueError) as e:
        raise WeightImportError(f"{file}: not a usable SigLIP config ({type(e).__name__}: {e})") \
            from None
    for tower in (cfg.vision, cfg.text):
        if tower.activation not in ACTIVATIONS:
            raise WeightImportError(f"{file}: hidden_act {tower.activation!r} is not supported "
                                    f"(known: gelu_pytorch_tanh, gelu, quick_gelu)")
    return cfg


def expected_shapes(cfg: siglip.SiglipConfig):
    return jax.eval_shape(lambda: siglip.init_params(cfg, jax.random.key(0)))


def params_from_tensors(state: Mapping[str, Any], cfg: siglip.SiglipConfig,
                        source: str = "state dict") -> dict:
    """Our SigLIP params from HF-named tensors (numpy arrays or torch tensors) of shape `cfg`."""
    return params_from_tables(state, source, _name_table(cfg), _qkv_table(cfg),
                              expected_shapes(cfg), "siglip")


def load(path: str | os.PathLike) -> tuple[siglip.SiglipConfig, dict]:
    """(cfg, params) from a HF SigLIP checkpoint folder, or a hub id (cache, or hub if
    reachable)."""
    folder = resolve_folder(path, HUB_PATTERNS)
    cfg = read_config(folder)
    state, source = read_tensors(folder)
    return cfg, params_from_tensors(state, cfg, source)


# ---------------------------------------------------------------------------- writing


def tensors_from_params(cfg: siglip.SiglipConfig,
                        params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """HF-named float32 tensors from our params (the inverse of `params_from_tensors`)."""
    return hf_tensors(params, _name_table(cfg), _qkv_table(cfg))


def save(cfg: siglip.SiglipConfig, params: Mapping[str, Any], folder: str | os.PathLike) -> None:
    """Write config.json + model.safetensors in HF's names (loadable by `SiglipModel`, `load`)."""
    write_folder(cfg.to_hf(), tensors_from_params(cfg, params), folder)
