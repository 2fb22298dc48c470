"""Import of checkpoints written by the published VTFPAR++ `train.py`.

    state = read_checkpoint("ckpt.pth")            # {'model/<key>': array}
    state.update(openai_clip_state("ViT-B-16.pt")) # {'clip/<key>': array}
    config, variables = convert(state, frames=6, spatial_interact_map="default", ...)

`variables` = {'params', 'batch_stats', 'backbone'}. Options take the published
command-line names and defaults. Tensors the published model creates but never
runs (docs/published-model.md §7: the ImageNet ViT, `w_temporal`, `visual_embed`,
`spa_embed`, `tem_embed`, the temporal `projection_layers`, both side nets'
unused blocks, the temporal net's patch embedding) are recognised and dropped;
any other unknown or missing key is an error naming it.

`name_table` and `grouped_table` pair every published key with our path and
both layout changes; `convert.to_openpar` walks them backwards to export.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax import attributes
from vtfpar_jax.backbones import openai_clip, weights
from vtfpar_jax.backbones.weights import (
    CONV,
    COPY,
    Layout,
    SourceTensors,
    WeightImportError,
    conv_kernel,
    linear,
    norm,
)
from vtfpar_jax.errors import ConfigError, reason
from vtfpar_jax.models import group_head, vtfpar
from vtfpar_jax.models.side_nets import SIDE_DEPTH, parse_interaction_map

PUBLISHED_DEFAULTS = dict(
    frames=6, spatial_interact_map="default", temporal_interact_map="default",
    spatial_feat_aggregation="mean_pooling", temporal_feat_aggregation="mean_pooling",
    mmformer_dim=240, spatial_dim=240, temporal_dim=240,
    without_spatial=False, without_temporal=False)

_AGGREGATIONS = {"mean_pooling": "mean", "MLP": "mlp", "LSTM": "lstm", "GRU": "gru"}

# timm's Block: its names of our block's modules (weights.block_table).
_TIMM_BLOCK = ("norm1.", "attn.qkv.", "attn.proj.", "norm2.", "mlp.fc1.", "mlp.fc2.")
# 1x1 convolutions the published fusion layers use as Linear layers.
CONV2D_1X1: Layout = (conv_kernel, lambda k: np.ascontiguousarray(k.T[:, :, None, None]))
CONV1D_1: Layout = (conv_kernel, lambda k: np.ascontiguousarray(k.T[:, :, None]))
# Conv1d(F -> 1, kernel 1) over frames or streams: weight (1, F, 1) <-> our (F, 1).
FRAME_WEIGHTS: Layout = (lambda w: w.reshape(-1, 1), lambda k: k.reshape(1, -1, 1))

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
    if os.path.getsize(path) == 0:
        raise WeightImportError(f"{path}: an empty file (0 bytes), not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightImportError(openai_clip.refusal_message(path, e)) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise WeightImportError(
            f"{path}: refused or unreadable ({reason(e)}). "
            "Checkpoints are read with torch.load(weights_only=True), which loads tensors only "
            "and refuses pickles that would run code.") from None
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise WeightImportError(f"{path}: expected {{'epoch', 'model_state_dict'}} or a state dict")
    return {"model/" + k.removeprefix("module."): v for k, v in state.items()}


def config_from_options(backbone_cfg, num_attributes: int, head: str = "attribute",
                        group_columns: tuple = (), **options) -> vtfpar.VTFPARConfig:
    """Our config from the published command-line options (unknown names are errors) and the
    head (`head_layout`)."""
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
        backbone=backbone_cfg, num_attributes=num_attributes, frames=int(o["frames"]),
        spatial_map=parse_interaction_map(o["spatial_interact_map"]),
        temporal_map=parse_interaction_map(o["temporal_interact_map"]),
        spatial_aggregation=aggs[0], temporal_aggregation=aggs[1], dim=dims.pop(),
        use_spatial=not o["without_spatial"], use_temporal=not o["without_temporal"],
        head=head, group_columns=tuple(map(tuple, group_columns)))


def block_table(src: str, dst: str) -> Iterator[tuple[str, str, Layout]]:
    return weights.block_table(src, dst, _TIMM_BLOCK)


def _embedding_table(src: str, dst: str) -> Iterator[tuple[str, str, Layout]]:
    yield f"{src}.cls_embed", f"{dst}/embedding/cls_embed", COPY
    yield f"{src}.cls_pos_embed", f"{dst}/embedding/cls_pos_embed", COPY
    yield f"{src}.vit_model.pos_embed", f"{dst}/embedding/pos_embed", COPY


def name_table(cfg: vtfpar.VTFPARConfig) -> Iterator[tuple[str, str, Layout]]:
    """Every one-to-one (published key, our path, layouts) of a model of this shape.

    Paths start with 'params/' or 'batch_stats/'. Tensors the published model
    keeps per stream or per attribute, and we keep stacked, are in `grouped_table`.
    """
    p = "params/"
    if cfg.use_spatial:
        src, dst = "model/spatial_sidenet", p + "spatial_side_net"
        yield from _embedding_table(src, dst)
        yield from linear(f"{src}.vit_model.patch_embed.proj", f"{dst}/patch_embed", CONV)
        for i in range(SIDE_DEPTH - 1):  # the last block is never run
            yield from block_table(f"{src}.vit_model.blocks.{i}", f"{dst}/blocks_{i}")
        for _, target in cfg.spatial_map:
            layer = f"{src}.fusion_layers.layer_{target}.input_proj"
            yield from norm(f"{layer}.0", f"{dst}/fusion_{target}/norm")
            yield from linear(f"{layer}.1", f"{dst}/fusion_{target}/proj", CONV2D_1X1)
    if cfg.use_temporal:
        src, dst = "model/crossframe_sidenet", p + "temporal_side_net"
        yield from _embedding_table(src, dst)
        for f in range(cfg.frames):  # block f runs on frame f; later blocks never run
            yield from block_table(f"{src}.vit_model.blocks.{f}", f"{dst}/blocks_{f}")
        yield from linear(f"{src}.frist_linear", f"{dst}/first_linear")  # sic: 'frist'
    for side, use in (("spatial", cfg.use_spatial), ("temporal", cfg.use_temporal)):
        if use and getattr(cfg, f"{side}_aggregation") == "mlp":
            yield from linear(f"model/{side}_feat_aggregation", f"{p}{side}_aggregation",
                              FRAME_WEIGHTS)
    yield from linear("model/word_embed", p + "word_embed")
    yield from block_table(f"model/blocks.{SIDE_DEPTH - 1}", p + "fusion_block")
    yield from norm("model/norm", p + "norm")
    if cfg.head == "group":  # one Linear(D -> classes) per group (base_block_marco.py)
        for g in range(len(cfg.group_columns)):
            yield from linear(f"model/weight_layer.{g}", f"{p}group_head_{g}")
    yield from norm("model/bn", p + "bn")
    yield "model/bn.running_mean", "batch_stats/bn/mean", COPY
    yield "model/bn.running_var", "batch_stats/bn/var", COPY


def grouped_table(cfg: vtfpar.VTFPARConfig) -> Iterator[tuple[str, int, str, Layout, str]]:
    """(published key pattern with '{}', count, our path, layouts, 'stack' | 'concatenate'):
    `count` published tensors joined along a first axis into one of ours."""
    p = "params/"
    if cfg.use_temporal:
        src, dst = "model/crossframe_sidenet.fusion_layers.layer_{}", p + "temporal_side_net"
        streams = len(cfg.temporal_map)
        yield f"{src}.ln.weight", streams, f"{dst}/fusion_norm/scale", COPY, "stack"
        yield f"{src}.ln.bias", streams, f"{dst}/fusion_norm/bias", COPY, "stack"
        yield f"{src}.input_proj.weight", streams, f"{dst}/fusion_proj/kernel", CONV1D_1, "stack"
        yield f"{src}.input_proj.bias", streams, f"{dst}/fusion_proj/bias", COPY, "stack"
    if cfg.head == "attribute":
        heads = "model/weight_layer.{}"
        yield f"{heads}.weight", cfg.num_attributes, p + "heads_kernel", COPY, "concatenate"
        yield f"{heads}.bias", cfg.num_attributes, p + "heads_bias", COPY, "concatenate"


def _take_model(t: SourceTensors, cfg: vtfpar.VTFPARConfig):
    for key, path, (to_ours, _) in name_table(cfg):
        t.take(key, path, to_ours)
    for pattern, count, path, (to_ours, _), join in grouped_table(cfg):
        arrays = [to_ours(t.get(pattern.format(i))) for i in range(count)]
        t.put(path, getattr(np, join)(arrays), pattern.format("*"))
    if cfg.use_spatial:
        t.drop(lambda k: k.startswith(f"model/spatial_sidenet.vit_model.blocks.{SIDE_DEPTH - 1}."))
    if cfg.use_temporal:
        src = "model/crossframe_sidenet"
        t.drop(lambda k: (m := re.match(re.escape(src) + r"\.vit_model\.blocks\.(\d+)\.", k))
               is not None and int(m.group(1)) >= cfg.frames)


def head_layout(t: SourceTensors, group_columns=None) -> dict[str, Any]:
    """{'head', 'num_attributes', 'group_columns'} told by the heads' weight shapes.

    train.py's heads are Linear(D -> 1), one per attribute; train_marco.py's are
    Linear(D -> classes), one per attribute group. A group head's layout is the attribute
    set's (`group_columns`, AttributeSet.head_groups; without it, the one set whose groups
    have these class counts).
    """
    sizes = []
    while (key := f"model/weight_layer.{len(sizes)}.weight") in t:
        sizes.append(int(t.tensors[key].shape[0]))
    if not sizes:
        raise WeightImportError(f"{t.source}: missing key 'model/weight_layer.0.weight' (not a "
                                "published VTFPAR++ checkpoint?)")
    if all(n == 1 for n in sizes):
        return {"head": "attribute", "num_attributes": int(t.tensors["model/bn.weight"].shape[0]),
                "group_columns": ()}
    layouts = ([tuple(group_columns)] if group_columns is not None else
               [s.head_groups for s in attributes.ATTRIBUTE_SETS.values()])
    matching = [g for g in layouts if list(group_head.class_counts(g)) == sizes]
    if not matching:
        known = (f"the dataset's {list(group_head.class_counts(group_columns))}"
                 if group_columns is not None else "no attribute set's groups")
        raise WeightImportError(
            f"{t.source}: group heads (train_marco.py) of {sizes} classes, but {known} have "
            "these class counts (the published train_marco.py builds 11 groups for "
            "DukeMTMC-VID, which cannot run: docs/quirks.md)")
    return {"head": "group", "num_attributes": sum(len(c) for c in matching[0]),
            "group_columns": matching[0]}


def convert(state_dict: Mapping[str, Any], clip: tuple | None = None,
            source: str = "state dict", group_columns=None,
            **options) -> tuple[vtfpar.VTFPARConfig, dict]:
    """(config, variables) from `model/<published key>` and `clip/<OpenAI CLIP key>` tensors.

    The head (train.py's or train_marco.py's) is told by the weight shapes (`head_layout`;
    `group_columns`: the dataset's groups, for a group head).

    `clip=(ClipConfig, params)` supplies CLIP instead (e.g. from `hf_clip.load`)
    when the state dict has no `clip/` tensors. The frozen visual tower copy under
    `model/clip_visual_extractor.*` is accepted and must equal the CLIP's.
    """
    t = SourceTensors(state_dict, source)
    if "model/bn.weight" not in t:
        raise WeightImportError(f"{source}: missing key 'model/bn.weight' (not a published "
                                "VTFPAR++ checkpoint?)")
    layout = head_layout(t, group_columns)
    if any(k.startswith("clip/") for k in t.tensors):
        backbone_cfg = openai_clip.config_from_state_dict(t, prefix="clip/")
        openai_clip.take_clip(t, backbone_cfg, prefix="clip/")
        backbone_params = None
    elif clip is not None:
        backbone_cfg, backbone_params = clip
    else:
        raise WeightImportError(f"{source}: no 'clip/' tensors and no clip=(cfg, params): the "
                                "published checkpoint lacks the CLIP text tower; pass the OpenAI "
                                "or HuggingFace CLIP it was trained with")
    _check_visual_copy(t, backbone_cfg, backbone_params)
    cfg = config_from_options(backbone_cfg, **layout, **options)
    _take_model(t, cfg)
    t.drop(lambda k: _UNUSED.match(k) is not None)
    t.check_consumed()
    expected = jax.eval_shape(lambda: vtfpar.init(cfg, jax.random.key(0)))
    variables = {name: t.build_tree(tree, prefix=(name,)) for name, tree in expected.items()}
    if backbone_params is None:
        backbone_params = t.build_tree(openai_clip.expected_shapes(backbone_cfg), prefix=("clip",))
    variables["backbone"] = backbone_params
    return cfg, jax.tree.map(jnp.asarray, variables)


def _check_visual_copy(t: SourceTensors, backbone_cfg, backbone_params):
    """The published checkpoint repeats the frozen visual tower: it must be the given CLIP's.

    Against `clip/` tensors every copied tensor is compared; against CLIP params
    from elsewhere, the embeddings (enough to tell two CLIPs apart).
    """
    copy = "model/clip_visual_extractor."
    keys = [k for k in t.tensors if k.startswith(copy)]
    if backbone_params is None:
        reference = {k: t.tensors["clip/visual." + k[len(copy):].replace(
            "resblocks.", "transformer.resblocks.")] for k in keys}
    else:
        v = backbone_params["vision"]
        conv = np.asarray(v["patch_embed"]["kernel"]).transpose(3, 2, 0, 1)
        reference = {copy + "conv1.weight": conv,
                     copy + "class_embedding": v["class_embedding"],
                     copy + "positional_embedding": v["position_embedding"]}
    for k in keys:
        found = t.get(k)
        if k in reference and not np.allclose(found, np.asarray(reference[k]), atol=1e-6):
            raise WeightImportError(f"{t.source}: {k!r} differs from the CLIP given for the text "
                                    "tower: the checkpoint was trained with another CLIP")
