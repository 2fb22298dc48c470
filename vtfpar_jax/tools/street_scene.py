"""Drawn street videos with known boxes: people walk across in lanes, their true tracks known.

    scene = walking_scene((1080, 1920), person_height=96, num_frames=40, seed=0)
    truth = write_video(scene, "street.mp4", lossless=False)   # {id: mot.Track}, as drawn

Each person is a tracklet from the synthetic set's own painter
(input_pipeline.synthetic_figures, attributes known), pasted whole (its crop
is the true box, 2:1 like the training crops) onto a sky-to-road gradient. Lanes
never overlap, so every true box is visible in full. Encoded with H.264 either
losslessly (crf 0, 4:4:4) or as a camera encodes (crf 23, 4:2:0): the test
videos of track_attributes and the street benchmark both come from here.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from vtfpar_jax.inference import mot, video

CAMERA_CRF = 23
FPS = 25                 # a camera's rate; people walk about their height per second
KERB = 20                # rows of kerb at the frame's bottom, where no one walks


@dataclasses.dataclass(frozen=True)
class Walker:
    id: int
    top: int            # y of the box's top edge
    first: int          # first frame (1-based)
    count: int          # frames in view
    x0: int             # box's left edge on the first frame
    dx: int             # pixels per frame (negative: walking left)


@dataclasses.dataclass(frozen=True)
class Scene:
    frame_size: tuple[int, int]         # (H, W)
    person_size: tuple[int, int]        # (H, W) of every person's box
    num_frames: int
    walkers: tuple[Walker, ...]
    seed: int


def background(rng: np.random.Generator, frame_size: tuple[int, int]) -> np.ndarray:
    """A lit sky-to-road gradient with pixel noise and a darker kerb at the bottom."""
    h, w = frame_size
    ys = np.linspace(0, 1, h)[:, None, None]
    base = 90 + 60 * ys + rng.normal(0, 6, (h, w, 3))
    base[h - KERB:] = (70, 70, 75)
    return np.clip(base, 0, 255).astype(np.uint8)


def _width(person_height: int) -> int:
    return max(1, person_height // 2)


def _gap(person_height: int) -> int:
    """Rows between two lanes."""
    return max(4, person_height // 8)


def check_fits(frame_size: tuple[int, int], person_height: int, people_per_lane: int) -> None:
    """ValueError unless a frame of `frame_size` (H, W) holds one lane of `people_per_lane`
    people `person_height` px tall above the kerb, with room for each to walk."""
    h, w = frame_size
    min_h = person_height + _gap(person_height) + KERB
    min_w = 2 * people_per_lane * _width(person_height)
    if h < min_h or w < min_w:
        raise ValueError(f"{people_per_lane} people {person_height} px tall per lane do not "
                         f"fit a {h}x{w} frame (HxW): it needs at least {min_h}x{min_w}")


def walking_scene(frame_size: tuple[int, int], person_height: int, num_frames: int,
                  seed: int = 0, people_per_lane: int = 2) -> Scene:
    """People `person_height` px tall (half as wide) in as many lanes as the frame holds,
    `people_per_lane` spread along each lane. A lane's people appear together on a frame
    of the video's first third and walk at one speed (their height per second at FPS,
    rightwards in even lanes, leftwards in odd ones), so they never overlap; each leaves
    at the frame's edge or stays to the end."""
    check_fits(frame_size, person_height, people_per_lane)
    h, w = frame_size
    ph, pw = person_height, _width(person_height)
    gap = _gap(ph)
    lanes = (h - KERB) // (ph + gap)
    speed = max(1, round(ph / FPS))
    rng = np.random.default_rng(seed)
    slot = (w - pw) // people_per_lane
    walkers = []
    for lane in range(lanes):
        first = 1 + int(rng.integers(0, max(1, num_frames // 3)))
        dx = speed if lane % 2 == 0 else -speed
        for k in range(people_per_lane):
            x0 = k * slot + int(rng.integers(0, max(1, slot - pw)))
            room = (w - pw - x0) if dx > 0 else x0            # pixels before the edge
            count = min(num_frames - first + 1, room // speed + 1)
            walkers.append(Walker(len(walkers) + 1, gap // 2 + lane * (ph + gap), first,
                                  count, x0, dx))
    return Scene((h, w), (ph, pw), num_frames, tuple(walkers), seed)


def _walker_rng(scene: Scene, walker_id: int) -> np.random.Generator:
    """The stream a person's tracklet is drawn from: its look first, then its frames."""
    return np.random.default_rng([scene.seed, walker_id])


def looks(scene: Scene) -> dict:
    """{id: synthetic_figures.Look}: every person's drawn attributes (`Look.labels()`)."""
    from input_pipeline import synthetic_figures
    return {w.id: synthetic_figures.draw_look(_walker_rng(scene, w.id)) for w in scene.walkers}


def _tracklets(scene: Scene) -> dict[int, np.ndarray]:
    from input_pipeline import synthetic_figures
    crops = {}
    for walker in scene.walkers:
        _, jpegs = synthetic_figures.draw_tracklet(
            _walker_rng(scene, walker.id), scene.person_size, walker.count)
        crops[walker.id] = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB"))
                                     for j in jpegs])
    return crops


def truth(scene: Scene) -> dict[int, mot.Track]:
    """{id: Track}: every person's box on every frame it is drawn on."""
    ph, pw = scene.person_size
    return {w.id: mot.Track(w.id, [mot.Box(w.first + t, float(w.x0 + w.dx * t), float(w.top),
                                           float(pw), float(ph))
                                   for t in range(w.count) if w.first + t <= scene.num_frames])
            for w in scene.walkers}


def frames(scene: Scene) -> Iterator[np.ndarray]:
    """The scene's frames, (H, W, 3) uint8 RGB, in order; a person's pasted tracklet frame
    is exactly its true box."""
    base = background(np.random.default_rng(scene.seed), scene.frame_size)
    crops = _tracklets(scene)
    ph, pw = scene.person_size
    for number in range(1, scene.num_frames + 1):
        frame = base.copy()
        for w in scene.walkers:
            t = number - w.first
            if 0 <= t < w.count:
                x = w.x0 + w.dx * t
                frame[w.top:w.top + ph, x:x + pw] = crops[w.id][t]
        yield frame


def write_mp4(path: str | os.PathLike, frames_in, lossless: bool, fps: int = FPS) -> None:
    """An H.264 mp4 (`video.write_video`): lossless (crf 0, 4:4:4) or as a camera would (crf
    23, 4:2:0), at x264's default preset."""
    video.write_video(path, frames_in, fps, pix_fmt="yuv444p" if lossless else "yuv420p",
                      options={"crf": "0" if lossless else str(CAMERA_CRF), "preset": "medium"})


def write_video(scene: Scene, path: str | os.PathLike, lossless: bool = False
                ) -> dict[int, mot.Track]:
    """Draw and encode the scene; returns its true tracks."""
    write_mp4(path, frames(scene), lossless)
    return truth(scene)
