"""Import of checkpoints written by the published VTFPAR++ `train.py`.

    state = read_checkpoint("ckpt.pth")            # {'model/<key>': array}
    state.update(openai_clip_state("ViT-B-16.pt")) # {'clip/<key>': array}
    config, variables = convert(state, frames=6, spatial_interact_map="default", ...)

`variables` = {'params', 'batch_stats', 'clip'}. Options take the published
command-line names and defaults. Tensors the published model creates but never
runs (docs/published-model.md §7: the ImageNet ViT, `w_temporal`, `visual_embed`,
`spa_embed`, `tem_embed`, the temporal `projection_layers`, both side nets'
unused blocks, the temporal net's patch embedding) are recognised and dropped;
any other unknown or missing key is an error naming it.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax.convert import openai_clip
from vtfpar_jax.convert.weights import SourceTensors, WeightImportError, conv_kernel, transpose
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import vtfpar
from vtfpar_jax.models.side_nets import SIDE_DEPTH, parse_interaction_map

PUBLISHED_DEFAULTS = dict(
    frames=6, spatial_interact_map="default", temporal_interact_map="default",
    spatial_feat_aggregation="mean_pooling", temporal_feat_aggregation="mean_pooling",
    mmformer_dim=240, spatial_dim=240, temporal_dim=240,
    without_spatial=False, without_temporal=False)

_AGGREGATIONS = {"mean_pooling": "mean", "MLP": "mlp", "LSTM": "lstm", "GRU": "gru"}

_TIMM_BLOCK = (  # timm Block names -> ours
    ("norm1.weight", "ln_1/scale", None), ("norm1.bias", "ln_1/bias", None),
    ("attn.qkv.weight", "attn/qkv/kernel", transpose), ("attn.qkv.bias", "attn/qkv/bias", None),
    ("attn.proj.weight", "attn/out/kernel", transpose), ("attn.proj.bias", "attn/out/bias", None),
    ("norm2.weight", "ln_2/scale", None), ("norm2.bias", "ln_2/bias", None),
    ("mlp.fc1.weight", "fc1/kernel", transpose), ("mlp.fc1.bias", "fc1/bias", None),
    ("mlp.fc2.weight", "fc2/kernel", transpose), ("mlp.fc2.bias", "fc2/bias", None),
)

# Created by the published model, never used in its forward pass.
_UNUSED = re.compile(
    r"model/(w_temporal|visual_embed\..*|spa_embed\..*|tem_embed\..*"
    r"|crossframe_sidenet\.projection_layers\..*|crossframe_sidenet\.vit_model\.patch_embed\..*"
    r"|crossframe_sidenet\.temporal_fusion_layers\..*|spatial_sidenet\.temporal_fusion_layers\..*"
    r"|bn\.num_batches_tracked|vit\..*)$")


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`{'model/<key>': array}` from a published `{'epoch', 'model_state_dict'}` file.

    Read with `torch.load(weights_only=True)`: a pickle that would run code is refused.
    """
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightImportError(f"{path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightImportError(openai_clip.refusal_message(path, e)) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise WeightImportError(
            f"{path}: refused or unreadable ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "Checkpoints are read with torch.load(weights_only=True), which loads tensors only "
            "and refuses pickles that would run code.") from None
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise WeightImportError(f"{path}: expected {{'epoch', 'model_state_dict'}} or a state dict")
    return {"model/" + k.removeprefix("module."): v for k, v in state.items()}


def config_from_options(clip_cfg, num_attributes: int, **options) -> vtfpar.VTFPARConfig:
    """Our config from the published command-line options (unknown names are errors)."""
    unknown = set(options) - set(PUBLISHED_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; published options: "
                          f"{sorted(PUBLISHED_DEFAULTS)}")
    o = {**PUBLISHED_DEFAULTS, **options}
    dims = {o["mmformer_dim"], o["spatial_dim"], o["temporal_dim"]}
    if len(dims) != 1:
        raise ConfigError(f"mmformer_dim, spatial_dim and temporal_dim must be equal (the "
                          "published model adds the side tokens straight into the fusion "
                          f"block); got {dims}")
    aggs = []
    for name in ("spatial_feat_aggregation", "temporal_feat_aggregation"):
        if o[name] not in _AGGREGATIONS:
            raise ConfigError(f"{name}={o[name]!r}; expected one of {sorted(_AGGREGATIONS)}")
        aggs.append(_AGGREGATIONS[o[name]])
    return vtfpar.VTFPARConfig(
        clip=clip_cfg, num_attributes=num_attributes, frames=int(o["frames"]),
        spatial_map=parse_interaction_map(o["spatial_interact_map"]),
        temporal_map=parse_interaction_map(o["temporal_interact_map"]),
        spatial_aggregation=aggs[0], temporal_aggregation=aggs[1], dim=dims.pop(),
        use_spatial=not o["without_spatial"], use_temporal=not o["without_temporal"])


