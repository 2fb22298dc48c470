"""Preprocessing on the device (vtfpar_jax.models.preprocess) against what the host did in
TensorFlow.

The reference is the float path the input pipeline ran until the host only
decoded: `tf.image.resize` bilinear (antialiased when shrinking), rounded to
[0, 255], zero pad + random crop + flip per frame, then (x / 255 - mean) / std.
"""

from __future__ import annotations

import io

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from input_pipeline import synthetic_figures
from vtfpar_jax.models import preprocess


def _tf_reference(frame: np.ndarray, size: tuple[int, int],
                  normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """The host path as it was: one (h, w, 3) uint8 frame -> (float32 model input, the
    resized values before rounding)."""
    mean, std = (tf.constant(v, tf.float32) for v in preprocess.NORMALIZATIONS[normalization])
    shrinks = frame.shape[0] > size[0] or frame.shape[1] > size[1]
    resized = tf.image.resize(frame, size, method="bilinear", antialias=shrinks)
    image = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
    return ((image / 255.0 - mean) / std).numpy(), resized.numpy()


def _frames(stored: tuple[int, int], count: int, grain: float = 8.0) -> np.ndarray:
    """(count, h, w, 3) uint8: drawn pedestrian frames with photo-like grain, JPEG-decoded."""
    _, jpegs = synthetic_figures.draw_tracklet(np.random.default_rng(stored), stored, count,
                                               grain)
    return np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])


@pytest.mark.parametrize("stored,size,normalization", [
    ((256, 128), (224, 224), "published"),   # MARS: shrinks the height, enlarges the width
    ((64, 32), (48, 48), "clip"),            # the demo
    ((32, 16), (48, 48), "published"),       # the smoke config: enlarges only
    ((64, 32), (64, 32), "published"),       # no resize
    ((240, 320), (112, 96), "clip"),         # shrinks both
])
def test_evaluation_input_equals_the_tensorflow_host_path(stored, size, normalization):
    """Equal to 1e-5, but where the resized value is a rounding tie (k + 0.5: a 2x
    enlargement averages two pixels) that float32 sums in another order put a hair
    either side of: there the two differ by exactly one level of 255."""
    frames = _frames(stored, 4)
    video = frames.reshape(2, 2, *stored, 3)
    got = np.asarray(preprocess.model_input(
        video, size, preprocess.Preprocess(normalization, augment=False)))
    want, resized = (np.stack(x) for x in zip(*(_tf_reference(f, size, normalization)
                                                 for f in frames), strict=True))
    assert got.dtype == np.float32 and got.shape == (2, 2, *size, 3)
    got = got.reshape(want.shape)
    std = np.asarray(preprocess.NORMALIZATIONS[normalization][1])
    levels = np.abs(got - want) * std * 255
    differ = np.abs(got - want) > 1e-5
    assert np.allclose(levels[differ], 1.0, atol=1e-3), "a difference that is not one level"
    tie = np.abs(resized - np.floor(resized) - 0.5) < 1e-3
    assert tie[differ].all(), "a one-level difference away from a rounding tie"
    assert differ.mean() < 1e-2   # 0.06 % at MARS's geometry, 0.5 % at the smoke test's


def _crop_and_flip(got: np.ndarray, plain: np.ndarray, pad: int, fill: float):
    """The (dy, dx, flipped) with which `got` is a crop of padded `plain`, or None."""
    height, width = plain.shape[:2]
    padded = np.pad(plain, ((pad, pad), (pad, pad), (0, 0)), constant_values=fill)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + height, dx:dx + width]
            for flipped in (False, True):
                if np.array_equal(got, crop[:, ::-1] if flipped else crop):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("pad", [0, 1, 3])
def test_augmentation_is_a_bounded_crop_maybe_mirrored_drawn_uniformly(pad):
    """Each frame is a crop of its zero-padded plain frame within pad_pixels, maybe
    mirrored (the host's tf.slice of tf.pad, then tf.reverse); offsets uniform in
    [0, 2 pad] and flips at p = 0.5, independently per frame, as the host drew them."""
    size = (20, 12)
    rng = np.random.default_rng(pad)   # noise frames: every crop and flip is told apart
    video = rng.integers(0, 256, (40, 6, *size, 3), np.uint8)
    options = preprocess.Preprocess("published", augment=True, pad_pixels=pad)
    plain = np.asarray(preprocess.model_input(video, size, options))
    got = np.asarray(preprocess.model_input(video, size, options, rng=jax.random.PRNGKey(3)))
    draws = [_crop_and_flip(g, p, pad, fill=-1.0)   # zero padding, normalised: -1
             for g, p in zip(got.reshape(-1, *size, 3), plain.reshape(-1, *size, 3),
                             strict=True)]
    assert None not in draws
    flips = np.mean([flipped for *_, flipped in draws])
    assert 0.43 < flips < 0.57   # 240 frames: 0.5 +- 2.2 standard deviations
    offsets = {(dy, dx) for dy, dx, _ in draws}
    assert offsets == {(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}


def test_augmentation_follows_the_key_and_evaluation_has_none():
    video = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 8, 3), np.uint8)
    options = preprocess.Preprocess(pad_pixels=2)
    draw = lambda seed: np.asarray(preprocess.model_input(   # noqa: E731
        video, (16, 8), options, rng=jax.random.PRNGKey(seed)))
    np.testing.assert_array_equal(draw(0), draw(0))
    assert not np.array_equal(draw(0), draw(1))
    plain = np.asarray(preprocess.model_input(video, (16, 8), options))
    no_augment = preprocess.Preprocess(augment=False)
    np.testing.assert_array_equal(
        np.asarray(preprocess.model_input(video, (16, 8), no_augment,
                                          rng=jax.random.PRNGKey(0))), plain)


def test_float_frames_are_model_input_and_bad_options_are_named():
    model_input = np.zeros((1, 2, 16, 8, 3), np.float32)
    assert preprocess.model_input(model_input, (16, 8), preprocess.Preprocess()) is model_input
    with pytest.raises(ValueError, match="model input must be 32x32"):
        preprocess.model_input(model_input, (32, 32), preprocess.Preprocess())
    with pytest.raises(TypeError, match="int32"):
        preprocess.model_input(model_input.astype(np.int32), (16, 8), preprocess.Preprocess())
    with pytest.raises(ValueError, match="normalization='imagenet'"):
        preprocess.Preprocess("imagenet")
    with pytest.raises(ValueError, match="pad_pixels=40: expected 0..16"):
        preprocess.Preprocess(pad_pixels=40).check((32, 16))
    preprocess.Preprocess(pad_pixels=40, augment=False).check((32, 16))
    assert preprocess.Preprocess.from_config({"normalization": "clip", "augment": False}) == \
        preprocess.Preprocess("clip", augment=False)
