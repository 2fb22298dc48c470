"""Tracks scored against the truth with py-motmetrics (the `video` extra): MOTA, IDF1, ID switches.

    scores = mot_metrics.score(truth, made, num_frames)    # {'mota': ..., 'idf1': ..., ...}

A made box matches a true one at IoU >= 0.5 (the MOTChallenge rule). The
distances (1 - IoU, NaN where a pair may not match) are motmetrics' own
`distances.boxiou`, called here because motmetrics 1.4's `iou_matrix` around it
calls np.asfarray, which NumPy 2 removed; its matching and metrics are used as
they are.
"""

from __future__ import annotations

import numpy as np

from vtfpar_jax.inference import mot
from vtfpar_jax.inference.detectors import base

METRICS = ("mota", "idf1", "num_switches", "recall", "precision", "num_objects")
MATCH_IOU = 0.5


def _by_frame(tracks: dict[int, mot.Track]) -> dict[int, list[tuple[int, list[float]]]]:
    frames: dict[int, list] = {}
    for track in tracks.values():
        for b in track.boxes:
            frames.setdefault(b.frame, []).append((track.id, [b.x, b.y, b.w, b.h]))
    return frames


def iou_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) 1 - IoU of xywh boxes; NaN (no match) where IoU < MATCH_IOU."""
    a, b = (np.asarray(boxes, np.float64) for boxes in (a, b))
    iou = base.import_extra("motmetrics").distances.boxiou(a[:, None], b[None, :])
    return np.where(iou >= MATCH_IOU, 1 - iou, np.nan)


def score(truth: dict[int, mot.Track], made: dict[int, mot.Track],
          num_frames: int) -> dict[str, float]:
    """METRICS of `made` against `truth` over frames 1..num_frames."""
    mm = base.import_extra("motmetrics")
    accumulator = mm.MOTAccumulator(auto_id=True)
    true_at, made_at = _by_frame(truth), _by_frame(made)
    for number in range(1, num_frames + 1):
        t, m = true_at.get(number, []), made_at.get(number, [])
        distances = iou_distances(np.asarray([b for _, b in t]).reshape(-1, 4),
                                  np.asarray([b for _, b in m]).reshape(-1, 4))
        accumulator.update([i for i, _ in t], [i for i, _ in m], distances)
    summary = mm.metrics.create().compute(accumulator, metrics=list(METRICS), name="run")
    return {name: float(summary[name].iloc[0]) for name in METRICS}
