"""From tracks on a streamed video to model clips: which frames each clip samples, and the crops.

A track gives one clip over its whole length, and with `window` N also one
clip per sliding window of N of its frames (stride N // 2, the last window
ending on the track's last frame). Each clip samples T of its frames as
evaluation samples a tracklet (`video.frame_indices`: centres of T equal bins).

Crops: the box grows by `context` of its size on every side, then widens or
heightens about its centre to the training crops' aspect (height / width;
MARS's and the synthetic set's crops are 2:1), and is cut from the frame, black
where it reaches outside (the published crop padding is black too). It is then
resized to the model's square input as `video.model_input` resizes a tracklet's
frames.

`CropCollector` takes the frames in order and hands back each clip as soon as
its last sampled frame has passed, so it holds only the crops of clips still
open: memory follows the number of tracks on screen, not the video's length.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from PIL import Image

from vtfpar_jax.inference import video
from vtfpar_jax.inference.mot import Box, Track

TRAINING_ASPECT = 2.0   # height / width of MARS's (256x128) and the synthetic set's crops
CONTEXT = 0.1
THUMBNAIL = (96, 48)    # (H, W) of the contact sheet's crops


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """One clip of a track: the whole track (window None) or frames [first, last] of it."""

    track_id: int
    window: int | None              # index of the window, None for the whole track
    first: int                      # frame span of the clip (1-based, inclusive)
    last: int
    sampled: tuple[int, ...]        # the T frame numbers sampled, in order (may repeat)


def window_spans(num_boxes: int, window: int) -> list[tuple[int, int]]:
    """[(start, stop)) index ranges over a track's boxes: N boxes, stride N // 2, the last
    one ending at the last box. A track no longer than N is one window."""
    if window < 1:
        raise ValueError(f"window={window}: expected >= 1")
    if num_boxes <= window:
        return [(0, num_boxes)]
    stride = max(1, window // 2)
    starts = list(range(0, num_boxes - window, stride)) + [num_boxes - window]
    return [(s, s + window) for s in starts]


def plan(tracks: dict[int, Track], frames: int, window: int | None) -> list[ClipPlan]:
    """Every clip to predict: per track, the whole track, then its windows (if any)."""
    plans = []
    for track in tracks.values():
        numbers = track.frames
        spans = [(None, 0, len(numbers))]
        if window:
            spans += [(i, s, e) for i, (s, e) in enumerate(window_spans(len(numbers), window))]
        for index, start, stop in spans:
            part = numbers[start:stop]
            chosen = video.frame_indices(len(part), frames)
            plans.append(ClipPlan(track.id, index, part[0], part[-1],
                                  tuple(part[i] for i in chosen)))
    return plans


def crop_region(box: Box, aspect: float = TRAINING_ASPECT,
                context: float = CONTEXT) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixels: the box with context, at height / width = aspect."""
    w, h = box.w * (1 + 2 * context), box.h * (1 + 2 * context)
    if h / w > aspect:
        w = h / aspect
    else:
        h = w * aspect
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    return x0, y0, x0 + max(1, int(round(w))), y0 + max(1, int(round(h)))


@dataclasses.dataclass
class Clip:
    """A finished clip: its plan, the model-size crops (T, S, S, 3) uint8 and, for a whole
    track, thumbnails (T, *THUMBNAIL, 3) uint8 for the contact sheet."""

    plan: ClipPlan
    crops: np.ndarray
    thumbnails: np.ndarray | None


class CropCollector:
    """Fills every planned clip's crops from frames given in order."""

    def __init__(self, tracks: dict[int, Track], plans: list[ClipPlan], image_size: int,
                 aspect: float = TRAINING_ASPECT, context: float = CONTEXT):
        self._boxes = {t.id: {b.frame: b for b in t.boxes} for t in tracks.values()}
        self._size, self._aspect, self._context = image_size, aspect, context
        # frame -> [(plan index, slot)]; a clip closes when its last sampled frame is seen.
        self._wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for index, p in enumerate(plans):
            for slot, number in enumerate(p.sampled):
                self._wanted[number].append((index, slot))
        self._plans = plans
        self._open: dict[int, list[np.ndarray | None]] = {}
        self._thumbs: dict[int, list[np.ndarray | None]] = {}

    @property
    def open_clips(self) -> int:
        return len(self._open)

    def add(self, number: int, frame: np.ndarray) -> Iterator[Clip]:
        """Take frame `number` (1-based); yield the clips it completes."""
        crops: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # one crop per track per frame
        wanted = self._wanted.pop(number, ())
        image = Image.fromarray(frame) if wanted else None
        for index, slot in wanted:
            p = self._plans[index]
            if p.track_id not in crops:
                # PIL's crop is black where the region reaches outside the frame.
                piece = np.asarray(image.crop(crop_region(self._boxes[p.track_id][number],
                                                          self._aspect, self._context)))
                crops[p.track_id] = (video.resize(piece, (self._size, self._size)),
                                     video.resize(piece, THUMBNAIL))
            model_crop, thumbnail = crops[p.track_id]
            slots = self._open.setdefault(index, [None] * len(p.sampled))
            slots[slot] = model_crop
            if p.window is None:
                self._thumbs.setdefault(index, [None] * len(p.sampled))[slot] = thumbnail
            if all(s is not None for s in slots):
                thumbs = self._thumbs.pop(index, None)
                yield Clip(p, np.stack(self._open.pop(index)),
                           None if thumbs is None else np.stack(thumbs))

    def unfinished(self) -> list[ClipPlan]:
        """Plans still missing crops (frames never given): none after a whole video."""
        waiting = {index for entries in self._wanted.values() for index, _ in entries}
        return [self._plans[i] for i in sorted(waiting | set(self._open))]
