"""Video files and frame folders, read and written: every decode and encode goes through
here (PyAV).

A clip for prediction, a folder of frames or a short video -> model input:

    frames_uint8, video = model_input(read_frames("walk.mp4", frames=6), image_size=(224, 224),
                                      normalization="published")

A long video, read and written one frame at a time, never held whole:

    info = probe("street.mp4")                 # frames, width, height, fps
    for number, frame in iter_frames("street.mp4"):  # 1-based, (h, w, 3) uint8 RGB
        ...
    with Writer("out.mp4", info.width, info.height, info.fps) as w:
        w.write(frame)

The conventions are those of evaluation (`input_pipeline.pipeline` choosing and
decoding frames, `vtfpar_jax.models.preprocess` resizing and normalising them), so that a
model sees the same kind of pixels it was trained and evaluated on:
- frame choice 'uniform': the centres of T equal bins over the n frames, in
  order; a clip shorter than T repeats frames;
- resize to the CLIP image size, aspect ratio not kept, bilinear, filtering
  when shrinking, rounded to uint8 (the published transforms act on uint8
  PIL images);
- normalisation (x / 255 - mean) / std with the pipeline's named statistics.

Implemented with numpy, PIL and PyAV only: prediction needs no TensorFlow. PIL
resizes in 8-bit fixed point where evaluation resizes in float and rounds,
so a pixel may differ by one or two levels of 255 (tests/test_predict.py
measures it against the pipeline on the same frames).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vtfpar_jax.errors import UserError
from vtfpar_jax.models.normalization import NORMALIZATIONS, normalize

DEFAULT_FPS = Fraction(25)
ENCODER_PRESET = "veryfast"   # x264: see Writer


class InputError(UserError, ValueError):
    """An input that cannot be read as a clip; the message names the path and why."""


def frame_indices(num_frames: int, frames: int) -> np.ndarray:
    """(frames,) int indices: centres of `frames` equal bins over `num_frames`, in order.

    The pipeline's 'uniform' choice, computed in float32 as it does, so both
    pick the same frames.
    """
    if num_frames < 1 or frames < 1:
        raise ValueError(f"frame_indices({num_frames}, {frames}): both must be >= 1")
    centres = ((np.arange(frames, dtype=np.float32) + np.float32(0.5))
               * np.float32(num_frames) / np.float32(frames))
    return np.minimum(np.floor(centres).astype(np.int64), num_frames - 1)


def resize(frame: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 -> (H, W, 3) uint8, bilinear, aspect not kept.

    PIL's bilinear widens its kernel when it shrinks (antialiasing), which is
    what the pipeline's `antialias=True` does; when enlarging both interpolate
    between the same pixel centres. A frame already at that size is copied as it is (PIL).
    """
    height, width = image_size
    image = Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _read_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _read_folder(folder: Path, frames: int) -> list[np.ndarray]:
    """The chosen frames of a folder of images sorted by name; non-images are errors."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: empty folder (expected the frames of one tracklet)")
    # Every file is checked (headers only, cheap) so a stray non-image is named
    # rather than silently shifting which frames are chosen.
    bad = []
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            bad.append(path.name)
    if len(bad) == len(files):
        raise InputError(f"{folder}: no image among its {len(files)} file(s) "
                         f"(e.g. {bad[0]!r}); expected a folder of frames")
    if bad:
        raise InputError(f"{folder}: {len(bad)} file(s) are not images (e.g. {bad[0]!r}); "
                         "a frame folder should hold only the frames")
    return [_read_image(files[i]) for i in frame_indices(len(files), frames)]


def read_frames(path: str | os.PathLike, frames: int) -> list[np.ndarray]:
    """T `frames` of one clip, sampled uniformly (in order; repeated when fewer), (h, w, 3)
    uint8 at their size on disk. `path`: a folder of image files (one tracklet, sorted by
    name) or a video (mp4, avi, ...).

    Raises:
      InputError: a missing path, an empty folder, non-images, an unreadable video.
    """
    path = Path(path)
    if frames < 1:
        raise ValueError(f"frames={frames}: need at least 1")
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path, frames)
    # Decoded in full: a stream's frame count is often missing or wrong in headers, and
    # pedestrian tracklets are short.
    decoded = [frame for _, frame in iter_frames(path)]
    if not decoded:
        raise InputError(f"{path}: the video has no frames")
    return [decoded[i] for i in frame_indices(len(decoded), frames)]


def model_input(chosen: list[np.ndarray], image_size: tuple[int, int],
                normalization: str = "published") -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) frames resized to `image_size` (H, W), uint8 (for display); the same
    normalised ('published': mean = std = 0.5, or 'clip'), float32 (the model input)."""
    frames_uint8 = np.stack([resize(f, tuple(image_size)) for f in chosen])
    return frames_uint8, normalize(frames_uint8, normalization)


