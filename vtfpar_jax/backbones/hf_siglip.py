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
from vtfpar_jax.backbones.weights import CONV, COPY, LINEAR
from vtfpar_jax.models import siglip

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
