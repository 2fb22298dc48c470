"""The fp8 CLIP experiment (models/fp8.py): static-scale e4m3 matmuls and their calibration.

The reference for the rounding is ml_dtypes' float8_e4m3fn (numpy), not our code.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from vtfpar_jax.models import clip, fp8, vtfpar
from vtfpar_jax.models.side_nets import INTERACTION_MAPS

DENSE = nn.Dense(24, use_bias=False, dot_general_cls=fp8.StaticFp8DotGeneral)


def _rounded(x: np.ndarray, amax: float) -> np.ndarray:
    """x on the e4m3 grid of a per-tensor scale amax / 448, saturating, back in float64."""
    scale = amax / 448.0
    q = np.clip(x / scale, -448, 448).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
    return q.astype(np.float64) * scale


@pytest.fixture(scope="module")
def dense_calibrated():
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((5, 7, 16)).astype(np.float32)
    x2 = 3 * rng.standard_normal((4, 16)).astype(np.float32)
    params = DENSE.init(jax.random.PRNGKey(0), x1)["params"]
    amax = None
    for x in (x1, x2):
        variables = {"params": params, **({fp8.COLLECTION: amax} if amax else {})}
        _, state = DENSE.apply(variables, x, mutable=[fp8.COLLECTION])
        amax = state[fp8.COLLECTION]
    return params, amax, x1, x2


def test_calibration_keeps_the_largest_input_and_the_kernel_magnitude(dense_calibrated):
    params, amax, x1, x2 = dense_calibrated
    got = amax["StaticFp8DotGeneral_0"]
    assert float(got["input_amax"]) == pytest.approx(max(np.abs(x1).max(), np.abs(x2).max()))
    assert float(got["kernel_amax"]) == pytest.approx(np.abs(params["kernel"]).max())


def test_matmul_uses_exactly_the_e4m3_rounded_operands(dense_calibrated):
    params, amax, x1, _ = dense_calibrated
    x = 4 * x1  # partly beyond the calibrated range: those entries saturate at ±448·scale
    got = np.asarray(DENSE.apply({"params": params, fp8.COLLECTION: amax}, x), np.float64)
    a = amax["StaticFp8DotGeneral_0"]
    assert (np.abs(x) > float(a["input_amax"])).any()
    kernel = np.asarray(params["kernel"])
    want = _rounded(x, float(a["input_amax"])) @ _rounded(kernel, float(a["kernel_amax"]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    exact = x.astype(np.float64) @ kernel
    assert np.abs(got - exact).max() > 1e-3  # the rounding is really applied
    assert np.isfinite(got).all()


def test_uncalibrated_use_names_the_matmul(dense_calibrated):
    params, *_ = dense_calibrated
    with pytest.raises(ValueError, match="StaticFp8DotGeneral_0.*calibrate"):
        DENSE.apply({"params": params}, np.ones((2, 16), np.float32))


@pytest.fixture(scope="module")
def tiny_setup():
    clip_cfg = clip.tiny()
    cfg = vtfpar.VTFPARConfig(clip=clip_cfg, num_attributes=5, frames=2,
                              spatial_map=INTERACTION_MAPS["0"],
                              temporal_map=INTERACTION_MAPS["0"])
    clip_params = clip.init_params(clip_cfg, jax.random.PRNGKey(0))
    video = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 64, 64, 3))
    return cfg, clip_params, video


def test_fp8_clip_covers_every_block_matmul_and_stays_close(tiny_setup):
    cfg, clip_params, video = tiny_setup
    calibrated = vtfpar.calibrate_clip_fp8(cfg, clip_params, [video])
    amax = calibrated[fp8.PARAMS_KEY]
    deepest = max(cfg.clip_sources)
    assert sorted(amax) == [f"layers_{i}" for i in range(deepest)]
    for block in amax.values():
        leaves = jax.tree_util.tree_flatten_with_path(block)[0]
        # (..., 'StaticFp8DotGeneral_0', 'input_amax' | 'kernel_amax') per matmul
        assert {"/".join(k.key for k in path[:-2]) for path, _ in leaves} == {
            "attn/qkv", "attn/out", "fc1", "fc2"}
    fp8_cfg = dataclasses.replace(cfg, clip_fp8=True)
    ref = vtfpar.clip_tokens(cfg, clip_params, video)[deepest]
    got = vtfpar.clip_tokens(fp8_cfg, calibrated, video)[deepest]
    rel = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
    # e4m3 keeps 3 mantissa bits: a few per cent after 4 blocks, not zero, not garbage.
    assert 1e-3 < rel < 0.15, rel
    # Patch embedding and ln_pre (index 0) are not quantised.
    np.testing.assert_array_equal(vtfpar.clip_tokens(fp8_cfg, calibrated, video)[0],
                                  vtfpar.clip_tokens(cfg, clip_params, video)[0])


def test_fp8_clip_errors_are_clear(tiny_setup):
    cfg, clip_params, video = tiny_setup
    fp8_cfg = dataclasses.replace(cfg, clip_fp8=True)
    with pytest.raises(ValueError, match="vision_fp8_amax.*calibrate_clip_fp8"):
        vtfpar.clip_tokens(fp8_cfg, clip_params, video)
    calibrated = vtfpar.calibrate_clip_fp8(cfg, clip_params, [video])
    with pytest.raises(ValueError, match="clip_fp8 needs a frozen CLIP"):
        vtfpar.clip_tokens(fp8_cfg, calibrated, video, frozen=False)
    with pytest.raises(ValueError, match="no image batches"):
        vtfpar.calibrate_clip_fp8(cfg, clip_params, [])
