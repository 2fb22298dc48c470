"""The spatial and temporal side networks of VTFPAR++ (docs/published-model.md §4–§6).

Both are small ViTs (timm blocks: exact GELU, LayerNorm eps 1e-6, qkv bias)
that read frozen CLIP tokens through "interaction maps": an entry `s -> t`
feeds CLIP feature index `s` into side layer `t`. Video is (B, F, H, W, 3);
CLIP tokens arrive per index as patch tokens (B*F, P, C), frames folded into
the batch: the backbone's class token, where it has one, is not read
(models/towers.py), the side nets having their own.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vtfpar_jax.models import lean_ops
from vtfpar_jax.models.layers import TransformerBlock
from vtfpar_jax.models.lean_ops import LayerNorm

InteractionMap = tuple[tuple[int, int], ...]

# Attention heads of the published side ViTs, by width (timm names vit_w{D}n{heads}d8).
SIDE_HEADS = {144: 6, 240: 6, 256: 8, 336: 6, 432: 6, 512: 8, 768: 8}
SIDE_DEPTH = 8
SIDE_LN_EPS = 1e-6


# What a side or fusion block keeps for its backward pass (`model.remat`):
#   none    everything autodiff saves (fastest where memory allows);
#   blocks  only each block's input: the whole block is recomputed;
#   dots    the outputs of its matmuls without batch dimensions (qkv, attention
#           projection, fc1, fc2): only normalisation, activation and attention
#           are recomputed, which are cheap next to the matmuls.
# `deterministic` (argument 2, counting self) is a Python bool, hence static; call
# a block as block(x, deterministic), always positionally: jax.checkpoint rejects a
# static_argnum beyond the arguments given, and traces keyword arguments.
REMAT_BLOCKS = {
    "none": TransformerBlock,
    "blocks": nn.remat(TransformerBlock, static_argnums=(2,)),
    "dots": nn.remat(TransformerBlock, static_argnums=(2,),
                     policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
}
REMAT_POLICIES = tuple(REMAT_BLOCKS)


def side_block(dim: int, heads: int, dtype, name: str, drop_path_rate: float = 0.0,
               remat: str = "none", attention: str = "auto"):
    """A timm side-ViT block, rematerialised as `remat` says (same parameter names)."""
    if remat not in REMAT_BLOCKS:
        raise ValueError(f"model.remat={remat!r}; expected one of {REMAT_POLICIES}")
    return REMAT_BLOCKS[remat](width=dim, heads=heads, mlp_dim=4 * dim, activation="gelu",
                               layer_norm_eps=SIDE_LN_EPS, drop_path_rate=drop_path_rate,
                               dtype=dtype, attention=attention, name=name)


def resize_grid(patches: jax.Array, grid: int) -> jax.Array:
    """Patch tokens (N, P, C) on a square grid -> (N, grid*grid, C).

    Bilinear, half-pixel centres and no antialiasing: torch's
    F.interpolate(mode='bilinear', align_corners=False). Identity when the
    CLIP grid already is the side grid (ViT-B/16 at 224 px).
    """
    n, p, c = patches.shape
    side = int(round(p ** 0.5))
    if side == grid:
        return patches
    patches = patches.reshape(n, side, side, c)
    patches = jax.image.resize(patches, (n, grid, grid, c), "bilinear", antialias=False)
    return patches.reshape(n, grid * grid, c)


class SideEmbedding(nn.Module):
    """The class token and the positions, 1 + grid^2 rows (cls row kept apart, as published)."""

    dim: int
    grid: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        init = nn.initializers.normal(0.02)
        cls = self.param("cls_embed", init, (1, 1, self.dim))
        cls_pos = self.param("cls_pos_embed", init, (1, 1, self.dim))
        pos = self.param("pos_embed", init, (1, self.grid * self.grid, self.dim))
        return cls, jnp.concatenate([cls_pos, pos], axis=1)


class SpatialFusion(nn.Module):
    """y = Dense(LN(clip patch tokens (N, P, C))) added to the side patch tokens (class
    token untouched)."""

    dim: int
    grid: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, backbone_tokens: jax.Array) -> jax.Array:
        y = LayerNorm(epsilon=SIDE_LN_EPS, dtype=self.dtype, name="norm")(backbone_tokens)
        y = nn.Dense(self.dim, dtype=self.dtype, name="proj")(y)
        # Projecting before resizing, as published (bilinear weights sum to one,
        # so the two orders agree anyway).
        y = resize_grid(y, self.grid)
        return jnp.concatenate([x[:, :1], x[:, 1:] + y.astype(x.dtype)], axis=1)


# Recomputed in the backward pass from its inputs, so what stays is the CLIP tokens
# themselves (which the temporal side net's projections keep too), not 768-wide
# slices and normalised copies of them.
RematSpatialFusion = nn.remat(SpatialFusion)


class _SideNet(nn.Module, kw_only=True):
    """What the two side nets share: their width, heads, grid, interaction map, and how
    their blocks compute (dtype, remat, attention). Keyword fields only."""

    dim: int
    heads: int
    grid: int
    interaction_map: InteractionMap
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"
    attention: str = "auto"

    def block(self, name: str):
        """A side block of this net (`side_block`), named `name`."""
        return side_block(self.dim, self.heads, self.dtype, name, remat=self.remat,
                          attention=self.attention)


class SpatialSideNet(_SideNet, kw_only=True):
    """Per frame: patch-embed the pixels, then 7 side blocks with CLIP fused in.

    Quirk kept (docs/published-model.md §5): the positional embedding is re-added after
    every block, and the 8th block is never run.
    """

    patch_size: int

    @nn.compact
    def __call__(self, images: jax.Array, backbone_tokens: Mapping[int, jax.Array]) -> jax.Array:
        """images (N, H, W, 3) -> side tokens (N, 1+grid^2, D)."""
        p = self.patch_size
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    name="patch_embed")(images)
        n = x.shape[0]
        x = x.reshape(n, -1, self.dim)
        cls, pos = SideEmbedding(self.dim, self.grid, name="embedding")()
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.dim)).astype(x.dtype), x], axis=1)
        pos = pos.astype(x.dtype)
        x = x + pos
        sources = {t: s for s, t in self.interaction_map}

        def fuse(t, x):
            if t not in sources:
                return x
            return RematSpatialFusion(self.dim, self.grid, self.dtype, name=f"fusion_{t}")(
                x, backbone_tokens[sources[t]])

        x = fuse(0, x)
        for i in range(1, SIDE_DEPTH):
            x = self.block(f"blocks_{i - 1}")(x, True)
            x = fuse(i, x)
            if i < SIDE_DEPTH - 1:
                x = x + pos
        return x


class LayerNormParams(nn.Module):
    """A LayerNorm's parameters (scale, bias), one set per stream if `streams`."""

    features: int
    streams: int | None = None

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        lead = () if self.streams is None else (self.streams,)
        return {"scale": self.param("scale", nn.initializers.ones, lead + (self.features,)),
                "bias": self.param("bias", nn.initializers.zeros, lead + (self.features,))}


