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
    """A detector that cannot be built: a missing file, an unknown layout, an unreachable hub."""


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

    kind: str = ""          # the KIND of --detector KIND:SOURCE
    source_hint: str = ""   # how SOURCE is written, for the error when it is missing

    @classmethod
    def from_argument(cls, argument: str, options) -> Detector:
        if not argument:
            raise DetectorError(f"--detector {cls.kind}: give {cls.source_hint}")
        return cls(argument, options.score_threshold)


def areas(xyxy: np.ndarray) -> np.ndarray:
    return np.prod(xyxy[..., 2:] - xyxy[..., :2], axis=-1)


def intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) areas where the xyxy boxes `a` and `b` overlap."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.prod(np.clip(hi - lo, 0, None), axis=-1)


def ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of the xyxy boxes `a` and `b`; NaN between
    two empty boxes."""
    inter = intersections(a, b)
    with np.errstate(invalid="ignore"):
        return inter / (areas(a)[:, None] + areas(b)[None, :] - inter)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        order = rest[~(ious(xyxy[i:i + 1], xyxy[rest])[0] > iou)]   # an empty box suppresses none
    return np.asarray(keep, np.int64)


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
