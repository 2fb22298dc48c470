"""An fp8 frozen backbone with static scales (an experiment; `VTFPARConfig.clip_fp8`).

The four matmuls of every CLIP vision block (qkv, attention out, fc1, fc2)
get both operands rounded to float8_e4m3fn, each under one per-tensor scale,
then multiplied and rescaled. Because CLIP is frozen, the scales need not be
tracked step by step as in fp8 training (flax's `Fp8DotGeneralOp` keeps an
amax history and recomputes scales, a cost the issue measured as slower than
bf16 on an H100): they are fixed once, by `calibrate`, from the largest
magnitude each matmul saw on a few clips (inputs) and from the weights
themselves (kernels). The patch embedding, attention's softmax(QK^T)V (fused
attention, in the compute dtype) and the text tower stay as they were.

The quantize-dequantize form used here (flax's `fp8_ops.quantize` /
`dequantize` around a plain `dot_general`) is the pattern XLA's GPU compiler
rewrites into cuBLASLt fp8 GEMMs on Hopper; elsewhere it computes exactly the
fp8-rounded products in the compute dtype, so its accuracy can be measured on
a CPU.

The kernels are rounded to fp8 inside the step, from the float32 params, as
the bf16 path casts them there too (about 0.3 GB read per step at ViT-B/16,
~0.1 ms on an H100). Storing them once in fp8 would save most of that and
halve their memory; worth doing only if a GPU measurement shows fp8 pays.

The calibrated magnitudes live in the frozen CLIP tree under
`clip_params['vision_fp8_amax']` (one `input_amax` and `kernel_amax` per
matmul), beside the weights they belong to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import fp8_ops

COLLECTION = "fp8_amax"
PARAMS_KEY = "vision_fp8_amax"
FP8_DTYPE = jnp.float8_e4m3fn
FP8_MAX = float(jnp.finfo(FP8_DTYPE).max)  # 448


def scale_of(amax: jax.Array) -> jax.Array:
    """Per-tensor scale mapping [-amax, amax] onto e4m3's [-448, 448]; 1 for an all-zero tensor."""
    amax = amax.astype(jnp.float32)
    return jnp.where(amax > 0, amax / FP8_MAX, 1.0)


class StaticFp8DotGeneral(nn.Module):
    """A `dot_general` for `nn.Dense(dot_general_cls=...)` with fixed fp8 scales.

    With the `fp8_amax` collection mutable it calibrates instead: it records
    the running max |input| and the kernel's max |w|, and multiplies in full
    precision.
    """

    @nn.compact
    def __call__(self, lhs, rhs, dimension_numbers, precision=None,
                 preferred_element_type=None):
        calibrating = self.is_mutable_collection(COLLECTION)
        if not calibrating and not self.has_variable(COLLECTION, "input_amax"):
            raise ValueError(f"clip_fp8: no calibrated fp8 scale for {'/'.join(self.path)}; "
                             f"calibrate first (vtfpar.calibrate_clip_fp8 adds "
                             f"clip_params[{PARAMS_KEY!r}])")
        input_amax = self.variable(COLLECTION, "input_amax", jnp.zeros, (), jnp.float32)
        kernel_amax = self.variable(COLLECTION, "kernel_amax", jnp.zeros, (), jnp.float32)
        if calibrating:
            seen = jnp.max(jnp.abs(lhs)).astype(jnp.float32)
            input_amax.value = jnp.maximum(input_amax.value, seen)
            kernel_amax.value = jnp.max(jnp.abs(rhs)).astype(jnp.float32)
            return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision,
                                       preferred_element_type)
        dtype = lhs.dtype
        lhs_scale, rhs_scale = scale_of(input_amax.value), scale_of(kernel_amax.value)
        lhs = fp8_ops.dequantize(fp8_ops.quantize(lhs, FP8_DTYPE, lhs_scale, dtype), dtype,
                                 lhs_scale)
        rhs = fp8_ops.dequantize(fp8_ops.quantize(rhs, FP8_DTYPE, rhs_scale, dtype), dtype,
                                 rhs_scale)
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)


def calibrate(tower: nn.Module, vision_params: Mapping[str, Any],
              image_batches: Iterable[jax.Array], collect) -> dict:
    """The `fp8_amax` tree of a fp8 `VisionTower` after running `image_batches` through it.

    Run the batches the model will see in use (a few training clips); the
    largest magnitude over all of them sets each scale, so inputs beyond it
    later are clipped to ±448 · scale.
    """
    amax = {}
    for images in image_batches:
        variables = {"params": vision_params, **({COLLECTION: amax} if amax else {})}
        _, state = tower.apply(variables, images, collect, mutable=[COLLECTION])
        amax = state[COLLECTION]
    if not amax:
        raise ValueError("fp8 calibrate: no image batches given")
    return amax