class DenseParams(nn.Module):
    """A Dense layer's parameters (kernel, bias), one set per stream if `streams`."""

    in_features: int
    out_features: int
    streams: int | None = None

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        lead = () if self.streams is None else (self.streams,)
        init = nn.initializers.lecun_normal(batch_axis=tuple(range(len(lead))))
        return {"kernel": self.param("kernel", init, lead + (self.in_features,
                                                             self.out_features)),
                "bias": self.param("bias", nn.initializers.zeros, lead + (self.out_features,))}


def _project_frame(tokens: tuple[jax.Array, ...], norm, dense, *, frames: int, frame: int,
                   grid: int, dtype, epsilon: float) -> jax.Array:
    """Every stream's CLIP feature on one frame, on the side grid, LayerNorm'd (if `norm`)
    and projected: S x (B*F, P, C) -> (B, S, grid^2, D).

    `norm` holds one LayerNorm per stream, stacked; `dense` one Dense per stream when
    its kernel is stacked (S, C, D), else one for all. All streams go through one
    matmul, so a shared kernel's gradient is one sum (one all-reduce, not S).
    """
    def patches(t):
        bf, n, c = t.shape
        return resize_grid(t.reshape(bf // frames, frames, n, c)[:, frame], grid)

    x = jnp.stack([patches(t) for t in tokens], axis=1).astype(dtype)  # (B, S, P, C)
    if norm is not None:
        x = lean_ops.layer_norm(x, norm["scale"][:, None], norm["bias"][:, None], epsilon)
    kernel, bias = dense["kernel"].astype(dtype), dense["bias"].astype(dtype)
    if kernel.ndim == 3:
        return jnp.einsum("bspc,scd->bspd", x, kernel) + bias[:, None]
    return x @ kernel + bias


class TemporalSideNet(_SideNet, kw_only=True):
    """Cross-frame side net: one stream per map entry, block f reads frame f.

    Stream j starts from `first_linear` of its CLIP feature on frame 0, then
    for every later frame f runs side block f and adds a LayerNorm+Dense of the
    same CLIP feature on frame f. Streams share the blocks, so they run as one
    batch. Returns (B, S, 1+grid^2, D).

    The batch axis stays the leading one throughout (streams fold in behind
    it, clip-major): data parallelism shards it, and an axis merged in front
    of it would make the partitioner gather the whole global batch. The CLIP
    projections are rematerialised from the CLIP tokens themselves, so the
    backward pass keeps those (shared with the spatial side net) rather than
    768-wide slices, stacks and normalised copies of them.
    """

    frames: int

    @nn.compact
    def __call__(self, backbone_tokens: Mapping[int, jax.Array]) -> jax.Array:
        tokens = [backbone_tokens[s] for s, _ in self.interaction_map]
        streams, c = len(tokens), tokens[0].shape[-1]
        b = tokens[0].shape[0] // self.frames
        p = self.grid * self.grid
        cls, pos = SideEmbedding(self.dim, self.grid, name="embedding")()
        first_linear = DenseParams(c, self.dim, name="first_linear")()
        fusion_norm = LayerNormParams(c, streams, name="fusion_norm")()
        fusion_proj = DenseParams(c, self.dim, streams, name="fusion_proj")()

        def projected(frame, norm, dense):
            """(B, S, grid^2, D): every stream's CLIP feature on `frame`, projected."""
            return jax.checkpoint(functools.partial(
                _project_frame, frames=self.frames, frame=frame, grid=self.grid,
                dtype=self.dtype, epsilon=1e-5))(tuple(tokens), norm, dense)

        first = projected(0, None, first_linear)
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, streams, 1, self.dim)).astype(first.dtype),
                             first], axis=2) + pos.astype(first.dtype)
        x = x.reshape(b * streams, 1 + p, self.dim)
        x = self.block("blocks_0")(x, True)
        for f in range(1, self.frames):
            x = self.block(f"blocks_{f}")(x, True)
            y = projected(f, fusion_norm, fusion_proj).reshape(
                b * streams, p, self.dim)
            x = jnp.concatenate([x[:, :1], x[:, 1:] + y.astype(x.dtype)], axis=1)
        return x.reshape(b, streams, 1 + p, self.dim)


