"""Parameter counts: the command, `count()`, and the reconciliation with the published 15,036,610.

The expected figures are computed here independently of `param_count`: from
the layer formulas of the reference (sections 2, 4-7) and from the published
model's own tensor list (the published sample's params.json).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from vtfpar_jax.convert import published_sample
from vtfpar_jax.models import clip, vtfpar
from vtfpar_jax.models.side_nets import INTERACTION_MAPS
from vtfpar_jax.tools import param_count


def default_cfg() -> vtfpar.VTFPARConfig:
    return vtfpar.VTFPARConfig(backbone=clip.vit_b16(), num_attributes=43)


def _block(d: int) -> int:
    # ln1 + qkv + proj + ln2 + fc1 + fc2 of a timm block with MLP ratio 4.
    return 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)


def test_default_counts_match_the_layer_formulas():
    d, c, a, frames, streams = 240, 768, 43, 6, 5
    linear = d * d + d
    embedding = 2 * d + 14 * 14 * d                  # cls_embed, cls_pos_embed, pos_embed
    fusion = 2 * c + c * d + d                       # LayerNorm(768) + 1x1 conv 768 -> D
    spatial = (3 * 16 * 16 * d + d) + embedding + 7 * _block(d) + 5 * fusion
    temporal = embedding + frames * _block(d) + (c * d + d) + streams * fusion
    got = param_count.count(default_cfg())
    assert got["trainable"] == {
        "spatial_side_net": spatial, "temporal_side_net": temporal,
        "word_embed": 512 * d + d, "fusion_block": _block(d), "norm": 2 * d,
        "heads_kernel": a * d, "heads_bias": a, "bn": 2 * a}
    assert got["buffers"] == {"bn": 2 * a}
    unused = (1 + (c * d + d) + 2 * linear + 5 * linear + _block(d)
              + (8 - frames) * _block(d) + (3 * 16 * 16 * d + d))
    assert sum(got["published_unused"].values()) == unused
    assert got["trainable_total"] + unused == param_count.PUBLISHED_TRAINABLE == 15_036_610


def test_reconciles_with_the_published_tensor_list():
    """The fixture lists every tensor of the published default model with its shape."""
    meta = published_sample.params("default")
    sizes = {t["name"]: math.prod(t["shape"]) for t in meta["tensors"]}
    model = {k[len("model/"):]: n for k, n in sizes.items() if k.startswith("model/")}
    # BatchNorm's running statistics are buffers, not parameters.
    published = sum(n for k, n in model.items() if not k.startswith("bn.running_"))
    assert published == param_count.PUBLISHED_TRAINABLE
    got = param_count.count(default_cfg())
    assert got["published_equivalent"] == published
    unused_keys = re.compile(
        r"(w_temporal|visual_embed\..*|spa_embed\..*|tem_embed\..*"
        r"|crossframe_sidenet\.projection_layers\..*|crossframe_sidenet\.vit_model\.patch_embed\..*"
        r"|spatial_sidenet\.vit_model\.blocks\.7\..*|crossframe_sidenet\.vit_model\.blocks\.[67]\..*)$")
    assert sum(n for k, n in model.items() if unused_keys.match(k)) == sum(
        got["published_unused"].values())
    assert got["frozen_total"] == sum(n for k, n in sizes.items() if k.startswith("clip/"))


def test_command_prints_the_default_count_and_the_reconciliation():
    out = subprocess.run([sys.executable, "-m", "vtfpar_jax", "param-count"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    got = param_count.count(default_cfg())
    total = re.search(r"^trainable parameters:\n(?:  .*\n)*?  total\s+([\d,]+)$", out, re.M)
    assert total is not None, out
    assert int(total.group(1).replace(",", "")) == got["trainable_total"]
    unused = sum(got["published_unused"].values())
    assert (f"trainable {got['trainable_total']:,} + unused {unused:,} = "
            f"{got['trainable_total'] + unused:,}") in out
    assert "15,036,610; ours + unused matches it" in out


def test_command_options_and_vit_l14():
    argv = ["--shape", "vit_l14", "--frames", "4", "--dim", "256", "--num_attributes", "36",
            "--spatial_map", "0->0, 6->1, 12->2, 18->3, 23->4", "--temporal_map", "1->0, 23->1"]
    out = subprocess.run([sys.executable, "-m", "vtfpar_jax", "param-count", *argv],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "default configuration only" in out
    cfg = vtfpar.VTFPARConfig(
        backbone=clip.vit_l14(), num_attributes=36, frames=4, dim=256,
        spatial_map=((0, 0), (6, 1), (12, 2), (18, 3), (23, 4)), temporal_map=((1, 0), (23, 1)))
    got = param_count.count(cfg)
    assert f"{got['trainable_total']:>14,}" in out
    assert got["trainable"]["heads_kernel"] == 36 * 256
    # ViT-L/14's fusion layers read 1024-wide tokens.
    assert got["trainable"]["temporal_side_net"] == (
        2 * 256 + 14 * 14 * 256 + 4 * _block(256) + (1024 * 256 + 256)
        + 2 * (2 * 1024 + 1024 * 256 + 256))
    assert got["frozen"]["vision"] > 300_000_000


@pytest.mark.parametrize("flag, absent", [("--without_spatial", "spatial_side_net"),
                                          ("--without_temporal", "temporal_side_net")])
def test_one_side_net_off(flag, absent):
    # The tiny CLIP has 4 layers, so the published maps (up to index 11) do not fit.
    param_count.main(["--shape", "tiny", flag, "--spatial_map", "0", "--temporal_map", "0"])
    cfg = vtfpar.VTFPARConfig(backbone=clip.tiny(), num_attributes=43,
                              spatial_map=INTERACTION_MAPS["0"], temporal_map=INTERACTION_MAPS["0"],
                              use_spatial=flag != "--without_spatial",
                              use_temporal=flag != "--without_temporal")
    assert absent not in param_count.count(cfg)["trainable"]


@pytest.mark.parametrize("kind, expected", [
    ("max", lambda d: 0), ("mean", lambda d: 0), ("mlp", lambda d: 6 + 1),
    # a learned query (D) and the query/key/value/output projections with biases
    ("attention", lambda d: d + 4 * (d * d + d))])
def test_aggregation_counts(kind, expected):
    d = 240
    cfg = vtfpar.VTFPARConfig(backbone=clip.vit_b16(), num_attributes=43, spatial_aggregation=kind,
                              temporal_aggregation=kind)
    got = param_count.count(cfg)["trainable"]
    for side in ("spatial", "temporal"):
        # mlp: one weight per slice plus a bias (6 frames; 5 streams on the temporal side)
        want = expected(d) - (1 if kind == "mlp" and side == "temporal" else 0)
        assert got.get(f"{side}_aggregation", 0) == want, (kind, side)
