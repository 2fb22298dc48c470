"""The VTFPAR++ options the published parity fixtures do not cover.

Small random models (tiny CLIPs, narrow side nets, 2 frames, 3 clips), except
the ViT-L/14 and ViT-B/16 checks, which are shape-only (`jax.eval_shape`).
The CPU compiles at a low XLA optimisation level: these graphs run once, so
compile time is what the suite spends.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtfpar_jax.models import clip, vtfpar
from vtfpar_jax.models.side_nets import (
    INTERACTION_MAPS,
    SIDE_DEPTH,
    parse_interaction_map,
    resize_grid,
)

B, F, A = 3, 2, 4  # three clips: with two, training BatchNorm maps every logit to about +-1
# Under BatchNorm with batch statistics, a per-attribute constant cancels out of
# the normalised logits, so these two get (rounding-level) zero gradient in training.
CANCELLED_IN_TRAINING = {("heads_bias",), ("norm", "bias")}


def _compile(fn, *args):
    opts = ({"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
            if jax.default_backend() == "cpu" else {})
    return jax.jit(fn).lower(*args).compile(opts)(*args)


def clip12() -> clip.ClipConfig:
    """12 narrow vision layers, so every published map index 0..11 exists."""
    return clip.ClipConfig(vision=clip.TowerConfig(16, 12, 2, 32),
                           text=clip.TowerConfig(16, 1, 2, 32), image_size=32, patch_size=8,
                           vocab_size=64, projection_dim=16)


@pytest.fixture(scope="module")
def tiny_clip():
    cfg = clip.tiny()
    return cfg, _compile(lambda k: clip.init_params(cfg, k), jax.random.key(0))


@pytest.fixture(scope="module")
def clip12_params():
    cfg = clip12()
    return cfg, _compile(lambda k: clip.init_params(cfg, k), jax.random.key(0))


def base(backbone_cfg: clip.ClipConfig, **kw) -> vtfpar.VTFPARConfig:
    """Width 32 is not in the published table, hence explicit heads."""
    opts = dict(backbone=backbone_cfg, num_attributes=A, frames=F, dim=32, heads=4,
                spatial_map=((0, 0), (2, 1), (4, 2)), temporal_map=((1, 0), (3, 1), (4, 2)))
    if backbone_cfg.image_size == 32:  # clip12: 4x4 CLIP grid; side patch 8 keeps a 4x4 side grid
        opts["side_patch_size"] = 8
    return vtfpar.VTFPARConfig(**{**opts, **kw})


def inputs(cfg: vtfpar.VTFPARConfig, seed: int = 1):
    k = jax.random.split(jax.random.key(seed), 3)
    s = cfg.backbone.image_size
    video = jax.random.normal(k[0], (B, cfg.frames, s, s, 3))
    text = jax.random.normal(k[1], (cfg.num_attributes, cfg.backbone.projection_dim))
    weights = jax.random.normal(k[2], (B, cfg.num_attributes))
    return video, text, weights


def train_grads(cfg, backbone_params, backbone_frozen=True):
    """Logits of one training step, and d(loss)/d(trainable params), d(loss)/d(CLIP params)."""
    video, text, weights = inputs(cfg)

    def run(backbone_params):
        variables = vtfpar.init(cfg, jax.random.key(2))

        def loss(params, backbone_params):
            logits, _ = vtfpar.apply(cfg, {**variables, "params": params}, backbone_params, video,
                                     text, train=True, rng=jax.random.key(3),
                                     backbone_frozen=backbone_frozen)
            # Random weights: the plain sum of batch-normalised logits is constant.
            return jnp.sum(logits * weights), logits

        (_, logits), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(
            variables["params"], backbone_params)
        return logits, variables["params"], grads

    logits, params, (g_params, g_clip) = _compile(run, backbone_params)
    return np.asarray(logits), params, g_params, g_clip


def _leaves(tree):
    return {tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_training_step(cfg, backbone_params):
    """(B, A) finite logits; every trainable leaf gets a gradient, CLIP none."""
    logits, params, g_params, g_clip = train_grads(cfg, backbone_params)
    assert logits.shape == (B, cfg.num_attributes)
    assert np.isfinite(logits).all()
    assert jax.tree.structure(g_params) == jax.tree.structure(params)
    grads = _leaves(g_params)
    scale = max(np.abs(g).max() for g in grads.values())
    for path, g in grads.items():
        assert np.isfinite(g).all(), path
        if path in CANCELLED_IN_TRAINING:
            assert np.abs(g).max() <= 1e-4 * scale, path
        elif path[0] == "temporal_side_net" and path[1].startswith("fusion_"):
            # One stacked slice per stream: each stream must be trained.
            assert (np.abs(g).reshape(len(g), -1).max(axis=1) > 0).all(), path
        else:
            assert np.abs(g).max() > 0, path
    for path, g in _leaves(g_clip).items():
        assert not g.any(), ("CLIP got a gradient through stop_gradient", path)
    return params


def test_lstm_and_gru_aggregations(tiny_clip):
    backbone_cfg, backbone_params = tiny_clip
    for spatial, temporal in (("lstm", "gru"), ("gru", "lstm")):
        cfg = base(backbone_cfg, spatial_aggregation=spatial, temporal_aggregation=temporal)
        params = check_training_step(cfg, backbone_params)
        gates = {"lstm": {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"},
                 "gru": {"ir", "iz", "in", "hr", "hz", "hn"}}
        for side, kind in (("spatial", spatial), ("temporal", temporal)):
            cell = params[f"{side}_aggregation"]["cell"]
            assert set(cell) == gates[kind]
            assert cell["ii" if kind == "lstm" else "ir"]["kernel"].shape == (cfg.dim, cfg.dim)


def test_recurrent_aggregation_matches_torch():
    """The intent of the published LSTM/GRU option: a 1-layer RNN over K, last step's output."""
    torch = pytest.importorskip("torch")
    from vtfpar_jax.models.side_nets import Aggregation

    x = np.random.default_rng(0).standard_normal((2, 3, 5, 8)).astype(np.float32)
    seq = torch.from_numpy(x).permute(0, 2, 1, 3).reshape(10, 3, 8)  # (B*L, K, D)
    for kind, gates in (("lstm", "ifgo"), ("gru", "rzn")):
        agg = Aggregation(kind)
        variables = agg.init(jax.random.key(0), x)
        ours = np.asarray(agg.apply(variables, x))
        cell = variables["params"]["cell"]
        rnn = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(8, 8, batch_first=True)
        with torch.no_grad():
            # torch stacks the gates' (out, in) weights; flax keeps one (in, out) Dense per gate.
            rnn.weight_ih_l0.copy_(torch.cat([torch.tensor(np.asarray(
                cell["i" + g]["kernel"]).T) for g in gates]))
            rnn.weight_hh_l0.copy_(torch.cat([torch.tensor(np.asarray(
                cell["h" + g]["kernel"]).T) for g in gates]))

            # flax has one bias per gate (on the input or the hidden side); torch has both.
            for side, prefix in ((rnn.bias_ih_l0, "i"), (rnn.bias_hh_l0, "h")):
                side.copy_(torch.cat([torch.tensor(np.asarray(cell[prefix + g]["bias"]))
                                      if "bias" in cell[prefix + g] else torch.zeros(8)
                                      for g in gates]))
            expected = rnn(seq)[0][:, -1].reshape(2, 5, 8).numpy()
        np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=kind)


