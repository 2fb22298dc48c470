"""The attention option (models/attention.py) on a CPU: what runs where, and clear refusals.

cuDNN itself cannot run here; the deviceless GPU compile (tests/test_aot.py, where
`make aot-venv` installed the CUDA compiler) checks that the step calls it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtfpar_jax.models import attention

B, T, H, D = 2, 9, 3, 8  # an odd token count, as CLIP's 197


def qkv(dtype=jnp.float32):
    k = jax.random.split(jax.random.key(0), 3)
    return tuple(jax.random.normal(key, (B, T, H, D)).astype(dtype) for key in k)


def reference(q, k, v, causal):
    """softmax(q k^T / sqrt(D)) v, written out in float64."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D)
    if causal:
        logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("implementation", ["xla", "auto"])
@pytest.mark.parametrize("causal", [False, True])
def test_cpu_implementations_compute_attention(implementation, causal):
    q, k, v = qkv()
    got = attention.dot_product_attention(q, k, v, causal=causal, implementation=implementation)
    np.testing.assert_allclose(got, reference(q, k, v, causal), atol=1e-5, rtol=1e-5)


def test_bfloat16_auto_runs_on_cpu():
    """'auto' resolves at lowering: a CPU program gets XLA's attention, whether or not this
    JAX could also lower the cuDNN branch for a GPU."""
    q, k, v = qkv(jnp.bfloat16)
    got = jax.jit(lambda *a: attention.dot_product_attention(*a, implementation="auto"))(q, k, v)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), reference(q, k, v, False),
                               atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_odd_lengths_padded_and_masked_compute_the_same(causal):
    """The cuDNN path's padding to an even length, run with XLA's kernel: the extra token
    is masked out as a key and dropped as a query, in values and in gradients."""
    q, k, v = qkv()

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * jnp.arange(D))

    plain = lambda q, k, v: attention.dot_product_attention(  # noqa: E731
        q, k, v, causal=causal, implementation="xla")
    padded = lambda q, k, v: attention.padded_to_even(q, k, v, causal, "xla")  # noqa: E731
    assert padded(q, k, v).shape == (B, T, H, D)
    np.testing.assert_allclose(padded(q, k, v), plain(q, k, v), atol=1e-6)
    for g, w in zip(jax.grad(lambda *a: loss(padded, *a), (0, 1, 2))(q, k, v),
                    jax.grad(lambda *a: loss(plain, *a), (0, 1, 2))(q, k, v), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_cudnn_refusals_name_the_reason():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="model.attention='cudnn' cannot run: .*bfloat16"):
        attention.dot_product_attention(q, k, v, implementation="cudnn")
    odd_heads = jnp.zeros((B, T, H, 12), jnp.bfloat16)
    assert "multiple of 8" in attention.cudnn_refusal(odd_heads)
    with pytest.raises(ValueError, match="expected one of"):
        attention.dot_product_attention(q, k, v, implementation="flash")


def test_cudnn_without_a_cuda_jax_is_refused():
    q = jnp.zeros((B, T, H, D), jnp.bfloat16)
    if attention.cudnn_refusal(q) is None:
        pytest.skip("this JAX has the CUDA plugin (the aot venv): nothing to refuse")
    assert "jax[cuda13]" in attention.cudnn_refusal(q)
