"""Tracks in the MOTChallenge text format: `frame,id,x,y,w,h,conf,...` per line, frames from 1.

    tracks = read_tracks("tracks.txt")            # {id: Track}, boxes sorted by frame
    detections = read_detections("dets.txt")      # {frame: [Box]}, ids ignored
    tracks, warnings = fit_to_video(tracks, width, height, num_frames)
    write_tracks("out/tracks.txt", tracks)

Every common tracker writes this format (ByteTrack, BoT-SORT, OC-SORT, the
MOTChallenge ground truth). x, y are the box's top-left corner in pixels, w, h
its size; columns after conf (the 3-D position, class, visibility) are read and
ignored. A malformed line is an error naming the file and line number: a
wrong box would silently change what the model sees.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator

from vtfpar_jax.errors import UserError
from vtfpar_jax.outputs import files


class MotError(UserError, ValueError):
    """A tracks file that cannot be read; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Box:
    frame: int          # 1-based, as in the file
    x: float
    y: float
    w: float
    h: float
    conf: float = 1.0


@dataclasses.dataclass
class Track:
    id: int
    boxes: list[Box]    # sorted by frame, one per frame

    @property
    def frames(self) -> list[int]:
        return [b.frame for b in self.boxes]


def _parse_line(path: str | os.PathLike, number: int, line: str) -> tuple[int, Box]:
    fields = [f.strip() for f in line.split(",")]
    where = f"{path}: line {number}"
    if len(fields) < 6:
        raise MotError(f"{where}: {line.strip()!r} has {len(fields)} field(s); expected "
                       "frame,id,x,y,w,h[,conf,...]")
    try:
        frame_f, id_f, x, y, w, h = (float(v) for v in fields[:6])
        conf = float(fields[6]) if len(fields) > 6 and fields[6] else 1.0
    except ValueError:
        raise MotError(f"{where}: {line.strip()!r} is not numbers (frame,id,x,y,w,h,conf)"
                       ) from None
    values = (frame_f, id_f, x, y, w, h, conf)
    if not all(math.isfinite(v) for v in values):
        raise MotError(f"{where}: {line.strip()!r} holds a non-finite number")
    if frame_f != int(frame_f) or frame_f < 1:
        raise MotError(f"{where}: frame {fields[0]!r}: expected a whole number >= 1 (MOT "
                       "frames count from 1)")
    if id_f != int(id_f):
        raise MotError(f"{where}: id {fields[1]!r}: expected a whole number")
    if w <= 0 or h <= 0:
        raise MotError(f"{where}: box {w}x{h}: width and height must be positive")
    return int(id_f), Box(int(frame_f), x, y, w, h, conf)


def _box_lines(path: str | os.PathLike, kind: str) -> Iterator[tuple[int, int, Box]]:
    """(line number, id, box) of each line of a MOT file of `kind` (tracks, detections);
    blank lines and '#' comments are skipped."""
    if not os.path.isfile(path):
        raise MotError(f"{path}: no such {kind} file")
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield number, *_parse_line(path, number, line)


def read_tracks(path: str | os.PathLike) -> dict[int, Track]:
    """{id: Track} from a MOTChallenge text file."""
    boxes: dict[int, dict[int, Box]] = {}
    for number, track_id, box in _box_lines(path, "tracks"):
        per_frame = boxes.setdefault(track_id, {})
        if box.frame in per_frame:
            raise MotError(f"{path}: line {number}: track {track_id} has a second box on "
                           f"frame {box.frame}")
        per_frame[box.frame] = box
    if not boxes:
        raise MotError(f"{path}: no tracks (the file holds no box lines); expected "
                       "frame,id,x,y,w,h,conf lines")
    return {i: Track(i, [per_frame[k] for k in sorted(per_frame)])
            for i, per_frame in sorted(boxes.items())}


def read_detections(path: str | os.PathLike) -> dict[int, list[Box]]:
    """{frame: [Box]} from a detections file in the same format (ids ignored, usually -1;
    any number of boxes per frame)."""
    detections: dict[int, list[Box]] = {}
    for number, track_id, box in _box_lines(path, "detections"):
        if track_id != -1:   # ByteTrack would drop the ids and make its own tracks
            raise MotError(f"{path}: line {number}: id {track_id}; detections have id -1. "
                           "These look like tracks: give them with --tracks to use them as "
                           "they are")
        detections.setdefault(box.frame, []).append(box)
    if not detections:
        raise MotError(f"{path}: no detections (the file holds no box lines); expected "
                       "frame,-1,x,y,w,h,conf lines")
    return detections


def write_tracks(path: str | os.PathLike, tracks: dict[int, Track]) -> None:
    """The tracks as MOTChallenge lines, sorted by frame then id (the usual order)."""
    rows = sorted((b.frame, t.id, b) for t in tracks.values() for b in t.boxes)
    files.write_text(os.fspath(path), "".join(
        f"{frame},{track_id},{b.x:.2f},{b.y:.2f},{b.w:.2f},{b.h:.2f},{b.conf:.4f},-1,-1,-1\n"
        for frame, track_id, b in rows))


def fit_to_video(tracks: dict[int, Track], width: int, height: int,
                 num_frames: int) -> tuple[dict[int, Track], list[str]]:
    """Tracks with boxes clamped to the frame, and a warning naming track and frame for each
    box changed or dropped: clamped where partly outside, dropped where wholly outside
    the image or past the video's last frame. A track left without boxes is dropped."""
    fitted, warnings = {}, []
    for track in tracks.values():
        kept = []
        for b in track.boxes:
            if b.frame > num_frames:
                warnings.append(f"track {track.id}, frame {b.frame}: past the video's last "
                                f"frame ({num_frames}); box dropped")
                continue
            x0, y0 = max(b.x, 0.0), max(b.y, 0.0)
            x1, y1 = min(b.x + b.w, float(width)), min(b.y + b.h, float(height))
            if x1 - x0 < 1 or y1 - y0 < 1:
                warnings.append(f"track {track.id}, frame {b.frame}: box ({b.x:g}, {b.y:g}, "
                                f"{b.w:g}, {b.h:g}) lies outside the {width}x{height} frame; "
                                "box dropped")
                continue
            if (x0, y0, x1, y1) != (b.x, b.y, b.x + b.w, b.y + b.h):
                warnings.append(f"track {track.id}, frame {b.frame}: box ({b.x:g}, {b.y:g}, "
                                f"{b.w:g}, {b.h:g}) reaches outside the {width}x{height} "
                                f"frame; clamped to ({x0:g}, {y0:g}, {x1 - x0:g}, {y1 - y0:g})")
                b = dataclasses.replace(b, x=x0, y=y0, w=x1 - x0, h=y1 - y0)
            kept.append(b)
        if kept:
            fitted[track.id] = Track(track.id, kept)
        else:
            warnings.append(f"track {track.id}: no box left inside the video; track dropped")
    return fitted, warnings