class Aggregation(nn.Module):
    """Collapse axis 1 of (B, K, L, D): K frames (spatial) or K streams (temporal).

    'mean' and 'mlp' (a learned weight per slice plus a bias: the published
    Conv1d(K->1, kernel 1)) are as published; 'lstm'/'gru' crash in the
    published code, so they follow its intent: one recurrent layer (hidden D)
    over the K axis for every token, keeping the last step's output. 'max' and
    'attention' are the paper's open question ("max pooling vs. attention-based"):
    an elementwise max over K, and a learned query that attends over the K slices
    of every token (multi-head, `heads` heads of width D / heads, as the side net).
    Neither has a weight per slice, so both take any K (e.g. another frame count
    at prediction).
    """

    kind: str
    dtype: jnp.dtype = jnp.float32
    heads: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, k, length, d = x.shape
        if self.kind == "mean":
            return x.mean(axis=1)
        if self.kind == "max":
            return x.max(axis=1)
        if self.kind == "mlp":
            w = self.param("kernel", nn.initializers.lecun_normal(), (k, 1))
            bias = self.param("bias", nn.initializers.zeros, (1,))
            return jnp.einsum("bkld,k->bld", x, w[:, 0].astype(x.dtype)) + bias.astype(x.dtype)
        seq = jnp.moveaxis(x, 1, 2).reshape(b * length, k, d)
        if self.kind == "attention":
            query = self.param("query", nn.initializers.normal(0.02), (1, 1, d))
            pooled = nn.MultiHeadDotProductAttention(
                num_heads=self.heads, dtype=self.dtype, deterministic=True, name="attention")(
                jnp.broadcast_to(query, (b * length, 1, d)).astype(x.dtype), seq)
            return pooled.reshape(b, length, d)
        cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
        if self.kind not in cells:
            raise ValueError(f"unknown aggregation {self.kind!r}; expected one of "
                             f"{AGGREGATIONS}")
        rnn = nn.RNN(cells[self.kind](d, dtype=self.dtype, name="cell"), name="rnn")
        return rnn(seq)[:, -1].reshape(b, length, d)


