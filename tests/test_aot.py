"""Deviceless compiles for GPUs and TPU slices (vtfpar_jax/tools/aot.py).

These need the CUDA and TPU compilers (`make aot-venv`: jax[cuda13] and jax[tpu],
several GB), which the default test install leaves out, so they skip there. Run:
    JAX_PLATFORMS=cpu .venv-aot/bin/python -m pytest tests/test_aot.py
A tiny CLIP and a narrow model keep each compile to seconds; the ViT-B/16 figures
are in docs/performance.md.
"""

from __future__ import annotations

import pytest

pytest.importorskip("jax_plugins.xla_cuda13", reason="needs the aot venv (make aot-venv)")

from vtfpar_jax.tools import aot, compiled_stats  # noqa: E402

SMALL = dict(frames=2, dtype="bfloat16", dim=240, num_attributes=5)
CUDNN_FWD, CUDNN_BWD = "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"


@pytest.fixture(scope="module")
def h200():
    return aot.compile_report("h200", "tiny", batch=4, **SMALL)


def test_h200_step_calls_cudnn_flash_attention(h200):
    """auto picks cuDNN when lowering for the GPU: forward in training and prediction,
    backward in training; CLIP's blocks included (4 tiny CLIP + 7 spatial + 2 temporal +
    fusion = 14 attention calls in prediction)."""
    train, predict = h200["train"]["kernels"], h200["predict"]["kernels"]
    assert predict.get(CUDNN_FWD) == 4 + 7 + 2 + 1
    assert train.get(CUDNN_FWD, 0) >= predict[CUDNN_FWD] and train.get(CUDNN_BWD, 0) > 0
    assert h200["train"]["memory"]["temp_size_in_bytes"] > 0
    assert not h200["train"]["collectives"]


def test_xla_attention_compiles_without_cudnn():
    r = aot.compile_report("h200", "tiny", batch=4, attention="xla", **SMALL)
    for program in ("train", "predict"):
        assert not any(k.startswith("__cudnn$fmha") for k in r[program]["kernels"]), program


@pytest.mark.parametrize("target", ["h200x2", "tpu-v5e:2x2"])
def test_multi_device_steps_only_all_reduce(target):
    if target.startswith("tpu"):
        pytest.importorskip("libtpu")
    r = aot.compile_report(target, "tiny", batch=8, **SMALL)
    assert r["batch_per_device"] == 8 // r["devices"]
    for program in ("train", "predict"):
        moved = set(r[program]["collectives"]) & set(compiled_stats.NON_REDUCE_COLLECTIVES)
        assert not moved, (program, moved)
    assert "all-reduce" in r["train"]["collectives"]


def test_unknown_target_is_named():
    with pytest.raises(aot.TargetError, match="'a100': expected h100, h200"):
        aot.parse_target("a100")