def test_max_and_attention_aggregations_train(tiny_clip):
    backbone_cfg, backbone_params = tiny_clip
    for spatial, temporal in (("max", "attention"), ("attention", "max")):
        cfg = base(backbone_cfg, spatial_aggregation=spatial, temporal_aggregation=temporal)
        params = check_training_step(cfg, backbone_params)
        pooled = params[f"{'spatial' if spatial == 'attention' else 'temporal'}_aggregation"]
        assert pooled["query"].shape == (1, 1, cfg.dim)
        assert pooled["attention"]["key"]["kernel"].shape == (cfg.dim, cfg.num_heads,
                                                             cfg.dim // cfg.num_heads)
        assert f"{'temporal' if spatial == 'attention' else 'spatial'}_aggregation" not in params


def test_max_aggregation_is_the_elementwise_max_over_k():
    from vtfpar_jax.models.side_nets import Aggregation
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 8)).astype(np.float32)
    agg = Aggregation("max")
    variables = agg.init(jax.random.key(0), x)
    assert not variables  # nothing learned
    expected = np.stack([np.stack([[max(x[b, k, t, d] for k in range(3)) for d in range(8)]
                                   for t in range(5)]) for b in range(2)])
    np.testing.assert_array_equal(np.asarray(agg.apply(variables, x)), expected)