def _take_block(t: SourceTensors, src: str, dst: str):
    for s, d, fn in _TIMM_BLOCK:
        t.take(f"{src}.{s}", f"{dst}/{d}", fn)


def _take_embedding(t: SourceTensors, src: str, dst: str):
    t.take(f"{src}.cls_embed", f"{dst}/embedding/cls_embed")
    t.take(f"{src}.cls_pos_embed", f"{dst}/embedding/cls_pos_embed")
    t.take(f"{src}.vit_model.pos_embed", f"{dst}/embedding/pos_embed")


def _take_model(t: SourceTensors, cfg: vtfpar.VTFPARConfig):
    p = "params/"
    if cfg.use_spatial:
        src, dst = "model/spatial_sidenet", p + "spatial_side_net"
        _take_embedding(t, src, dst)
        t.take(f"{src}.vit_model.patch_embed.proj.weight", f"{dst}/patch_embed/kernel", conv_kernel)
        t.take(f"{src}.vit_model.patch_embed.proj.bias", f"{dst}/patch_embed/bias")
        for i in range(SIDE_DEPTH - 1):  # the last block is never run
            _take_block(t, f"{src}.vit_model.blocks.{i}", f"{dst}/blocks_{i}")
        for _, target in cfg.spatial_map:
            layer = f"{src}.fusion_layers.layer_{target}.input_proj"
            t.take(f"{layer}.0.weight", f"{dst}/fusion_{target}/norm/scale")
            t.take(f"{layer}.0.bias", f"{dst}/fusion_{target}/norm/bias")
            t.take(f"{layer}.1.weight", f"{dst}/fusion_{target}/proj/kernel", conv_kernel)
            t.take(f"{layer}.1.bias", f"{dst}/fusion_{target}/proj/bias")
        t.drop(lambda k: k.startswith(f"{src}.vit_model.blocks.{SIDE_DEPTH - 1}."))
    if cfg.use_temporal:
        src, dst = "model/crossframe_sidenet", p + "temporal_side_net"
        _take_embedding(t, src, dst)
        for f in range(cfg.frames):  # block f runs on frame f; later blocks never run
            _take_block(t, f"{src}.vit_model.blocks.{f}", f"{dst}/blocks_{f}")
        t.drop(lambda k: (m := re.match(re.escape(src) + r"\.vit_model\.blocks\.(\d+)\.", k))
               is not None and int(m.group(1)) >= cfg.frames)
        t.take(f"{src}.frist_linear.weight", f"{dst}/first_linear/kernel", transpose)  # sic
        t.take(f"{src}.frist_linear.bias", f"{dst}/first_linear/bias")
        streams = range(len(cfg.temporal_map))
        layer = f"{src}.fusion_layers.layer_{{}}"
        for name, path, fn in (("ln.weight", "fusion_norm/scale", None),
                               ("ln.bias", "fusion_norm/bias", None),
                               ("input_proj.weight", "fusion_proj/kernel", conv_kernel),
                               ("input_proj.bias", "fusion_proj/bias", None)):
            keys = [layer.format(j) + "." + name for j in streams]
            arrays = [fn(t.get(k)) if fn else t.get(k) for k in keys]
            t.put(f"{dst}/{path}", np.stack(arrays), keys[0].replace("layer_0", "layer_*"))
    for side, use in (("spatial", cfg.use_spatial), ("temporal", cfg.use_temporal)):
        if use and getattr(cfg, f"{side}_aggregation") == "mlp":
            t.take(f"model/{side}_feat_aggregation.weight", f"{p}{side}_aggregation/kernel",
                   lambda w: w.reshape(-1, 1))
            t.take(f"model/{side}_feat_aggregation.bias", f"{p}{side}_aggregation/bias")
    t.take("model/word_embed.weight", p + "word_embed/kernel", transpose)
    t.take("model/word_embed.bias", p + "word_embed/bias")
    _take_block(t, f"model/blocks.{SIDE_DEPTH - 1}", p + "fusion_block")
    t.take("model/norm.weight", p + "norm/scale")
    t.take("model/norm.bias", p + "norm/bias")
    heads = [f"model/weight_layer.{i}" for i in range(cfg.num_attributes)]
    t.put(p + "heads_kernel", np.concatenate([t.get(h + ".weight") for h in heads]),
          "model/weight_layer.*.weight")
    t.put(p + "heads_bias", np.concatenate([t.get(h + ".bias") for h in heads]),
          "model/weight_layer.*.bias")
    t.take("model/bn.weight", p + "bn/scale")
    t.take("model/bn.bias", p + "bn/bias")
    t.take("model/bn.running_mean", "batch_stats/bn/mean")
    t.take("model/bn.running_var", "batch_stats/bn/var")


