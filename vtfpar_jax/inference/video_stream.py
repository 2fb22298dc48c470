"""A long video read and written one frame at a time (PyAV), never held whole.

    info = probe("street.mp4")                 # frames, width, height, fps
    for number, frame in frames("street.mp4"): # 1-based, (h, w, 3) uint8 RGB
        ...
    with Writer("out.mp4", info.width, info.height, info.fps) as w:
        w.write(frame)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from vtfpar_jax.inference.video import InputError

DEFAULT_FPS = Fraction(25)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: Fraction


def _open(path: str):
    import av
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such video file")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise InputError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count (by demuxing every packet: headers often lack it or get it wrong, and
    demuxing decodes nothing), size and frame rate. The first frame is decoded too, so a
    file whose packets do not decode fails here, before any output is written."""
    import av
    path = os.fspath(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        count = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
        first = next(iter(container.decode(stream)), None)
        fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
    except (av.FFmpegError, StopIteration) as e:
        raise InputError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    finally:
        container.close()
    if count == 0 or first is None:
        raise InputError(f"{path}: the video has no frames")
    return VideoInfo(count, first.width, first.height, Fraction(fps))


def frames(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """(1-based frame number, (h, w, 3) uint8 RGB) for every decoded frame, in order."""
    import av
    path = os.fspath(path)
    container = _open(path)
    try:
        for number, frame in enumerate(container.decode(container.streams.video[0]), start=1):
            yield number, frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        raise InputError(f"{path}: decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()


class Writer:
    """An H.264 mp4, one frame at a time. yuv420p (what every player takes) where the
    sides are even, which it needs; yuv444p otherwise, so the size is kept."""

    def __init__(self, path: str | os.PathLike, width: int, height: int,
                 fps: Fraction = DEFAULT_FPS, container_format: str | None = None):
        """container_format: 'mp4' and so on; by default from the path's suffix."""
        import av
        self._container = av.open(os.fspath(path), mode="w", format=container_format)
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        import av
        video_frame = av.VideoFrame.from_ndarray(np.asarray(frame, np.uint8), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