AGGREGATIONS = ("mean", "mlp", "lstm", "gru", "max", "attention")


def parse_interaction_map(spec: str | Sequence) -> InteractionMap:
    """A published map name ('default', '0'..'7') or a list of 's->t' strings / (s, t) pairs."""
    if isinstance(spec, str) and spec in INTERACTION_MAPS:
        return INTERACTION_MAPS[spec]
    entries = spec.split(",") if isinstance(spec, str) else list(spec)
    pairs = []
    for e in entries:
        try:
            s, t = (int(v) for v in e.split("->")) if isinstance(e, str) else (int(e[0]), int(e[1]))
        except (ValueError, TypeError, IndexError):
            raise ValueError(f"interaction map {spec!r}: entry {e!r} is not 's->t'; known names: "
                             f"{sorted(INTERACTION_MAPS)}") from None
        pairs.append((s, t))
    targets = [t for _, t in pairs]
    if len(set(targets)) != len(targets) or not pairs:
        raise ValueError(f"interaction map {spec!r}: needs at least one entry and distinct "
                         "targets (the published code keeps one source per target)")
    return tuple(pairs)


# Each given as a list of entries, since a name would be looked up in this table itself.
INTERACTION_MAPS: dict[str, InteractionMap] = {
    "default": parse_interaction_map("0->0 3->1 6->2 9->3 11->4".split()),
    "0": parse_interaction_map("0->0 1->1 2->2 3->3 4->4".split()),
    "1": parse_interaction_map("7->0 8->1 9->2 10->3 11->4".split()),
    "2": parse_interaction_map("0->0 3->1 6->2 9->3 11->4".split()),
    "3": parse_interaction_map("3->1 6->2 9->3 11->4".split()),
    "4": parse_interaction_map("6->2 9->3 11->4".split()),
    "5": parse_interaction_map("9->3 11->4".split()),
    "6": parse_interaction_map("11->4".split()),
    "7": parse_interaction_map("0->0 1->1 2->2 4->3 6->4 8->5 10->6 11->7".split()),
}
