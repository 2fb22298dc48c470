"""What every person detector is: a callable from an RGB frame to person boxes with scores.

A detector module defines one `Detector` subclass; the registry
(vtfpar_jax.inference.detectors) builds it from the user's `--detector KIND[:ARGUMENT]`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vtfpar_jax.errors import UserError

MIN_PERSON_PX = 48         # the smallest person a surveillance camera's user expects, by default
SCORE_THRESHOLD = 0.5      # a learned detector's person score, at least


class DetectorError(UserError, ValueError):
    """A detector that cannot be built: a missing file, an unknown layout, an unreachable hub.
    Detectors say what is wrong; detectors.build puts '--detector SPEC: ' before it."""


class MissingExtraError(UserError, ImportError):
    """A detector whose library is not installed."""


@dataclasses.dataclass(frozen=True)
class Boxes:
    """Person boxes in a frame's pixels: xyxy (n, 4) float32 and scores (n,) float32 in [0, 1]."""
    xyxy: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, np.float32).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, np.float32).reshape(-1))

    @classmethod
    def empty(cls) -> Boxes:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Boxes:
        return Boxes(self.xyxy[keep], self.scores[keep])


class Detector:
    """Person boxes in an (H, W, 3) uint8 RGB frame. `description` says what runs (recorded
    in tracks.json)."""

    description: str = ""

    @classmethod
    def from_argument(cls, argument: str, options) -> Detector:
        """Built from what follows 'KIND:' in --detector and the detectors.Options."""
        raise NotImplementedError

    def __call__(self, frame: np.ndarray) -> Boxes:
        raise NotImplementedError


class LearnedDetector(Detector):
    """A trained model the user names after 'KIND:' (a file or a Hub id), keeping person
    boxes scored at least --score_threshold. Subclasses take (source, score_threshold)."""

    source_hint: str = ""   # how SOURCE is written, for the error when it is missing

    @classmethod
    def from_argument(cls, argument: str, options) -> Detector:
        if not argument:
            raise DetectorError(f"give {cls.source_hint}")
        return cls(argument, options.score_threshold)


def intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) areas where the xyxy boxes `a` and `b` overlap.

    supervision gives overlap ratios only (IoU, or over the smaller box); a box's share
    covered by a taller one (hog.drop_parts) and the area labels cover (place_labels) need
    the area itself."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.prod(np.clip(hi - lo, 0, None), axis=-1)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by supervision's greedy non-maximum suppression (a box overlapping a
    better one at IoU > `iou` is dropped; an empty box drops none), best score first.

    supervision orders the boxes with NumPy's unstable sort, so which of two equally scored
    boxes survives would depend on it; they are ranked here first, the earlier box ahead."""
    sv = import_extra("supervision")
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(order))
    rank[order] = np.arange(len(order), 0, -1)
    keep = sv.box_non_max_suppression(np.c_[xyxy, rank], iou)
    return order[keep[order]]


def import_extra(name: str):
    """A module of an extra, or a MissingExtraError naming the pip command."""
    import importlib
    extras = {"cv2": "video", "supervision": "video", "onnxruntime": "export", "onnx": "export",
              "transformers": "dev", "torch": "dev", "motmetrics": "video"}
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingExtraError(f"{name} is not installed ({e}): pip install "
                                f"'vtfpar-jax[{extras.get(name, 'video')}]'") from None
