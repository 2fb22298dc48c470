"""Tracks made from the video itself: people detected, then tracked (the `video` extra).

    detector = detectors.build("hog", min_person_px=48)
    made = tracks_for("street.mp4", info, detector=detector, detect_every=1)
    made = tracks_for("street.mp4", info, detections=mot.read_detections("dets.txt"))
    made.tracks, made.warnings

Detection: any detector of vtfpar_jax.inference.detectors, or a MOT detections
file (`frame,-1,x,y,w,h,conf`) whose conf column is used as written; boxes
taller than MAX_PERSON_SHARE of the frame are dropped (HOG fires on walls and
road at that size), and the count said. Tracking: supervision's ByteTrack, its
thresholds acting on scores in [0, 1].

With detect_every N the detector runs on frames 1, 1 + N, ...; ByteTrack sees
only those (its frame rate divided by N) and sees every box grown by
BUFFER_PER_FRAME of its size on each side per frame between detections (the
buffered IoU of C-BIoU, Yang et al. 2023), so that a walker's next detection
still matches; the tracks keep the detector's own boxes, interpolated between
detections (`interpolate_gaps`) and carried to the end (`extend_to`). A track
found on fewer than LOW_CONFIDENCE_BELOW of the frames it was searched on is
marked low-confidence; its attributes are still predicted. docs/tracking.md,
"Detectors", says why each rule is there.
"""

from __future__ import annotations

import dataclasses
import warnings as python_warnings
from typing import Any

import numpy as np
from tqdm import tqdm

from vtfpar_jax.inference import mot, stage_times
from vtfpar_jax.inference import video as video_io
from vtfpar_jax.inference.detectors import Boxes, Detector, base

MAX_PERSON_SHARE = 0.8      # a person box spans at most this share of the frame's height
CARRIED_DETECTIONS = 3      # a track missed on up to 2 detection frames in a row is carried
BUFFER_PER_FRAME = 0.05     # boxes grown on each side by this share per frame between detections
LOW_CONFIDENCE_BELOW = 3    # detections: a track found on fewer frames is marked
START_IOU = 0.2             # ByteTrack's matching bound: 1 - minimum_matching_threshold 0.8


@dataclasses.dataclass
class MadeTracks:
    tracks: dict[int, mot.Track]
    warnings: list[str]
    boxes_found: int
    evidence: dict[int, dict[str, Any]]   # per track: what the detector found of it


def evidence(detected: list[mot.Box], searched_after: int) -> dict[str, Any]:
    """tracks.json's account of a track's detections (`detected`: the detector's own boxes,
    not those carried between them; `searched_after`: the frames searched from its first
    on, so that a person who enters as the video ends is not doubted for it)."""
    return {"detections": len(detected),
            "detection_score": round(float(np.mean([b.conf for b in detected])), 4),
            "low_confidence": len(detected) < min(LOW_CONFIDENCE_BELOW, searched_after)}


def plausible(boxes: Boxes, frame_height: int) -> tuple[Boxes, int]:
    """(the boxes no taller than MAX_PERSON_SHARE of the frame, how many were dropped)."""
    heights = boxes.xyxy[:, 3] - boxes.xyxy[:, 1]
    keep = heights <= MAX_PERSON_SHARE * frame_height
    return boxes.select(keep), int((~keep).sum())


def buffer_boxes(xyxy: np.ndarray, buffer: float) -> np.ndarray:
    """Boxes grown by `buffer` times their width and height on every side."""
    grow = buffer * (xyxy[:, 2:] - xyxy[:, :2])
    return np.concatenate([xyxy[:, :2] - grow, xyxy[:, 2:] + grow], axis=1)


def _file_boxes(given: list[mot.Box]) -> Boxes:
    return Boxes([[b.x, b.y, b.x + b.w, b.y + b.h] for b in given], [b.conf for b in given])


def interpolate_gaps(track: mot.Track, longest: int) -> mot.Track:
    """The track with a box on every frame of each gap of at most `longest` frames between
    two of its boxes, moved linearly between them (score: the lower of the two)."""
    filled = [track.boxes[0]]
    for a, b in zip(track.boxes, track.boxes[1:], strict=False):
        gap = b.frame - a.frame
        if 1 < gap <= longest:
            u, v = (np.array([box.x, box.y, box.w, box.h]) for box in (a, b))
            filled += [mot.Box(a.frame + k, *map(float, u + k / gap * (v - u)),
                               min(a.conf, b.conf)) for k in range(1, gap)]
        filled.append(b)
    return mot.Track(track.id, filled)


def _unconfirmed_start(box: mot.Box, earlier: Boxes, earlier_frame: int
                       ) -> tuple[list[mot.Box], Boxes]:
    """([the box a new track most likely had on the previous detection frame] or []; the
    earlier boxes left unclaimed).

    ByteTrack confirms a track born after the first frame only on its second detection
    and reports it from there, so each new track would lose its first detection frame
    (with --detect_every N, N frames). The previous detection frame's unclaimed box that
    overlaps the new track's first box most, at IoU >= START_IOU (ByteTrack's own bound
    for matching a track to a detection), is taken as its start."""
    if not len(earlier):
        return [], earlier
    iou = base.import_extra("supervision").box_iou_batch(
        np.array([[box.x, box.y, box.x + box.w, box.y + box.h]]), earlier.xyxy)[0]
    best = int(np.argmax(iou))
    if iou[best] < START_IOU:
        return [], earlier
    bx0, by0, bx1, by1 = (float(v) for v in earlier.xyxy[best])
    start = mot.Box(earlier_frame, bx0, by0, bx1 - bx0, by1 - by0, float(earlier.scores[best]))
    return [start], earlier.select(np.arange(len(earlier)) != best)


