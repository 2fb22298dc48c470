"""Deterministic clip corruptions for robustness studies, five severities each.

    video = corrupt_batch(video_uint8, tracklet_indices, "motion_blur", severity=3, seed=0)

A corruption acts on the uint8 frames of one tracklet, (T, H, W, 3), at the
size evaluation decodes them (`input_pipeline.pipeline.eval_batches`), before
the device resizes and normalises them. Severity 0 is the clip itself.
Everything random is drawn from (seed, corruption, tracklet index), never from
the severity, so a rerun gives the same clips bit for bit. Lengths scale with
the frame height. What each severity of each corruption is, and what stays
fixed as the severity grows: docs/experiments.md, "The corruptions".

A new corruption is one more `Corruption` in `CORRUPTIONS`: a name, its five
levels, and a function (clip, level, rng) -> clip.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import signal

from vtfpar_jax.errors import UserError, nearest

SEVERITIES = (1, 2, 3, 4, 5)


class CorruptionError(UserError, ValueError):
    """An unknown corruption name or severity; the message lists the valid ones."""


@dataclasses.dataclass(frozen=True)
class Corruption:
    """One corruption: `apply(clip, level, rng)` at `levels[severity - 1]`."""

    name: str
    unit: str                       # what a level is, for tables and robustness.json
    levels: tuple[float, ...]       # severities 1..5
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


# --- occlusion ------------------------------------------------------------------


def occluder_size(height: int, width: int, share: float,
                  rng: np.random.Generator) -> tuple[int, int]:
    """(rows, cols) of a rectangle covering `share` of an height x width frame.

    The width is drawn; the rows are the nearest whole number to the area
    asked, so the area is right to within half a row of the rectangle.
    """
    min_cols = max(1, math.ceil(share * width))
    cols = int(rng.integers(min_cols, width + 1))
    rows = min(height, max(1, round(share * height * width / cols)))
    return rows, cols


def _occlude(clip: np.ndarray, share: float, rng: np.random.Generator,
             moving: bool) -> np.ndarray:
    t, h, w, _ = clip.shape
    rows, cols = occluder_size(h, w, share, rng)
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    start = np.array([rng.integers(0, h - rows + 1), rng.integers(0, w - cols + 1)])
    end = np.array([rng.integers(0, h - rows + 1), rng.integers(0, w - cols + 1)]) if moving \
        else start
    out = clip.copy()
    for f in range(t):
        top, left = np.rint(start + (end - start) * (f / max(t - 1, 1))).astype(int)
        out[f, top:top + rows, left:left + cols] = colour
    return out


# --- blur -----------------------------------------------------------------------


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def motion_blur_kernel(length: int, angle: float) -> np.ndarray:
    """A (length, length) kernel summing to one: a line `length` pixels long through
    the centre at `angle` radians, drawn by bilinear splatting of points along it."""
    centre = (length - 1) / 2
    steps = np.linspace(-centre, centre, 16 * length)
    ys, xs = centre + steps * np.sin(angle), centre + steps * np.cos(angle)
    kernel = np.zeros((length, length))
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = np.minimum(y0 + dy, length - 1), np.minimum(x0 + dx, length - 1)
            np.add.at(kernel, (yi, xi), wy * wx)
    kernel[kernel < 1e-9] = 0.0
    return kernel / kernel.sum()


def disk_kernel(radius: float) -> np.ndarray:
    """A disk of `radius` pixels summing to one; a pixel on the rim counts by how much
    of it the disk covers (approximately: 1/2 + radius - its centre's distance)."""
    half = math.ceil(radius + 0.5)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0)
    return kernel / kernel.sum()


