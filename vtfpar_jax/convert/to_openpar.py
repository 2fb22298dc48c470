"""Export of a model dir to the checkpoint format of the published VTFPAR++ `train.py`.

    tensors = to_openpar.state_dict(cfg, variables)   # {'model/<published key>': array}
    written = to_openpar.write_checkpoint(model_dir.load("runs/mars"), "runs/mars", "mars.pth")
    written["openpar_options"]                         # the published options to build it
    written["published_model"]   # models/base_block.py, or base_block_marco.py (head 'group')

The inverse of `convert.openpar`: the same name tables (`openpar.name_table`,
`openpar.grouped_table`, and `openai_clip.name_table` for the frozen visual
tower the published model keeps under `clip_visual_extractor.*`) are walked
with each entry's ours -> torch layout. What the file holds (the keys, shapes, layouts
and dtypes its strict `load_state_dict` accepts; zeros for the tensors the published
model never runs, `_unused`; no CLIP text tower) and which models are refused, one
error naming the config option (`published_options`): docs/sharing.md.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from vtfpar_jax.backbones import openai_clip
from vtfpar_jax.backbones.weights import leaf
from vtfpar_jax.convert import openpar
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import clip, group_head, towers, vtfpar
from vtfpar_jax.models.side_nets import INTERACTION_MAPS, SIDE_DEPTH, SIDE_HEADS
from vtfpar_jax.outputs import files

# The published code builds its side ViTs from this table (`model_register`) only.
PUBLISHED_WIDTHS = tuple(sorted(SIDE_HEADS))
# ... and its mean pooling is `AdaptiveAvgPool2d((1, 240))`, right at width 240 only.
MEAN_POOLING_WIDTH = 240
# Our aggregation names -> the published option values (no LSTM/GRU: those crash there).
PUBLISHED_AGGREGATIONS = {"mean": "mean_pooling", "mlp": "MLP"}
# base_block_marco.py's groups on MARS, its only layout that runs (its DukeMTMC-VID one has 11
# groups for 12 label groups: docs/quirks.md).
PUBLISHED_GROUP_CLASSES = (2, 2, 2, 2, 2, 2, 2, 2, 2, 6, 5, 9, 10, 4)
# The published model file of each head.
PUBLISHED_MODELS = {"attribute": "models/base_block.py", "group": "models/base_block_marco.py"}
# OpenAI keys of the visual tower the published model does not copy.
_NOT_COPIED = ("visual.ln_post.", "visual.proj")


class ExportRefusedError(ConfigError):
    """The published code cannot compute what this model dir computes."""


def _published_map_name(option: str, entries) -> str:
    for name, published in INTERACTION_MAPS.items():
        if published == tuple(entries):
            return name
    raise ExportRefusedError(
        f"{option}={','.join(f'{s}->{t}' for s, t in entries)}: the published code takes only "
        f"its named maps ({', '.join(INTERACTION_MAPS)})")


def published_options(config: ml_collections.ConfigDict, cfg: vtfpar.VTFPARConfig,
                      trainable: Any) -> dict:
    """The published command-line options that build this model, or one refusal naming the
    config option the published code cannot follow."""
    backbone = towers.of(cfg.backbone)
    vit_b16 = clip.vit_b16()
    if backbone.name != "clip":
        raise ExportRefusedError(f"backbone.name={backbone.name!r} ({config.backbone.path}): the "
                                 "published code runs OpenAI CLIP ViT-B/16 only")
    c = cfg.backbone
    if (c.vision, c.text, c.image_size, c.patch_size, c.projection_dim) != (
            vit_b16.vision, vit_b16.text, vit_b16.image_size, vit_b16.patch_size,
            vit_b16.projection_dim):
        raise ExportRefusedError(
            f"backbone.path={config.backbone.path!r} (backbone.source="
            f"{config.backbone.source!r}): a CLIP of "
            f"width {c.vision.width}, {c.vision.layers} layers, {c.image_size} px / "
            f"{c.patch_size}; the published code runs OpenAI CLIP ViT-B/16 only")
    if "text" in trainable.get("backbone", {}):
        raise ExportRefusedError(
            f"frozen_patterns={list(config.frozen_patterns)}: the CLIP text tower was trained; "
            "the published file has no text tower (the published code reads OpenAI's)")
    if cfg.dim not in PUBLISHED_WIDTHS:
        raise ExportRefusedError(f"model.dim={cfg.dim}: the published code builds side "
                                 f"widths {list(PUBLISHED_WIDTHS)} only")
    if cfg.num_heads != SIDE_HEADS[cfg.dim]:
        raise ExportRefusedError(f"model.heads={cfg.num_heads}: the published code uses "
                                 f"{SIDE_HEADS[cfg.dim]} heads at width {cfg.dim}")
    if cfg.head == "group" and (
            group_head.class_counts(cfg.group_columns) != PUBLISHED_GROUP_CLASSES):
        raise ExportRefusedError(
            f"model.head='group' with groups of {list(group_head.class_counts(cfg.group_columns))}"
            f" classes: the published base_block_marco.py runs MARS's "
            f"{list(PUBLISHED_GROUP_CLASSES)} only")
    if cfg.side_patch_size != 16:
        raise ExportRefusedError(f"model.side_patch_size={cfg.side_patch_size}: the published "
                                 "side ViTs use 16")
    options = dict(frames=cfg.frames, without_spatial=not cfg.use_spatial,
                   without_temporal=not cfg.use_temporal, mmformer_dim=cfg.dim,
                   spatial_dim=cfg.dim, temporal_dim=cfg.dim)
    for side, use in (("spatial", cfg.use_spatial), ("temporal", cfg.use_temporal)):
        kind = getattr(cfg, f"{side}_aggregation")
        if use and kind not in PUBLISHED_AGGREGATIONS:
            raise ExportRefusedError(
                f"model.{side}_aggregation={kind!r}: the published code runs "
                f"{sorted(PUBLISHED_AGGREGATIONS)} only (its LSTM and GRU crash)")
        if use and kind == "mean" and cfg.dim != MEAN_POOLING_WIDTH:
            raise ExportRefusedError(
                f"model.dim={cfg.dim} with model.{side}_aggregation='mean': the published mean "
                f"pooling works at width {MEAN_POOLING_WIDTH} only")
        options[f"{side}_feat_aggregation"] = PUBLISHED_AGGREGATIONS.get(kind, "mean_pooling")
        options[f"{side}_interact_map"] = (
            _published_map_name(f"model.{side}_map", getattr(cfg, f"{side}_map")) if use
            else "default")
    # Model dirs written before these options existed used the published settings.
    for option, value, published in (
            ("input.normalization", config.input.get("normalization", "published"), "published"),
            ("text.phrases", config.text.get("phrases", "published"), "published")):
        if value != published:
            raise ExportRefusedError(f"{option}={value!r}: the published code uses "
                                     f"{published!r} only")
    return options


def _unused(cfg: vtfpar.VTFPARConfig, variables: dict) -> dict[str, np.ndarray]:
    """Zeros for the tensors the published model creates and never runs (docs/sharing.md)."""
    d, width = cfg.dim, cfg.backbone.vision.width
    shapes = {"model/w_temporal": (1,), "model/visual_embed.weight": (d, width),
              "model/visual_embed.bias": (d,)}
    for name in ("spa_embed", "tem_embed"):
        shapes.update({f"model/{name}.weight": (d, d), f"model/{name}.bias": (d,)})
    unused_blocks = []
    if cfg.use_spatial:
        unused_blocks.append(f"model/spatial_sidenet.vit_model.blocks.{SIDE_DEPTH - 1}")
    if cfg.use_temporal:
        src = "model/crossframe_sidenet"
        unused_blocks += [f"{src}.vit_model.blocks.{f}" for f in range(cfg.frames, SIDE_DEPTH)]
        patch = cfg.side_patch_size
        shapes.update({f"{src}.vit_model.patch_embed.proj.weight": (d, 3, patch, patch),
                       f"{src}.vit_model.patch_embed.proj.bias": (d,)})
        for j in range(len(cfg.temporal_map)):
            shapes.update({f"{src}.projection_layers.{j}.weight": (d, d),
                           f"{src}.projection_layers.{j}.bias": (d,)})
    # A side block has the fusion block's shapes: take them from it through the block table.
    for block in unused_blocks:
        for key, path, (_, to_torch) in openpar.block_table(block, "params/fusion_block"):
            shapes[key] = to_torch(leaf(variables, path)).shape
    out = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    out["model/bn.num_batches_tracked"] = np.zeros((), np.int64)
    return out


def state_dict(cfg: vtfpar.VTFPARConfig, variables: dict) -> dict[str, np.ndarray]:
    """`{'model/<published key>': array}` of `variables` ({'params', 'batch_stats', 'backbone'})."""
    out = {key: to_torch(leaf(variables, path))
           for key, path, (_, to_torch) in openpar.name_table(cfg)}
    for pattern, count, path, (_, to_torch), join in openpar.grouped_table(cfg):
        parts = leaf(variables, path)
        parts = list(parts) if join == "stack" else np.split(parts, count)
        out.update({pattern.format(i): to_torch(p) for i, p in enumerate(parts)})
    copy = "model/clip_visual_extractor."
    for key, array in openai_clip.tensors_from_params(cfg.backbone, variables["backbone"]).items():
        if key.startswith("visual.") and not key.startswith(_NOT_COPIED):
            name = key.removeprefix("visual.").replace("transformer.resblocks.", "resblocks.")
            out[copy + name] = array
    out.update(_unused(cfg, variables))
    return {k: np.array(v, order="C") for k, v in out.items()}  # writable, C order, 0-d kept


def write_checkpoint(loaded, model: str, out: str) -> dict:
    """Write `out` (`torch.save` of {'epoch', 'model_state_dict'}) from `loaded`, the
    loaded model dir `model`; returns what was written: the step, the epoch and the
    published command-line options that build the model it holds."""
    import torch

    from vtfpar_jax.state import model_dir

    options = published_options(loaded.config, loaded.model_cfg, loaded.state.trainable)
    tensors = state_dict(loaded.model_cfg, loaded.variables())
    published = {k.removeprefix("model/"): torch.from_numpy(v) for k, v in tensors.items()}
    epoch = loaded.epoch
    # torch.save writes in place: a stop or a full disk would leave a truncated file that
    # a rerun then refuses as existing.
    with files.atomic_file(out) as temporary:
        torch.save({"epoch": epoch, "model_state_dict": published}, temporary)
    return {"model": model_dir.identity(model), "step": loaded.step, "epoch": epoch,
            "openpar_options": options,
            "published_model": PUBLISHED_MODELS[loaded.model_cfg.head]}