def _attention_pool_numpy(x, query, p, heads):
    """Plain numpy: for every (clip, token), a learned query attends over the K slices."""
    b, k, length, d = x.shape
    dh = d // heads
    out = np.zeros((b, length, d))
    for i in range(b):
        for t in range(length):
            slices = x[i, :, t].astype(np.float64)                         # (K, D)
            pooled = np.zeros(d)
            for h in range(heads):
                q = query[0, 0] @ p["query"]["kernel"][:, h] + p["query"]["bias"][h]   # (dh,)
                keys = slices @ p["key"]["kernel"][:, h] + p["key"]["bias"][h]         # (K, dh)
                values = slices @ p["value"]["kernel"][:, h] + p["value"]["bias"][h]
                scores = keys @ q / np.sqrt(dh)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                pooled += (weights @ values) @ p["out"]["kernel"][h]
            out[i, t] = pooled + p["out"]["bias"]
    return out


def test_attention_aggregation_matches_numpy():
    from vtfpar_jax.models.side_nets import Aggregation
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)
    agg = Aggregation("attention", heads=2)
    variables = agg.init(jax.random.key(0), x)
    # Fixed, non-trivial weights (biases too), not the initialiser's.
    variables = jax.tree.map(lambda v: rng.standard_normal(v.shape).astype(np.float32) * 0.5,
                             variables)
    ours = np.asarray(agg.apply(variables, x))
    p = jax.tree.map(np.asarray, variables["params"])
    expected = _attention_pool_numpy(x, p["query"], p["attention"], heads=2)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    # Any number of slices: nothing in it is per slice.
    assert agg.apply(variables, x[:, :2]).shape == (2, 5, 8)


@pytest.mark.parametrize("dim, heads", [(144, 6), (256, 8)])
def test_published_widths(tiny_clip, dim, heads):
    backbone_cfg, backbone_params = tiny_clip
    cfg = base(backbone_cfg, dim=dim, heads=None)
    assert cfg.num_heads == heads
    params = check_training_step(cfg, backbone_params)
    assert params["fusion_block"]["attn"]["qkv"]["kernel"].shape == (dim, 3 * dim)
    assert params["spatial_side_net"]["embedding"]["pos_embed"].shape == (1, 16, dim)


def test_width_outside_the_table(tiny_clip):
    backbone_cfg, backbone_params = tiny_clip
    check_training_step(base(backbone_cfg, dim=32, heads=4), backbone_params)  # explicit heads
    with pytest.raises(ValueError, match=r"dim=32.*set heads"):
        base(backbone_cfg, dim=32, heads=None)
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by heads=4"):
        base(backbone_cfg, dim=30, heads=4)


@pytest.mark.parametrize("use_spatial", [True, False])
def test_one_side_net_only(tiny_clip, use_spatial):
    backbone_cfg, backbone_params = tiny_clip
    cfg = base(backbone_cfg, use_spatial=use_spatial, use_temporal=not use_spatial)
    params = check_training_step(cfg, backbone_params)
    assert ("spatial_side_net" in params) == use_spatial
    assert ("temporal_side_net" in params) != use_spatial


@pytest.mark.parametrize("name", sorted(set(INTERACTION_MAPS) - {"2"}))
def test_named_interaction_maps(clip12_params, name):
    """Each published map (both side nets) on a 12-layer CLIP: the parameters it creates and
    the logits' shape, traced without compiling ('2' is 'default', checked below)."""
    backbone_cfg, backbone_params = clip12_params
    m = INTERACTION_MAPS[name]
    cfg = base(backbone_cfg, spatial_map=m, temporal_map=m)
    params = jax.eval_shape(lambda: vtfpar.init(cfg, jax.random.key(2)))["params"]
    spatial = params["spatial_side_net"]
    assert sorted(k for k in spatial if k.startswith("fusion_")) == sorted(
        f"fusion_{t}" for _, t in m)
    assert params["temporal_side_net"]["fusion_proj"]["kernel"].shape == (len(m), 16, cfg.dim)
    assert cfg.backbone_sources == tuple(sorted({s for s, _ in m}))
    video, text, _ = inputs(cfg)
    variables = jax.eval_shape(lambda: vtfpar.init(cfg, jax.random.key(2)))
    logits = jax.eval_shape(lambda v, c: vtfpar.apply(cfg, v, c, video, text)[0],
                            variables, backbone_params)
    assert logits.shape == (B, A)