def convert(state_dict: Mapping[str, Any], clip: tuple | None = None,
            source: str = "state dict", **options) -> tuple[vtfpar.VTFPARConfig, dict]:
    """(config, variables) from `model/<published key>` and `clip/<OpenAI CLIP key>` tensors.

    `clip=(ClipConfig, params)` supplies CLIP instead (e.g. from `hf_clip.load`)
    when the state dict has no `clip/` tensors. The frozen visual tower copy under
    `model/clip_visual_extractor.*` is accepted and must equal the CLIP's.
    """
    t = SourceTensors(state_dict, source)
    if "model/bn.weight" not in t:
        raise WeightImportError(f"{source}: missing key 'model/bn.weight' (not a published "
                                "VTFPAR++ checkpoint?)")
    num_attributes = int(t.tensors["model/bn.weight"].shape[0])
    clip_keys = [k for k in t.keys() if k.startswith("clip/")]
    if clip_keys:
        clip_cfg = openai_clip.config_from_state_dict(t, prefix="clip/")
        openai_clip.take_clip(t, clip_cfg, prefix="clip/")
        clip_params = None
    elif clip is not None:
        clip_cfg, clip_params = clip
    else:
        raise WeightImportError(f"{source}: no 'clip/' tensors and no clip=(cfg, params): the "
                                "published checkpoint lacks the CLIP text tower; pass the OpenAI "
                                "or HuggingFace CLIP it was trained with")
    _check_visual_copy(t, clip_cfg, clip_params)
    cfg = config_from_options(clip_cfg, num_attributes, **options)
    _take_model(t, cfg)
    t.drop(lambda k: _UNUSED.match(k) is not None)
    t.check_consumed()
    expected = jax.eval_shape(lambda: vtfpar.init(cfg, jax.random.key(0)))
    variables = {name: t.build_tree(tree, prefix=(name,)) for name, tree in expected.items()}
    if clip_params is None:
        clip_params = t.build_tree(openai_clip.expected_shapes(clip_cfg), prefix=("clip",))
    variables["clip"] = clip_params
    return cfg, jax.tree.map(jnp.asarray, variables)


def _check_visual_copy(t: SourceTensors, clip_cfg, clip_params):
    """The published checkpoint repeats the frozen visual tower: it must be the given CLIP's.

    Against `clip/` tensors every copied tensor is compared; against CLIP params
    from elsewhere, the embeddings (enough to tell two CLIPs apart).
    """
    copy = "model/clip_visual_extractor."
    keys = [k for k in t.keys() if k.startswith(copy)]
    if clip_params is None:
        reference = {k: t.tensors["clip/visual." + k[len(copy):].replace(
            "resblocks.", "transformer.resblocks.")] for k in keys}
    else:
        v = clip_params["vision"]
        conv = np.asarray(v["patch_embed"]["kernel"]).transpose(3, 2, 0, 1)
        reference = {copy + "conv1.weight": conv,
                     copy + "class_embedding": v["class_embedding"],
                     copy + "positional_embedding": v["position_embedding"]}
    for k in keys:
        found = t.get(k)
        if k in reference and not np.allclose(found, np.asarray(reference[k]), atol=1e-6):
            raise WeightImportError(f"{t.source}: {k!r} differs from the CLIP given for the text "
                                    "tower: the checkpoint was trained with another CLIP")
