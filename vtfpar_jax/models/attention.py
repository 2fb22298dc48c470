"""Scaled dot-product attention, with the implementation as a model option.

`model.attention` (docs/performance.md, "What changed in the side networks", has the
whole story: what each keeps, the odd-length padding, the probe):
    auto   cuDNN flash attention where the step is lowered for an NVIDIA GPU and the
           compute dtype allows it (bfloat16/float16, head dim a multiple of 8), XLA's
           attention everywhere else; chosen when the step is lowered
           (`jax.lax.platform_dependent`), so a deviceless compile for an H200 gets what an
           H200 gets. On a host with a GPU each shape is first probed (`_cudnn_runs_here`):
           where cuDNN cannot run it, XLA's attention does, with one warning.
    xla    XLA's attention everywhere.
    cudnn  cuDNN flash attention, or a clear error where it cannot run.

Inputs are (B, T, heads, head_dim), as `jax.nn.dot_product_attention` takes them.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("auto", "xla", "cudnn")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
# cuDNN's flash attention takes head dims up to 128 before Hopper (256 on Hopper);
# the lowering target is unknown at trace time, so the bound that holds everywhere.
CUDNN_MAX_HEAD_DIM = 128

log = logging.getLogger(__name__)
# (shape, dtype, causal) of the attentions that fell back to XLA on this host: the
# first one is warned about, the others are logged at debug level.
FELL_BACK: list[tuple] = []


def cudnn_refusal(q: jax.Array) -> str | None:
    """Why cuDNN flash attention cannot take these queries, or None if it can."""
    if q.dtype not in CUDNN_DTYPES:
        return (f"it needs bfloat16 or float16 compute, and this attention computes in "
                f"{q.dtype} (set model.dtype / model.backbone_dtype)")
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
        return (f"it needs a head dim that is a multiple of 8 and at most "
                f"{CUDNN_MAX_HEAD_DIM}, and this one is {head_dim}")
    return _cudnn_missing_from_jax()


@functools.cache
def _cudnn_missing_from_jax() -> str | None:
    """Why this JAX cannot trace cuDNN attention, or None: asked once per process.

    Asked of the public `jax.nn.dot_product_attention`, which refuses to trace the
    cuDNN kernel where JAX has no CUDA plugin (and so no cuDNN); no program can be
    lowered for an NVIDIA GPU there anyway.
    """
    q = jax.ShapeDtypeStruct((1, 128, 1, 64), jnp.bfloat16)
    try:
        jax.eval_shape(lambda q: jax.nn.dot_product_attention(q, q, q, implementation="cudnn"),
                       q)
    except Exception as error:  # whatever this JAX raises, it cannot trace the kernel
        return f"this JAX has no cuDNN attention ({error}); install jax[cuda13]"
    return None


@functools.cache
def _local_gpu() -> bool:
    """Whether this host runs programs on a GPU (where a probe can run)."""
    return jax.default_backend() == "gpu"


@functools.cache
def _cudnn_runs_here(shape: tuple[int, ...], dtype: np.dtype, causal: bool) -> bool:
    """Whether cuDNN attention compiles and runs, forward and backward, at this shape
    on this host's GPU: compiled and run once, alone, with batch 1.

    The cuDNN kernels are chosen when XLA compiles the whole step, so an error there
    would fail the step; this probe meets it first, outside the step's trace.
    """
    zeros = np.zeros((1, *shape[1:]), dtype)

    def loss(q, k, v):
        return jnp.sum(_cudnn(q, k, v, causal).astype(jnp.float32))

    try:
        with jax.ensure_compile_time_eval():  # run now, not as part of the step traced
            jax.block_until_ready(jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(
                zeros, zeros, zeros))
    except Exception as error:  # any failure of the kernel: XLA's attention runs instead
        report = log.debug if FELL_BACK else log.warning
        report("model.attention='auto': cuDNN flash attention cannot run on this GPU at "
               "q shape %s %s (%s: %s); using XLA's attention there instead (set "
               "model.attention='cudnn' to see the error fail the run)", shape,
               np.dtype(dtype).name, type(error).__name__, error)
        FELL_BACK.append((shape, np.dtype(dtype).name, causal))
        return False
    return True


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
    if refusal or (_local_gpu() and not _cudnn_runs_here(q.shape, q.dtype, causal)):
        return _xla(q, k, v, causal)
    return jax.lax.platform_dependent(q, k, v, cuda=lambda *a: _cudnn(*a, causal),
                                      default=lambda *a: _xla(*a, causal))

