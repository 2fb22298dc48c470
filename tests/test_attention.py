"""The attention option (models/attention.py): what runs where, clear refusals, the fallback.

On a CPU cuDNN itself cannot run: the deviceless GPU compile (tests/test_aot.py, where
`make aot-venv` installed the CUDA compiler) checks that the step calls it, and the tests
marked `gpu` (benchmarks/gpu_check.sh runs them) compare it with XLA's attention on a GPU.
This module imports neither TensorFlow nor ml_collections: the GPU machine has neither.
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


@pytest.fixture
def gpu_host(monkeypatch):
    """This host as one with a GPU and a CUDA JAX, probes forgotten before and after."""
    monkeypatch.setattr(attention, "_local_gpu", lambda: True)
    monkeypatch.setattr(attention, "_cudnn_missing_from_jax", lambda: None)
    attention._cudnn_runs_here.cache_clear()
    monkeypatch.setattr(attention, "FELL_BACK", [])
    yield
    attention._cudnn_runs_here.cache_clear()


def _step(implementation):
    """Attention inside a jitted, rematerialised gradient, as in the train step."""
    def loss(q, k, v):
        out = jax.checkpoint(lambda *a: attention.dot_product_attention(
            *a, implementation=implementation))(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * jnp.arange(D))
    return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))


def test_auto_falls_back_to_xla_with_one_warning_where_cudnn_cannot_run(
        gpu_host, monkeypatch, caplog):
    """cuDNN fails as an unsupported GPU makes it fail (XLA's compile raises): 'auto'
    computes with XLA's attention, warns once, probes each shape once."""
    probed = []

    def cudnn_fails(q, k, v, causal):
        probed.append(q.shape)
        raise jax.errors.JaxRuntimeError(
            "INTERNAL: cuDNN does not support this GPU's compute capability")

    monkeypatch.setattr(attention, "_cudnn", cudnn_fails)
    q, k, v = qkv(jnp.bfloat16)
    want = _step("xla")(q, k, v)
    with caplog.at_level("DEBUG", logger=attention.__name__):
        for inputs in ((q, k, v), (q, k, v), tuple(x[:, :4] for x in (q, k, v))):
            got = _step("auto")(*inputs)
        jax.tree.map(np.testing.assert_array_equal, _step("auto")(q, k, v), want)
    assert len(probed) == 2   # one probe per shape, cached
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "JaxRuntimeError" in warnings[0].getMessage()
    assert "using XLA's attention" in warnings[0].getMessage()
    assert [entry[0][1] for entry in attention.FELL_BACK] == [T, 4]
    assert got[0].shape == ()


def test_explicit_cudnn_fails_loudly(gpu_host, monkeypatch):
    def cudnn_fails(q, k, v, causal):
        raise jax.errors.JaxRuntimeError("INTERNAL: cuDNN cannot run")

    monkeypatch.setattr(attention, "_cudnn", cudnn_fails)
    with pytest.raises(jax.errors.JaxRuntimeError, match="cuDNN cannot run"):
        _step("cudnn")(*qkv(jnp.bfloat16))


def test_auto_keeps_cudnn_where_the_probe_runs(gpu_host, monkeypatch, caplog):
    """A probe that compiles and runs leaves the choice to the lowering, warning nothing
    (the kernel here is XLA's, standing in for cuDNN on a CPU)."""
    monkeypatch.setattr(attention, "_cudnn", lambda q, k, v, causal: attention.padded_to_even(
        q, k, v, causal, "xla"))
    q, k, v = qkv(jnp.bfloat16)
    with caplog.at_level("WARNING", logger=attention.__name__):
        _step("auto")(q, k, v)
    assert attention._cudnn_runs_here.cache_info().currsize == 1
    assert not attention.FELL_BACK and not caplog.records


def test_cuda_support_is_asked_of_public_jax_once(monkeypatch):
    """Where JAX cannot trace cuDNN attention (no CUDA plugin), the public call says so;
    the answer is kept, and 'auto' computes with XLA's attention."""
    calls = []
    public = jax.nn.dot_product_attention

    def no_cudnn(*args, implementation=None, **kwargs):
        if implementation == "cudnn":
            calls.append(1)
            raise RuntimeError("cuDNN is not detected.")
        return public(*args, implementation=implementation, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", no_cudnn)
    attention._cudnn_missing_from_jax.cache_clear()
    try:
        q, k, v = qkv(jnp.bfloat16)
        for _ in range(2):
            assert "cuDNN is not detected" in attention.cudnn_refusal(q)
        got = attention.dot_product_attention(q, k, v, implementation="auto")
        np.testing.assert_array_equal(got, attention._xla(q, k, v, False))
        assert len(calls) == 1
    finally:
        attention._cudnn_missing_from_jax.cache_clear()
    assert "jax._src" not in open(attention.__file__).read()


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_cudnn_matches_xla_at_197_tokens_in_bfloat16(causal):
    """On an NVIDIA GPU: cuDNN flash attention over CLIP's 197 tokens (run as 198, the
    extra one masked by sequence lengths) against XLA's, values and gradients, bfloat16;
    and 'auto''s probe passes at that shape."""
    shape = (4, 197, 12, 64)
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, shape).astype(jnp.bfloat16) for key in keys[:3])
    weights = jax.random.normal(keys[3], shape)

    def run(implementation):
        def loss(q, k, v):
            out = attention.dot_product_attention(q, k, v, causal=causal,
                                                  implementation=implementation)
            return jnp.sum(out.astype(jnp.float32) * weights), out
        step = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))
        (_, out), grads = step(q, k, v)
        return step, np.asarray(out, np.float32), [np.asarray(g, np.float32) for g in grads]

    cudnn_step, cudnn_out, cudnn_grads = run("cudnn")
    assert "__cudnn$fmha" in cudnn_step.lower(q, k, v).compile().as_text()
    _, xla_out, xla_grads = run("xla")
    np.testing.assert_allclose(cudnn_out, xla_out, atol=2e-2, rtol=2e-2)
    for got, want in zip(cudnn_grads, xla_grads, strict=True):
        assert np.all(np.isfinite(got))
        assert np.max(np.abs(got - want)) <= 2e-2 * np.max(np.abs(want))
    assert attention._cudnn_runs_here(shape, q.dtype, causal)
    assert not attention.FELL_BACK
