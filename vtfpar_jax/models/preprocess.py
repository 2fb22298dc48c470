"""Frames as the model sees them, computed on the device from the uint8 frames the host decoded.

The host pipeline (`input_pipeline.pipeline`) only decodes JPEGs: it sends
(B, T, h, w, 3) uint8, a quarter of the bytes of float32. Inside the jitted
train step and evaluation forward, `model_input` then does what the published
transforms do, in their order (docs/published-model.md §1):

1. resize to the model's (H, W), bilinear, aspect not kept, filtering when it
   shrinks (PIL's bilinear; `jax.image.resize` 'linear' with antialias is the
   same kernel as `tf.image.resize(..., antialias=True)`, which the host used);
2. round to integers in [0, 255], as the published transforms hold a uint8 PIL
   image at this point;
3. training only, drawn independently for every frame: zero-pad `pad_pixels`
   on every side, crop (H, W) back at a uniform offset in [0, 2 * pad_pixels],
   mirror left-right with probability 0.5;
4. (x / 255 - mean) / std with the named statistics.

Every op acts per example, so a batch sharded over devices stays sharded (no
collective). The randomness is the step's JAX key: a resumed run draws what an
uninterrupted one does.

Frames that are floating point already are the model's input (normalised, at
its size: what `vtfpar_jax.inference.predict` and the PyTorch comparison feed); they are
used as given.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vtfpar_jax.models.normalization import NORMALIZATIONS, normalize

PAD_PIXELS = 10  # published, at 224 px; scale it with smaller frames


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """What turns decoded frames into model input (config.input's fields of the same names).

    The defaults are the published recipe.
    """

    normalization: str = "published"
    augment: bool = True
    pad_pixels: int = PAD_PIXELS

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: expected one of "
                             f"{sorted(NORMALIZATIONS)}")
        if self.pad_pixels < 0:
            raise ValueError(f"pad_pixels={self.pad_pixels}: expected >= 0")

    @classmethod
    def from_config(cls, input_config) -> Preprocess:
        """From a config's `input` ConfigDict (or a dict of the same fields)."""
        return cls(normalization=input_config.get("normalization", "published"),
                   augment=bool(input_config.get("augment", True)),
                   pad_pixels=int(input_config.get("pad_pixels", PAD_PIXELS)))

    def check(self, image_size: tuple[int, int]) -> None:
        """Refuse a crop padding the frames of `image_size` cannot take."""
        if self.augment and self.pad_pixels > min(image_size):
            raise ValueError(f"pad_pixels={self.pad_pixels}: expected 0..{min(image_size)} "
                             f"for frames of {image_size[0]}x{image_size[1]}")


def resize(video: jax.Array, image_size: tuple[int, int]) -> jax.Array:
    """(..., h, w, 3) uint8 -> (..., H, W, 3) float32 whole numbers in [0, 255]."""
    frames = video.astype(jnp.float32)
    if tuple(video.shape[-3:-1]) != tuple(image_size):
        frames = jax.image.resize(frames, (*video.shape[:-3], *image_size, 3), method="linear",
                                  antialias=True)
    return jnp.clip(jnp.round(frames), 0.0, 255.0)


def augment(frames: jax.Array, rng: jax.Array, pad_pixels: int) -> jax.Array:
    """(B, T, H, W, 3): each frame zero-padded, cropped back at a random offset, maybe mirrored."""
    *lead, height, width, channels = frames.shape
    crop_rng, flip_rng = jax.random.split(rng)
    offsets = jax.random.randint(crop_rng, (*lead, 2), 0, 2 * pad_pixels + 1)
    flips = jax.random.bernoulli(flip_rng, 0.5, lead)
    pad = [(0, 0)] * len(lead) + [(pad_pixels, pad_pixels)] * 2 + [(0, 0)]
    padded = jnp.pad(frames, pad)

    def crop(frame, offset):
        return jax.lax.dynamic_slice(frame, (offset[0], offset[1], 0), (height, width, channels))

    for _ in lead:   # one vmap per leading axis: the batch axis stays the sharded one
        crop = jax.vmap(crop)
    cropped = crop(padded, offsets)
    return jnp.where(flips[..., None, None, None], cropped[..., ::-1, :], cropped)


def model_input(video: jax.Array, image_size: tuple[int, int], preprocess: Preprocess,
                rng: jax.Array | None = None) -> jax.Array:
    """(B, T, h, w, 3) decoded frames -> (B, T, H, W, 3) float32 model input.

    Augments (training) when `rng` is given and `preprocess.augment` is on.
    Floating-point frames are model input already and returned as they are.
    """
    if jnp.issubdtype(video.dtype, jnp.floating):
        if tuple(video.shape[-3:-1]) != tuple(image_size):
            raise ValueError(f"float video {video.shape}: model input must be "
                             f"{image_size[0]}x{image_size[1]}; send uint8 frames to resize")
        return video
    if video.dtype != jnp.uint8:
        raise TypeError(f"video of dtype {video.dtype}: expected uint8 frames (or float "
                        "model input)")
    frames = resize(video, image_size)
    if rng is not None and preprocess.augment:
        frames = augment(frames, rng, preprocess.pad_pixels)
    return normalize(frames, preprocess.normalization)
