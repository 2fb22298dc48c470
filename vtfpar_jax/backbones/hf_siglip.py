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

from vtfpar_jax.backbones.hf_clip import Model
from vtfpar_jax.backbones.weights import CONV, COPY, LINEAR, linear, norm
from vtfpar_jax.models import siglip

# What a hub snapshot needs: weights, config and the SentencePiece tokenizer beside them.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "tokenizer*"]

_VISION_TABLE = (  # HF names of the vision tower outside its encoder layers -> ours
    *linear("embeddings.patch_embedding", "patch_embed", CONV),
    ("embeddings.position_embedding.weight", "position_embedding", COPY),
    *norm("post_layernorm", "post_layernorm"),
)
_HEAD_TABLE = (  # the attention-pooling head (vision_use_head)
    ("head.probe", "head/probe", COPY),
    ("head.attention.in_proj_weight", "head/qkv_kernel", LINEAR),
    ("head.attention.in_proj_bias", "head/qkv_bias", COPY),
    *linear("head.attention.out_proj", "head/out"),
    *norm("head.layernorm", "head/layernorm"),
    *linear("head.mlp.fc1", "head/fc1"),
    *linear("head.mlp.fc2", "head/fc2"),
)
_TEXT_TABLE = (
    ("embeddings.token_embedding.weight", "token_embedding/embedding", COPY),
    ("embeddings.position_embedding.weight", "position_embedding", COPY),
    *norm("final_layer_norm", "final_layernorm"),
    *linear("head", "head"),
)


def _outer_table(cfg: siglip.SiglipConfig):
    """Every one-to-one (HF key, our path, layouts) outside the encoder layers."""
    yield "logit_scale", "logit_scale", COPY
    yield "logit_bias", "logit_bias", COPY
    vision = _VISION_TABLE + (_HEAD_TABLE if cfg.vision_use_head else ())
    for tower_table, hf_tower, tower in ((vision, "vision_model", "vision"),
                                         (_TEXT_TABLE, "text_model", "text")):
        for src, dst, layouts in tower_table:
            yield f"{hf_tower}.{src}", f"{tower}/{dst}", layouts


SIGLIP = Model(
    "siglip", "SigLIP", "SiglipModel", "SiglipConfig", siglip.SiglipConfig, siglip.init_params,
    _outer_table, "gelu_pytorch_tanh, gelu, quick_gelu", HUB_PATTERNS,
    refused={"siglip2": (
        "a SigLIP 2 NaFlex checkpoint (model_type 'siglip2': variable resolution "
        "and aspect ratio, patches embedded by a Linear layer). Only fixed-resolution "
        "SigLIP / SigLIP 2 checkpoints (model_type 'siglip', e.g. "
        "google/siglip2-base-patch16-224) are supported")})
load = SIGLIP.load
save = SIGLIP.save