def preprocessing(frames: int, image_size: tuple[int, int], normalization: str) -> dict:
    """What `read_frames` and `model_input` do to a clip, stated for someone who must repeat
    it without this package (the export metadata carries it): every step, in order."""
    mean, std = NORMALIZATIONS[normalization]
    height, width = image_size
    return {
        "decode": {
            "video": "every frame, as RGB uint8: PyAV frame.to_ndarray(format='rgb24') "
                     "(FFmpeg's default YUV->RGB conversion)",
            "folder": "the image files sorted by name, each Image.convert('RGB'), uint8"},
        "frame_choice": {
            "name": "uniform", "frames": frames,
            "rule": "of the N decoded frames take indices floor((i + 0.5) * N / T) for "
                    "i = 0..T-1, computed in float32, at most N - 1, in temporal order "
                    "(the middles of T equal segments; a clip of fewer than T frames "
                    "repeats frames)"},
        "resize": {
            "size": [height, width], "method": "bilinear", "antialias": True,
            "implementation": f"PIL Image.fromarray(frame).resize(({width}, {height}), "
                              "Image.Resampling.BILINEAR) on the uint8 frame (PIL widens the "
                              "bilinear kernel when shrinking: antialiasing); the result is "
                              "uint8; skipped when the frame already has this size",
            "aspect_ratio": "not kept: the whole frame is stretched to the size",
            "crop": "none", "padding": "none"},
        "colour_order": "RGB",
        "dtype": "uint8 after resizing, then float32",
        "normalization": {"name": normalization, "mean": list(mean), "std": list(std),
                          "formula": "(pixel / 255 - mean) / std per channel, in float32"},
        "layout": "(T, H, W, 3) per clip; clips stacked to (B, T, H, W, 3)",
    }


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int = 10,
                **writer_options) -> None:
    """(h, w, 3) uint8 frames, a (T, h, w, 3) array or any iterable, -> an H.264 mp4
    (`Writer`; writer_options: its container_format, pix_fmt, options)."""
    frames = iter(frames)
    first = next(frames)
    with Writer(path, first.shape[1], first.shape[0], Fraction(fps), **writer_options) as writer:
        writer.write(first)
        for frame in frames:
            writer.write(frame)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: Fraction


@contextlib.contextmanager
def _opened(path: str) -> Iterator:
    """The video's container, closed after use; PyAV's errors as an InputError naming it."""
    import av
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such video file")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            yield container
    except (av.FFmpegError, StopIteration) as e:
        raise InputError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count (by demuxing every packet: headers often lack it or get it wrong, and
    demuxing decodes nothing), size and frame rate. The first frame is decoded too, so a
    file whose packets do not decode fails here, before any output is written."""
    path = os.fspath(path)
    with _opened(path) as container:
        stream = container.streams.video[0]
        count = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
        first = next(iter(container.decode(stream)), None)
        fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
    if count == 0 or first is None:
        raise InputError(f"{path}: the video has no frames")
    return VideoInfo(count, first.width, first.height, Fraction(fps))


def iter_frames(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """(1-based frame number, (h, w, 3) uint8 RGB) for every decoded frame, in order."""
    path = os.fspath(path)
    with _opened(path) as container:
        for number, frame in enumerate(container.decode(container.streams.video[0]), start=1):
            yield number, frame.to_ndarray(format="rgb24")


class Writer(contextlib.AbstractContextManager):
    """An H.264 mp4, one frame at a time. yuv420p (what every player takes) where the
    sides are even, which it needs; yuv444p otherwise, so the size is kept.

    x264's `veryfast` preset: its default (`medium`) made encoding the slowest stage of
    `vtfpar track` with a learned detector, and `veryfast` is faster with a file no larger
    (docs/tracking.md, "Speed", measures both)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int,
                 fps: Fraction = DEFAULT_FPS, container_format: str | None = None,
                 pix_fmt: str | None = None, options: dict[str, str] | None = None):
        """container_format: 'mp4' and so on; by default from the path's suffix. pix_fmt
        and options (x264's, e.g. crf) replace the defaults above."""
        import av
        self._container = av.open(os.fspath(path), mode="w", format=container_format)
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = pix_fmt or (
            "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p")
        self._stream.options = {"preset": ENCODER_PRESET, **(options or {})}

    def write(self, frame: np.ndarray) -> None:
        import av
        video_frame = av.VideoFrame.from_ndarray(np.asarray(frame, np.uint8), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __exit__(self, *exc) -> None:
        self.close()