def _convolve(clip: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Every frame and channel convolved with `kernel` (edges repeated), back to uint8.

    scipy picks direct or FFT convolution by kernel size: directly, the large disks
    would cost a MARS robustness run hours of host time (docs/experiments.md measures
    both).
    """
    ky, kx = kernel.shape
    top, left = (ky - 1) // 2, (kx - 1) // 2
    padded = np.pad(clip.astype(np.float64), ((0, 0), (top, ky - 1 - top),
                                              (left, kx - 1 - left), (0, 0)), mode="edge")
    return _to_uint8(signal.convolve(padded, kernel[None, :, :, None], mode="valid",
                                     method="auto"))


def motion_blur_length(height: int, fraction: float) -> int:
    return max(2, round(fraction * height))


def _motion_blur(clip, fraction, rng):
    angle = rng.uniform(0.0, np.pi)
    return _convolve(clip, motion_blur_kernel(motion_blur_length(clip.shape[1], fraction), angle))


def _defocus_blur(clip, fraction, rng):
    return _convolve(clip, disk_kernel(fraction * clip.shape[1]))


# --- light, noise, compression ---------------------------------------------------


def _low_light(clip, factor, rng):
    return _to_uint8(clip.astype(np.float32) * factor)


def _low_contrast(clip, factor, rng):
    x = clip.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return _to_uint8(mean + (x - mean) * factor)


def _gaussian_noise(clip, sigma, rng):
    return _to_uint8(clip.astype(np.float32) + rng.normal(0.0, sigma, clip.shape))


def _jpeg(clip, quality, rng):
    out = np.empty_like(clip)
    for f, frame in enumerate(clip):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=int(quality))
        out[f] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


# --- dropped frames --------------------------------------------------------------


def dropped_count(frames: int, share: float) -> int:
    """How many of `frames` a share drops: the nearest whole number, keeping one."""
    return min(frames - 1, math.floor(share * frames + 0.5))


def dropped_frames(frames: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the dropped frames, never the first (it has no predecessor)."""
    return np.sort(rng.choice(np.arange(1, frames), dropped_count(frames, share),
                              replace=False))


def _drop(clip, share, rng, black: bool):
    out = clip.copy()
    for f in dropped_frames(len(clip), share, rng):
        out[f] = 0 if black else out[f - 1]   # out[f - 1]: the last kept one, by induction
    return out


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("occlusion", "share of the frame", (0.1, 0.2, 0.3, 0.4, 0.5),
               lambda clip, share, rng: _occlude(clip, share, rng, moving=False)),
    Corruption("moving_occlusion", "share of the frame", (0.1, 0.2, 0.3, 0.4, 0.5),
               lambda clip, share, rng: _occlude(clip, share, rng, moving=True)),
    Corruption("motion_blur", "kernel length / frame height", (0.03, 0.06, 0.09, 0.12, 0.15),
               _motion_blur),
    Corruption("defocus_blur", "disk radius / frame height", (0.012, 0.02, 0.03, 0.04, 0.05),
               _defocus_blur),
    Corruption("low_light", "brightness factor", (0.6, 0.45, 0.3, 0.2, 0.1), _low_light),
    Corruption("low_contrast", "contrast factor", (0.6, 0.45, 0.3, 0.2, 0.1), _low_contrast),
    Corruption("gaussian_noise", "sigma (levels of 255)", (8, 16, 24, 36, 48), _gaussian_noise),
    Corruption("jpeg", "JPEG quality", (40, 25, 15, 10, 5), _jpeg),
    Corruption("dropped_frames", "share of the frames, repeated",
               (0.2, 0.35, 0.5, 0.65, 0.8),
               lambda clip, share, rng: _drop(clip, share, rng, black=False)),
    Corruption("dropped_frames_black", "share of the frames, black",
               (0.2, 0.35, 0.5, 0.65, 0.8),
               lambda clip, share, rng: _drop(clip, share, rng, black=True)),
)}


def get(name: str) -> Corruption:
    if name not in CORRUPTIONS:
        raise CorruptionError(f"unknown corruption {name!r}{nearest(name, CORRUPTIONS)}; "
                              f"valid: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def check_severity(severity: int) -> int:
    if severity not in (0, *SEVERITIES):
        raise CorruptionError(f"severity {severity!r}: valid severities are 0 (clean) and "
                              f"{', '.join(map(str, SEVERITIES))}")
    return severity


def parse_names(spec: str | Sequence[str]) -> list[str]:
    """'occlusion,motion_blur' or a list -> checked names; 'all' -> every corruption."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if names == ["all"]:
        return list(CORRUPTIONS)
    if not names:
        raise CorruptionError(f"no corruption given; valid: {', '.join(CORRUPTIONS)}")
    _refuse_repeats("corruption", names)
    return [get(n).name for n in names]


def _refuse_repeats(what: str, items: Sequence) -> None:
    repeated = sorted({str(i) for i in items if list(items).count(i) > 1})
    if repeated:
        raise CorruptionError(f"{what} {', '.join(repeated)} given more than once; each cell "
                              "is run once, name it once")


def parse_severities(spec: str | Sequence[int]) -> list[int]:
    """'1,3,5' or a list -> checked severities (1..5), in order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        try:
            severity = int(item)
        except (TypeError, ValueError):
            raise CorruptionError(f"severity {item!r} is not a whole number; valid severities: "
                                  f"{', '.join(map(str, SEVERITIES))}") from None
        if severity not in SEVERITIES:
            raise CorruptionError(f"severity {severity}: valid severities are "
                                  f"{', '.join(map(str, SEVERITIES))} (0 is the clean run)")
        out.append(severity)
    _refuse_repeats("severity", out)
    return sorted(out)


def tracklet_rng(seed: int, name: str, tracklet: int) -> np.random.Generator:
    """The generator of one tracklet under one corruption (not depending on severity)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(tracklet)])


def corrupt_clip(clip: np.ndarray, name: str, severity: int, seed: int,
                 tracklet: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same clip under `name` at `severity` (0: unchanged)."""
    corruption = get(name)
    if check_severity(severity) == 0:
        return clip
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"corrupt_clip: expected (T, H, W, 3) uint8 frames, got "
                         f"{clip.shape} {clip.dtype}")
    return corruption.apply(clip, corruption.levels[severity - 1],
                            tracklet_rng(seed, name, tracklet))


def corrupt_batch(video: np.ndarray, tracklets: np.ndarray, name: str, severity: int,
                  seed: int) -> np.ndarray:
    """(B, T, H, W, 3) uint8 with each row's tracklet index -> corrupted copy.

    Rows with a negative index (an evaluation batch's padding) are left as they are.
    """
    out = np.array(video, copy=True)
    for row, tracklet in enumerate(np.asarray(tracklets)):
        if tracklet >= 0:
            out[row] = corrupt_clip(out[row], name, severity, seed, int(tracklet))
    return out