def test_widest_named_map_trains(clip12_params):
    """Map '7' (eight entries, side layers 0..7): a real training step, gradients everywhere."""
    backbone_cfg, backbone_params = clip12_params
    m = INTERACTION_MAPS["7"]
    check_training_step(base(backbone_cfg, spatial_map=m, temporal_map=m), backbone_params)


def test_named_map_table():
    assert INTERACTION_MAPS["2"] == INTERACTION_MAPS["default"]
    assert parse_interaction_map("7") == ((0, 0), (1, 1), (2, 2), (4, 3), (6, 4), (8, 5),
                                          (10, 6), (11, 7))
    assert parse_interaction_map("6") == ((11, 4),)


def test_custom_interaction_map(clip12_params):
    backbone_cfg, backbone_params = clip12_params
    spatial = parse_interaction_map("12->6, 5->0,0->3")
    temporal = parse_interaction_map(["12->0", (7, 1)])
    assert spatial == ((12, 6), (5, 0), (0, 3)) and temporal == ((12, 0), (7, 1))
    cfg = base(backbone_cfg, spatial_map=spatial, temporal_map=temporal)
    params = check_training_step(cfg, backbone_params)
    assert sorted(k for k in params["spatial_side_net"] if k.startswith("fusion_")) == [
        "fusion_0", "fusion_3", "fusion_6"]
    assert cfg.backbone_sources == (0, 5, 7, 12)


def test_clip_gradient_only_when_not_frozen(tiny_clip):
    backbone_cfg, backbone_params = tiny_clip
    cfg = base(backbone_cfg, spatial_map=((0, 0), (2, 1)), temporal_map=((1, 0),))
    _, _, g_params, g_clip = train_grads(cfg, backbone_params, backbone_frozen=False)
    vision = g_clip["vision"]
    for i in range(backbone_cfg.vision.layers):
        # Maps read up to index 2: blocks 0 and 1 run, the rest never do.
        assert bool(np.abs(vision[f"layers_{i}"]["fc1"]["kernel"]).max() > 0) == (i < 2), i
    assert np.abs(vision["patch_embed"]["kernel"]).max() > 0
    assert not any(np.asarray(g).any() for g in jax.tree.leaves(g_clip["text"]))
    assert np.abs(g_params["word_embed"]["kernel"]).max() > 0


def _vit_shapes(backbone_cfg, spatial, temporal, frames=6, **kw):
    cfg = vtfpar.VTFPARConfig(backbone=backbone_cfg, num_attributes=43, frames=frames,
                              spatial_map=parse_interaction_map(spatial),
                              temporal_map=parse_interaction_map(temporal), **kw)
    variables = jax.eval_shape(lambda: vtfpar.init(cfg, jax.random.key(0)))
    backbone_params = jax.eval_shape(lambda: clip.init_params(backbone_cfg, jax.random.key(0)))
    video = jax.ShapeDtypeStruct((2, frames, 224, 224, 3), jnp.float32)
    text = jax.ShapeDtypeStruct((43, backbone_cfg.projection_dim), jnp.float32)
    logits, _ = jax.eval_shape(lambda v, c, x, t: vtfpar.apply(cfg, v, c, x, t), variables,
                               backbone_params, video, text)
    return cfg, variables, logits


def test_vit_l14_shapes():
    l14 = clip.vit_l14()
    cfg, variables, logits = _vit_shapes(l14, "0->0, 6->1, 12->2, 18->3, 23->4",
                                         "0->0, 6->1, 12->2, 18->3, 24->4")
    assert logits.shape == (2, 43) and logits.dtype == jnp.float32
    assert (l14.grid_size, cfg.side_grid) == (16, 14)  # CLIP 16x16 resized to the side's 14x14
    p = variables["params"]
    assert p["spatial_side_net"]["embedding"]["pos_embed"].shape == (1, 196, 240)
    assert p["spatial_side_net"]["fusion_4"]["proj"]["kernel"].shape == (1024, 240)
    assert p["temporal_side_net"]["first_linear"]["kernel"].shape == (1024, 240)
    assert p["word_embed"]["kernel"].shape == (768, 240)
    with pytest.raises(ValueError, match=r"temporal_map entry 25->4 .* indices 0\.\.24"):
        _vit_shapes(l14, "default", "0->0, 25->4")


