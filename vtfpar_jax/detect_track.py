"""Tracks made from the video itself: people detected per frame, then tracked (the `video` extra).

    tracks = tracks_for("street.mp4", video_stream.probe("street.mp4"))        # HOG + ByteTrack
    tracks = tracks_for("street.mp4", info, detections="dets.txt")             # file + ByteTrack

Detection: OpenCV's HOG person detector with its built-in linear SVM (Dalal and
Triggs; shipped inside OpenCV, nothing to download). It looks for people at
least 128 px tall (its 64x128 window) and is weak on small or crowded people:
for real footage a detector of your own, written as a MOT detections file
(`frame,-1,x,y,w,h,conf`), gives better tracks through --detections.

Tracking: supervision's ByteTrack. Its thresholds act on confidences in [0, 1];
HOG's scores are SVM margins (positive for a person), so they are passed
through a logistic function; a detections file's conf column is used as written.
"""

from __future__ import annotations

import warnings

import numpy as np
from tqdm import tqdm

from vtfpar_jax import mot, video_stream
from vtfpar_jax.errors import UserError

HOG_WIN_STRIDE = (8, 8)
HOG_PADDING = (8, 8)
HOG_SCALE = 1.05


class MissingExtraError(UserError, ImportError):
    """The built-in detection path without the `video` extra installed."""


def _imports():
    try:
        import cv2
        import supervision
    except ImportError as e:
        raise MissingExtraError(f"without --tracks, people are detected and tracked with "
                                f"OpenCV and supervision ({e.name} is not installed): "
                                "pip install 'vtfpar-jax[video]', or pass --tracks") from None
    return cv2, supervision


class HogPeopleDetector:
    """Person boxes in an RGB frame: OpenCV's default people detector (HOG + linear SVM)."""

    def __init__(self):
        cv2, _ = _imports()
        self._cv2 = cv2
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(xyxy (n, 4) float32, confidence (n,) float32 in (0, 1))."""
        bgr = self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2BGR)
        rects, scores = self._hog.detectMultiScale(bgr, winStride=HOG_WIN_STRIDE,
                                                   padding=HOG_PADDING, scale=HOG_SCALE)
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        rects = np.asarray(rects, np.float32)
        xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        margins = np.asarray(scores, np.float32).reshape(-1)
        return xyxy, 1.0 / (1.0 + np.exp(-margins))


def _boxes_xyxy(boxes: list[mot.Box]) -> tuple[np.ndarray, np.ndarray]:
    xyxy = np.asarray([[b.x, b.y, b.x + b.w, b.y + b.h] for b in boxes], np.float32)
    conf = np.asarray([b.conf for b in boxes], np.float32)
    return xyxy.reshape(-1, 4), conf


def tracks_for(path: str, info: video_stream.VideoInfo,
               detections: str | dict[int, list[mot.Box]] | None = None,
               progress: bool = True) -> dict[int, mot.Track]:
    """{id: Track} from ByteTrack over per-frame detections: from the `detections` MOT
    file (or what `mot.read_detections` read from it), or from the HOG detector run on
    every decoded frame. Possibly empty."""
    _, sv = _imports()
    given = mot.read_detections(detections) if isinstance(detections, str) else detections
    detector = None if given is not None else HogPeopleDetector()
    with warnings.catch_warnings():
        # supervision 0.30 marks ByteTrack deprecated (it moves to the `trackers` package,
        # which needs the GUI build of OpenCV); the pinned 0.30 still ships it.
        warnings.simplefilter("ignore", FutureWarning)
        tracker = sv.ByteTrack(frame_rate=max(1, round(float(info.fps))))
    boxes: dict[int, list[mot.Box]] = {}
    frames = (((n, None) for n in range(1, info.frames + 1)) if given is not None
              else video_stream.frames(path))
    for number, frame in tqdm(frames, total=info.frames, desc="frames (detect, track)",
                              unit="frame", disable=not progress, leave=False):
        if given is not None:
            xyxy, conf = _boxes_xyxy(given.get(number, []))
        else:
            xyxy, conf = detector(frame)
        found = sv.Detections(xyxy=xyxy, confidence=conf,
                              class_id=np.zeros(len(xyxy), np.int64))
        tracked = tracker.update_with_detections(found)
        for (x0, y0, x1, y1), track_id, score in zip(tracked.xyxy, tracked.tracker_id,
                                                     tracked.confidence, strict=True):
            boxes.setdefault(int(track_id), []).append(
                mot.Box(number, float(x0), float(y0), float(x1 - x0), float(y1 - y0),
                        float(score)))
    return {i: mot.Track(i, b) for i, b in sorted(boxes.items())}
