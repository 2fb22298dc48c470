"""Where a video's time goes: seconds per stage (load, decode, detect, track, crop, predict,
draw).

    times = StageTimes(video_frames=795)
    for number, frame in times.timed("decode", video_io.iter_frames(path)):
        with times.stage("detect"):
            boxes = detector(frame)
    print(times.table())

Each stage's frames/s is the video's frame count over that stage's seconds: how
fast the whole video would go if that stage were the only work, so stages that
see every frame (decode, draw) and those that see some (detect with
--detect_every, predict per clip) compare on one scale. Decoding is timed in
every pass over the video (the detection pass, the crops' pass, the drawing pass).
Loading the model happens once, whatever the video's length, so it has no frames/s;
its compilation is in predict's first call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

STAGES = ("load", "decode", "detect", "track", "crop", "predict", "draw")
ONCE = ("load",)   # not per frame: no frames/s


class StageTimes:
    def __init__(self, video_frames: int):
        self.video_frames = video_frames
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def timed(self, name: str, items: Iterable[Any]) -> Iterator[Any]:
        """`items`, with the time spent producing each one added to stage `name`."""
        iterator = iter(items)
        while True:
            with self.stage(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def frames_per_s(self, name: str, seconds: float) -> float | None:
        """The video's frames over a stage's seconds; None for a stage that is not per frame."""
        return self.video_frames / seconds if seconds > 0 and name not in ONCE else None

    def as_dict(self) -> dict[str, dict[str, float | None]]:
        return {name: {"seconds": round(s, 4),
                       "frames_per_s": (None if (fps := self.frames_per_s(name, s)) is None
                                        else round(fps, 2))}
                for name, s in self.seconds.items()}

    def table(self) -> str:
        total = sum(self.seconds.values())
        rows = [f"{'stage':<8} {'seconds':>9} {'frames/s':>10} {'share':>6}"]
        for name, s in [*self.seconds.items(), ("total", total)]:
            if name in ONCE and s == 0:   # a run that loads no model (the street benchmark)
                continue
            fps = self.frames_per_s(name, s)
            fps = f"{'-':>10}" if fps is None else f"{fps:10.2f}"
            share = f"{100 * s / total:5.1f}%" if total > 0 else f"{'-':>6}"
            rows.append(f"{name:<8} {s:9.3f} {fps} {share}")
        return "\n".join(rows)