def test_vit_b16_shapes_other_width():
    cfg, variables, logits = _vit_shapes(clip.vit_b16(), "1", "5", frames=8, dim=512,
                                         temporal_aggregation="mlp")
    assert logits.shape == (2, 43)
    assert cfg.side_grid == clip.vit_b16().grid_size == 14
    assert set(variables["params"]["temporal_side_net"]) >= {f"blocks_{f}" for f in range(8)}


def test_real_forward_with_clip_grid_unlike_side_grid(tiny_clip):
    """Tiny CLIP: patch 8 on 64 px is an 8x8 grid; side patch 16 is a 4x4 grid."""
    backbone_cfg, backbone_params = tiny_clip
    cfg = base(backbone_cfg)
    assert (backbone_cfg.grid_size, cfg.side_grid) == (8, 4)
    video, text, _ = inputs(cfg)
    variables = vtfpar.init(cfg, jax.random.key(2))

    def run(v, c, x, t):
        return vtfpar.apply(cfg, v, c, x, t, capture_intermediates=True)

    logits, state = _compile(run, variables, backbone_params, video, text)
    assert logits.shape == (B, A) and np.isfinite(np.asarray(logits)).all()
    inter = state["intermediates"]
    assert inter["spatial_side"][0].shape == (B * F, 1 + 16, cfg.dim)
    assert inter["temporal_side"][0].shape == (B, 3, 1 + 16, cfg.dim)


