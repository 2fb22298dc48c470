"""Trainable and frozen parameter counts of a VTFPAR++ configuration, from shapes only.

    vtfpar param-count [--backbone clip|siglip] [--shape vit_b16|vit_l14|so400m14|tiny]
        [--frames 6] [--dim 240]
        [--spatial_map default] [--temporal_map default] [--num_attributes 43]

Everything is counted with `jax.eval_shape`, so no array is ever allocated
(ViT-L/14 included). The published model reports 15,036,610 trainable
parameters; it also creates tensors it never runs (docs/published-model.md §7), which
`published_unused` accounts for so that the two figures can be reconciled.
"""

from __future__ import annotations

import argparse

import jax

from vtfpar_jax import cli_errors
from vtfpar_jax.backbones import registry
from vtfpar_jax.models import clip, towers, vtfpar
from vtfpar_jax.models.side_nets import AGGREGATIONS, SIDE_DEPTH, parse_interaction_map, side_block
from vtfpar_jax.tools.bench_setup import count_params

# The published default model's trainable count (ImageNet ViT excluded: it is
# loaded and discarded, never part of the model's state dict).
PUBLISHED_TRAINABLE = 15_036_610

def _block_size(cfg: vtfpar.VTFPARConfig) -> int:
    """Parameters of one side-ViT block of width D (shapes from our own module)."""
    block = side_block(cfg.dim, cfg.num_heads, jax.numpy.float32, "block")
    x = jax.ShapeDtypeStruct((1, 2, cfg.dim), jax.numpy.float32)
    return count_params(jax.eval_shape(block.init, jax.random.key(0), x))


def published_unused(cfg: vtfpar.VTFPARConfig) -> dict[str, int]:
    """Tensors the published model creates for `cfg` but never runs (docs/published-model.md §7).

    Our model does not create them, so they are the whole difference between
    our trainable count and the published one.
    """
    d, c = cfg.dim, cfg.backbone.vision.width
    linear = d * d + d
    block = _block_size(cfg)
    unused = {
        "w_temporal": 1,
        "visual_embed": c * d + d,           # Linear(CLIP width -> D)
        "spa_embed": linear,
        "tem_embed": linear,
    }
    if cfg.use_spatial:
        # SIDE_DEPTH blocks are created, SIDE_DEPTH - 1 run.
        unused["spatial_sidenet.blocks_beyond_7"] = block
    if cfg.use_temporal:
        p = cfg.side_patch_size
        # One D->D projection per temporal-map entry (CrossFrameSidenet.py, to_openpar._unused).
        unused["crossframe_sidenet.projection_layers"] = len(cfg.temporal_map) * linear
        unused["crossframe_sidenet.blocks_beyond_frames"] = (SIDE_DEPTH - cfg.frames) * block
        unused["crossframe_sidenet.patch_embed"] = 3 * p * p * d + d
    return unused


def count(cfg: vtfpar.VTFPARConfig) -> dict:
    """Parameter counts of `cfg`, by top-level module.

    Keys: 'trainable' {module: n} (side nets, aggregations, fusion, heads, BN
    affine), 'trainable_total', 'buffers' {module: n} (BN running statistics:
    state, not parameters), 'frozen' {'vision', 'text', 'logit_scale'} (the
    CLIP), 'frozen_total', 'published_unused' {name: n}, 'published_equivalent'
    (trainable_total + the unused tensors: what the published model would report).
    """
    variables = jax.eval_shape(lambda: vtfpar.init(cfg, jax.random.key(0)))
    init_backbone = towers.of(cfg.backbone).init_params
    backbone_params = jax.eval_shape(lambda: init_backbone(cfg.backbone, jax.random.key(0)))
    trainable = {name: count_params(tree) for name, tree in variables["params"].items()}
    buffers = {name: count_params(tree) for name, tree in variables.get("batch_stats", {}).items()}
    frozen = {name: count_params(tree) for name, tree in backbone_params.items()}
    unused = published_unused(cfg)
    total = sum(trainable.values())
    return {"trainable": trainable, "trainable_total": total, "buffers": buffers,
            "frozen": frozen, "frozen_total": sum(frozen.values()),
            "published_unused": unused,
            "published_equivalent": total + sum(unused.values())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="vtfpar param-count", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    registry.add_shape_options(p)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--dim", type=int, default=240)
    p.add_argument("--heads", type=int, default=None,
                   help="side-ViT heads (default: the published table by width)")
    p.add_argument("--spatial_map", default="default")
    p.add_argument("--temporal_map", default="default")
    p.add_argument("--spatial_aggregation", choices=AGGREGATIONS, default="mean")
    p.add_argument("--temporal_aggregation", choices=AGGREGATIONS, default="mean")
    p.add_argument("--without_spatial", action="store_true")
    p.add_argument("--without_temporal", action="store_true")
    p.add_argument("--num_attributes", type=int, default=43)
    a = p.parse_args(argv)
    backbone = registry.parsed_shape(p, a)
    return cli_errors.run(lambda: _param_count(a, backbone))


def _param_count(a, backbone) -> None:
    cfg = vtfpar.VTFPARConfig(
        backbone=backbone, num_attributes=a.num_attributes, frames=a.frames,
        spatial_map=parse_interaction_map(a.spatial_map),
        temporal_map=parse_interaction_map(a.temporal_map),
        spatial_aggregation=a.spatial_aggregation, temporal_aggregation=a.temporal_aggregation,
        dim=a.dim, heads=a.heads, use_spatial=not a.without_spatial,
        use_temporal=not a.without_temporal)
    c = count(cfg)
    print(f"VTFPAR++ with {registry.get(a.backbone).display_name} {a.shape}, {cfg.frames} "
          f"frames, width {cfg.dim} ({cfg.num_heads} heads), {cfg.num_attributes} attributes")
    unused = sum(c["published_unused"].values())
    # (title, counts, name width, total or None for no total line, note after each count)
    sections = (("trainable parameters:", c["trainable"], 28, c["trainable_total"], ""),
                ("buffers (not parameters, not trained by gradient):", c["buffers"], 28, None,
                 "  (BatchNorm running mean and variance)"),
                ("frozen parameters (CLIP):", c["frozen"], 28, c["frozen_total"], ""),
                ("created but never run by the published model (not in ours):",
                 c["published_unused"], 40, unused, ""))
    for title, counts, width, total, note in sections:
        print(title)
        for name, n in counts.items():
            print(f"  {name:<{width}}{n:>14,}{note}")
        if total is not None:
            print(f"  {'total':<{width}}{total:>14,}")
    equivalent = c["published_equivalent"]
    print(f"trainable {c['trainable_total']:,} + unused {unused:,} = {equivalent:,}")
    if cfg == vtfpar.VTFPARConfig(backbone=clip.vit_b16(), num_attributes=43):  # published default
        diff = equivalent - PUBLISHED_TRAINABLE
        verdict = "matches" if diff == 0 else f"differs by {diff:+,} from"
        print(f"published trainable parameters: {PUBLISHED_TRAINABLE:,}; ours + unused "
              f"{verdict} it")
    else:
        print(f"published trainable parameters: {PUBLISHED_TRAINABLE:,} (default configuration "
              "only; this one differs, so no reconciliation)")
