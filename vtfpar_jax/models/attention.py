"""Scaled dot-product attention, with the implementation as a model option.

`model.attention`:
    auto   cuDNN flash attention where the step is lowered for an NVIDIA GPU and
           the compute dtype allows it (bfloat16/float16, head dim a multiple of
           8); XLA's attention everywhere else (CPU, TPU, float32). The choice is
           made when the step is lowered (`jax.lax.platform_dependent`), not from
           the host's default backend, so a deviceless compile for an H200 on a
           CPU-only machine gets exactly the program an H200 gets.
    xla    XLA's attention everywhere. It keeps the (B, heads, T, T)
           probabilities for the backward pass.
    cudnn  cuDNN flash attention, or a clear error where it cannot run (compute
           dtype, head dim, a JAX without CUDA; a program lowered for a CPU by a
           CUDA-enabled JAX fails in lowering, naming the cuDNN primitive). It
           keeps only q, k, v, the output and per-row softmax statistics.

Inputs are (B, T, heads, head_dim), as `jax.nn.dot_product_attention` takes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "cudnn")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
# cuDNN's flash attention takes head dims up to 128 before Hopper (256 on Hopper);
# the lowering target is unknown at trace time, so the bound that holds everywhere.
CUDNN_MAX_HEAD_DIM = 128


def cudnn_refusal(q: jax.Array) -> str | None:
    """Why cuDNN flash attention cannot take these queries, or None if it can."""
    if q.dtype not in CUDNN_DTYPES:
        return (f"it needs bfloat16 or float16 compute, and this attention computes in "
                f"{q.dtype} (set model.dtype / model.clip_dtype)")
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
        return (f"it needs a head dim that is a multiple of 8 and at most "
                f"{CUDNN_MAX_HEAD_DIM}, and this one is {head_dim}")
    if not _jax_has_cuda():
        return "this JAX has no CUDA plugin (install jax[cuda13])"
    return None


def _jax_has_cuda() -> bool:
    # jax traces cuDNN attention only where its CUDA plugin (and so cuDNN) is
    # installed; without it no program can be lowered for an NVIDIA GPU anyway.
    from jax._src.cudnn import fused_attention_stablehlo
    return fused_attention_stablehlo.cuda_versions is not None


def _xla(q, k, v, causal: bool) -> jax.Array:
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")


def _cudnn(q, k, v, causal: bool) -> jax.Array:
    if q.shape[1] % 2 == 0:
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")
    # jax 0.11 refuses odd lengths in training (its check counts the absent bias
    # as one): pad to an even length and mask the extra token by sequence length.
    return padded_to_even(q, k, v, causal, "cudnn")


def padded_to_even(q, k, v, causal: bool, implementation: str) -> jax.Array:
    """Attention over T tokens run as T+1 with the last one masked out, T odd."""
    t = q.shape[1]
    pad = ((0, 0), (0, 1), (0, 0), (0, 0))
    q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    lengths = jnp.full((q.shape[0],), t, jnp.int32)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=causal, query_seq_lengths=lengths,
                                       key_value_seq_lengths=lengths,
                                       implementation=implementation)
    return out[:, :t]


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False,
                          implementation: str = "auto") -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) v over (B, T, heads, head_dim) inputs."""
    if implementation == "xla":
        return _xla(q, k, v, causal)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"model.attention={implementation!r}; expected one of "
                         f"{IMPLEMENTATIONS}")
    refusal = cudnn_refusal(q)
    if implementation == "cudnn":
        if refusal:
            raise ValueError(f"model.attention='cudnn' cannot run: {refusal}; use 'auto' or "
                             "'xla'")
        return _cudnn(q, k, v, causal)
    if refusal:
        return _xla(q, k, v, causal)
    return jax.lax.platform_dependent(q, k, v, cuda=lambda *a: _cudnn(*a, causal),
                                      default=lambda *a: _xla(*a, causal))