@pytest.mark.parametrize("src, dst", [(8, 4), (16, 14), (4, 7), (14, 16), (5, 5)])
def test_resize_grid_matches_torch_bilinear(src, dst):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(src * dst).standard_normal((3, src * src, 6)).astype(np.float32)
    ours = np.asarray(resize_grid(jnp.asarray(x), dst))
    t = torch.from_numpy(x).reshape(3, src, src, 6).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(t, size=(dst, dst), mode="bilinear",
                                          align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(3, dst * dst, 6).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_config_errors(tiny_clip):
    backbone_cfg, _ = tiny_clip
    with pytest.raises(ValueError, match=r"frames=9 with the temporal side net"):
        base(backbone_cfg, frames=9)
    cfg = base(backbone_cfg, frames=9, use_temporal=False)  # the spatial net takes any frame count
    assert cfg.frames == 9
    for side in ("spatial", "temporal"):
        with pytest.raises(ValueError, match=f"unknown {side}_aggregation 'median'"):
            base(backbone_cfg, **{f"{side}_aggregation": "median"})
    with pytest.raises(ValueError, match=r"entry '8' is not 's->t'; known names"):
        parse_interaction_map("8")
    for bad in ("0->a", "0-1", "0->1->2", "", "default, 1->1"):
        with pytest.raises(ValueError, match="interaction map"):
            parse_interaction_map(bad)
    with pytest.raises(ValueError, match="distinct targets"):
        parse_interaction_map("0->1, 2->1")
    with pytest.raises(ValueError, match=r"spatial_map entry 5->1 reads CLIP feature 5; "
                                         r"this CLIP has indices 0\.\.4"):
        base(backbone_cfg, spatial_map=((5, 1),))
    with pytest.raises(ValueError, match=r"temporal_map entry 6->2 reads CLIP feature 6"):
        base(backbone_cfg, temporal_map=INTERACTION_MAPS["default"])
    base(backbone_cfg, temporal_map=INTERACTION_MAPS["default"], use_temporal=False)  # unused: fine
    with pytest.raises(ValueError, match=r"spatial_map entry 0->8 targets side layer 8"):
        base(backbone_cfg, spatial_map=((0, 8),))
    with pytest.raises(ValueError, match="use_spatial and use_temporal are both off"):
        base(backbone_cfg, use_spatial=False, use_temporal=False)


def test_config_rejects_bad_maps_given_as_tuples(tiny_clip):
    backbone_cfg, _ = tiny_clip
    for kw in (dict(spatial_map=((0, 1), (2, 1))), dict(temporal_map=())):
        try:
            base(backbone_cfg, **kw)
        except ValueError as e:
            assert "map" in str(e)
        else:
            raise AssertionError(f"accepted {kw}")


@pytest.fixture(scope="module")
def small(tiny_clip):
    """A quick spatial-only model with drop-path 0.5, random BN state, and its inputs."""
    backbone_cfg, backbone_params = tiny_clip
    cfg = base(backbone_cfg, use_temporal=False, spatial_map=((0, 0),), drop_path_rate=0.5)
    variables = vtfpar.init(cfg, jax.random.key(2))
    k = jax.random.split(jax.random.key(7), 4)
    variables["params"]["bn"] = {"scale": 1 + 0.1 * jax.random.normal(k[0], (A,)),
                                 "bias": 0.1 * jax.random.normal(k[1], (A,))}
    variables["batch_stats"] = {"bn": {"mean": jax.random.normal(k[2], (A,)),
                                       "var": jax.random.uniform(k[3], (A,), minval=0.5,
                                                                 maxval=2.0)}}
    video, text, _ = inputs(cfg)

    def forward(cfg, train, rng):
        def run(v, c, x, t, r):
            return vtfpar.apply(cfg, v, c, x, t, train=train, rng=r, capture_intermediates=True)
        logits, state = _compile(run, variables, backbone_params, video, text, rng)
        return (np.asarray(logits), np.asarray(state["intermediates"]["logits_pre_bn"][0]),
                jax.tree.map(np.asarray, state.get("batch_stats")))

    return cfg, variables, forward


def test_drop_path_only_in_training(small, tiny_clip):
    cfg, _, forward = small
    r1, r2 = jax.random.key(11), jax.random.key(12)
    _, pre1, _ = forward(cfg, True, r1)
    _, pre1_again, _ = forward(cfg, True, r1)
    _, pre2, _ = forward(cfg, True, r2)
    np.testing.assert_array_equal(pre1, pre1_again)
    assert np.abs(pre1 - pre2).max() > 1e-3  # another rng drops other paths
    _, eval1, _ = forward(cfg, False, r1)
    _, eval2, _ = forward(cfg, False, r2)
    np.testing.assert_array_equal(eval1, eval2)
    # Without drop-path, training computes the same pre-BN logits as evaluation.
    no_drop = vtfpar.VTFPARConfig(**{**cfg.__dict__, "drop_path_rate": 0.0})
    _, train_no_drop, _ = forward(no_drop, True, r1)
    np.testing.assert_allclose(train_no_drop, eval1, atol=1e-6)
    with pytest.raises(ValueError, match="needs an rng"):
        vtfpar.apply(cfg, small[1], tiny_clip[1], jnp.zeros((1, F, 64, 64, 3)), jnp.zeros((A, 64)),
                     train=True)


def test_batchnorm_matches_torch(small):
    """Batch statistics in training (and the running-stat update), running statistics in eval."""
    torch = pytest.importorskip("torch")
    cfg, variables, forward = small
    bn = torch.nn.BatchNorm1d(A)  # eps 1e-5, momentum 0.1, as published
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(np.asarray(variables["params"]["bn"]["scale"])))
        bn.bias.copy_(torch.tensor(np.asarray(variables["params"]["bn"]["bias"])))
        bn.running_mean.copy_(torch.tensor(np.asarray(variables["batch_stats"]["bn"]["mean"])))
        bn.running_var.copy_(torch.tensor(np.asarray(variables["batch_stats"]["bn"]["var"])))

    logits, pre, stats = forward(cfg, True, jax.random.key(11))
    with torch.no_grad():
        expected = bn.train()(torch.from_numpy(pre)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    # torch puts the unbiased batch variance into the running average.
    np.testing.assert_allclose(stats["bn"]["mean"], bn.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(stats["bn"]["var"], bn.running_var.numpy(), atol=1e-6)
    assert not np.allclose(stats["bn"]["var"], np.asarray(variables["batch_stats"]["bn"]["var"]))

    logits, pre, stats = forward(cfg, False, jax.random.key(11))
    assert stats is None  # evaluation leaves the running statistics alone
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(np.asarray(variables["batch_stats"]["bn"]["mean"])))
        bn.running_var.copy_(torch.tensor(np.asarray(variables["batch_stats"]["bn"]["var"])))
        expected = bn.eval()(torch.from_numpy(pre)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def _count(jaxpr, primitive: str) -> int:
    """Occurrences of `primitive`, sub-jaxprs (pjit, custom_jvp, scan, ...) included."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == primitive
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    n += _count(sub.jaxpr, primitive)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    n += _count(sub, primitive)
    return n


def test_clip_runs_only_to_the_deepest_index_read(clip12_params):
    backbone_cfg, backbone_params = clip12_params
    video = jnp.zeros((1, F, 32, 32, 3))

    def dots(**kw) -> int:
        cfg = base(backbone_cfg, **kw)
        jaxpr = jax.make_jaxpr(lambda c, x: vtfpar.backbone_tokens(cfg, c, x))(backbone_params,
                                                                              video)
        return _count(jaxpr.jaxpr, "dot_general")

    per_block = dots(spatial_map=((1, 0),), use_temporal=False)
    assert per_block > 0
    assert dots(spatial_map=((0, 0),), use_temporal=False) == 0  # index 0: no block at all
    deepest_5 = dots(spatial_map=((0, 0), (5, 1)), temporal_map=((3, 0), (5, 1)))
    assert deepest_5 == 5 * per_block
    assert dots(spatial_map=((0, 0), (5, 1)), temporal_map=((11, 0),)) == 11 * per_block
    # A map of a side net that is off does not deepen CLIP.
    assert dots(spatial_map=((5, 1),), temporal_map=((11, 0),), use_temporal=False) == deepest_5


@pytest.mark.parametrize("policy", ["blocks", "dots"])
def test_remat_changes_no_parameter_logit_or_gradient(tiny_clip, policy):
    """model.remat recomputes (part of) the side and fusion blocks in the backward pass: the
    parameter tree (names the converters rely on), training logits and gradients are those
    without it. Drop-path is on, so the fusion block's static `deterministic` and its rng are
    exercised."""
    backbone_cfg, backbone_params = tiny_clip
    cfg = base(backbone_cfg, drop_path_rate=0.5, remat="none")
    remat = vtfpar.VTFPARConfig(**{**cfg.__dict__, "remat": policy})
    hash(remat)  # still a valid static jit argument
    logits, params, grads, _ = train_grads(cfg, backbone_params)
    logits_r, params_r, grads_r, _ = train_grads(remat, backbone_params)
    assert jax.tree_util.tree_structure(params_r) == jax.tree_util.tree_structure(params)
    assert jax.tree_util.tree_structure(grads_r) == jax.tree_util.tree_structure(grads)
    for path, p in _leaves(params).items():
        np.testing.assert_array_equal(_leaves(params_r)[path], p, err_msg=str(path))
    np.testing.assert_allclose(logits_r, logits, atol=1e-6, rtol=1e-5)
    # float32 rounding: XLA fuses the recomputed forward otherwise, and gradient leaves
    # reach ~10, so atol is relative to each leaf's largest gradient (the non-remat graph
    # at XLA's default optimisation level differs from this one by as much, ~5e-6 of it);
    # the cancelled leaves are rounding noise, so relative to the largest of all.
    g, g_r = _leaves(grads), _leaves(grads_r)
    scale = max(np.abs(v).max() for v in g.values())
    for path, v in g.items():
        ref = scale if path in CANCELLED_IN_TRAINING else np.abs(v).max()
        np.testing.assert_allclose(g_r[path], v, atol=1e-5 * ref, rtol=1e-5, err_msg=str(path))

    # The policy rematerialises exactly the side blocks: 7 spatial + F temporal + fusion, no CLIP
    # block.
    video, text, _ = inputs(cfg)
    variables = jax.eval_shape(lambda: vtfpar.init(cfg, jax.random.key(2)))
    # The primitive's name varies across JAX versions ('checkpoint', 'remat2').
    remat_name = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).jaxpr.eqns[0].primitive.name

    def checkpoints(c) -> int:
        jaxpr = jax.make_jaxpr(lambda v, p, x, t: vtfpar.apply(
            c, v, p, x, t, train=True, rng=jax.random.key(3))[0])(variables, backbone_params,
                                                                  video, text)
        return _count(jaxpr.jaxpr, remat_name)

    # Rematerialised by every policy: the CLIP projections (one per spatial map entry, one
    # per frame of the temporal side net), so that the CLIP tokens are what they keep.
    projections = len(cfg.spatial_map) + F
    assert checkpoints(cfg) == projections
    assert checkpoints(remat) == projections + (SIDE_DEPTH - 1) + F + 1