def extend_to(track: mot.Track, searched: int, last: int,
              frame_size: tuple[int, int]) -> mot.Track:
    """A track seen on the last frame searched (`searched`), carried on to frame `last` at
    its velocity between its last two boxes, while the box stays inside the (H, W) frame:
    the frames after the last detection frame have no detection of their own."""
    end = track.boxes[-1]
    if end.frame != searched or last <= searched or len(track.boxes) < 2:
        return track
    before = track.boxes[-2]
    step = [(u - v) / (end.frame - before.frame) for u, v in
            zip((end.x, end.y), (before.x, before.y), strict=True)]
    carried = []
    for k in range(1, last - end.frame + 1):
        x, y = end.x + k * step[0], end.y + k * step[1]
        if x < 0 or y < 0 or x + end.w > frame_size[1] or y + end.h > frame_size[0]:
            break   # walking out of view: no detector would have seen it there
        carried.append(mot.Box(end.frame + k, x, y, end.w, end.h, end.conf))
    return mot.Track(track.id, track.boxes + carried)


def tracks_for(path: str, info: video_io.VideoInfo, detector: Detector | None = None,
               detections: dict[int, list[mot.Box]] | None = None, detect_every: int = 1,
               times: stage_times.StageTimes | None = None,
               progress: bool = True) -> MadeTracks:
    """ByteTrack over the boxes of `detector` (run on every `detect_every`-th decoded frame)
    or of the detections `mot.read_detections` read from a MOT file (every frame it lists).
    Possibly no track."""
    sv = base.import_extra("supervision")
    if detections is None and detector is None:
        raise ValueError("tracks_for needs a detector or a detections file")
    every = 1 if detections is not None else detect_every
    times = times or stage_times.StageTimes(info.frames)
    with python_warnings.catch_warnings():
        # supervision 0.30 marks ByteTrack deprecated (it moves to the `trackers` package,
        # which needs the GUI build of OpenCV); the pinned 0.30 still ships it.
        python_warnings.simplefilter("ignore", FutureWarning)
        tracker = sv.ByteTrack(frame_rate=max(1, round(float(info.fps) / every)))
    boxes: dict[int, list[mot.Box]] = {}
    frames = (((n, None) for n in range(1, info.frames + 1)) if detections is not None
              else times.timed("decode", video_io.iter_frames(path)))
    detected = found_count = implausible = 0
    unclaimed = Boxes.empty()    # the last detection frame's boxes that no track took
    for number, frame in tqdm(frames, total=info.frames, desc="frames (detect, track)",
                              unit="frame", disable=not progress, leave=False):
        if (number - 1) % every:
            continue
        with times.stage("detect"):
            found = (_file_boxes(detections.get(number, [])) if detections is not None
                     else detector(frame))
            found, dropped = plausible(found, info.height)
        detected += 1
        found_count += len(found)
        implausible += dropped
        with times.stage("track"):
            buffered = buffer_boxes(found.xyxy, BUFFER_PER_FRAME * (every - 1))
            tracked = tracker.update_with_detections(sv.Detections(
                xyxy=buffered, confidence=found.scores,
                class_id=np.zeros(len(found), np.int64), data={"row": np.arange(len(found))}))
            claimed = np.zeros(len(found), bool)
            # ByteTrack hands back a selection of the detections given, their data kept.
            for row, track_id, score in zip(tracked.data.get("row", []), tracked.tracker_id,
                                            tracked.confidence, strict=True):
                claimed[row] = True
                x0, y0, x1, y1 = (float(v) for v in found.xyxy[row])
                box = mot.Box(number, x0, y0, x1 - x0, y1 - y0, float(score))
                if int(track_id) not in boxes:
                    boxes[int(track_id)], unclaimed = _unconfirmed_start(
                        box, unclaimed, number - every)
                boxes[int(track_id)].append(box)
            unclaimed = found.select(~claimed)
    with times.stage("track"):
        last_searched = 1 + (info.frames - 1) // every * every
        tracks = {i: extend_to(interpolate_gaps(mot.Track(i, b), every * CARRIED_DETECTIONS),
                               last_searched, min(info.frames, last_searched + every - 1),
                               (info.height, info.width))
                  for i, b in sorted(boxes.items())}
    found_on = {i: evidence(b, (last_searched - b[0].frame) // every + 1)
                for i, b in boxes.items()}
    notes = []
    low = sorted(i for i, e in found_on.items() if e["low_confidence"])
    if low:
        notes.append(f"{len(low)} of {len(tracks)} track(s) were found on fewer than "
                     f"{LOW_CONFIDENCE_BELOW} of the frames searched (track(s) "
                     f"{', '.join(map(str, low))}): marked low_confidence in tracks.json, "
                     "perhaps not a person")
    if implausible:
        notes.append(f"{implausible} detected box(es) taller than {MAX_PERSON_SHARE:.0%} of the "
                     f"{info.height} px frame were not taken for people")
    if not tracks:
        notes.append(f"no person was found on the {detected} frame(s) searched"
                     + (" (--min_person_px may be above the people's height)"
                        if detections is None else ""))
    return MadeTracks(tracks, notes, found_count, found_on)
