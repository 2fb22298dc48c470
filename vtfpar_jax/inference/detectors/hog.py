"""OpenCV's HOG person detectors (Dalal and Triggs; built-in linear SVMs, nothing to download).

A HOG window finds people of about one height; an image pyramid finds taller
ones. The frame is therefore enlarged first, and boxes are mapped back to the
frame's pixels. Two windows share the work:

- everyone: the 64x128 window of OpenCV's default people SVM (a person spans about
  96 px of it), on the frame enlarged so that `min_person_px` becomes
  TALL_ENLARGED px, over the whole pyramid;
- small people again, from `min_person_px` to about 1.5 times that: the 48x96
  window of the SVM trained on the Daimler pedestrian set (small pedestrians), on
  the frame enlarged so that `min_person_px` becomes SMALL_ENLARGED px, over
  SMALL_LEVELS pyramid levels. Each of its boxes must also look like a person to
  the default SVM: cut from the frame as enlarged for the default window and
  resized to 64x128, it must reach the margin CONFIRM_MARGIN there. Alone, the
  Daimler window put boxes on parts of tall people and on empty sky.

Boxes of both windows are merged by non-maximum suppression, and a box lying
mostly (CONTAINED of its area) inside a box at least CONTAINED_TALLER times taller
is dropped: a person's legs or torso, found as a small person.

The default window alone found small people less often than tall ones; the
confirmed Daimler window closes most of that gap with no more false boxes. The
constants were chosen on drawn street videos encoded as a camera encodes: the
figures, what else was tried, and the commands are in docs/tracking.md
("Tracking quality on drawn streets").

Scores are SVM margins passed through a logistic function, so a box on the
decision boundary scores 0.5 and the tracker's thresholds act on numbers in (0, 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vtfpar_jax.inference.detectors import base

TALL_ENLARGED = 160      # px: the height min_person_px is enlarged to for the 64x128 window
SMALL_ENLARGED = 100     # px: the height min_person_px is enlarged to for the 48x96 window
SMALL_LEVELS = 9         # pyramid levels of the 48x96 window: up to 1.05 ** 8 = 1.5x
SMALL_MARGIN = 1.0       # the Daimler SVM's margin a 48x96 window needs
CONFIRM_MARGIN = -1.0    # the default SVM's margin its boxes need too
DEFAULT_WINDOW = (64, 128)
WIN_STRIDE = (8, 8)
PADDING = (8, 8)
PYRAMID_SCALE = 1.05
MERGE_IOU = 0.4          # boxes of the two windows overlapping more are one person
CONTAINED = 0.7
CONTAINED_TALLER = 1.5


@dataclasses.dataclass(frozen=True)
class _Window:
    hog: object          # cv2.HOGDescriptor with its SVM
    upscale: float       # the frame's enlargement for it
    margin: float        # the SVM margin a window needs


class HogDetector(base.Detector):
    """Person boxes from OpenCV's HOG people SVMs, on frames enlarged so that people from
    `min_person_px` tall fill a window."""

    def __init__(self, min_person_px: float = base.MIN_PERSON_PX):
        cv2 = base.import_extra("cv2")
        self._cv2 = cv2
        svm = np.asarray(cv2.HOGDescriptor_getDefaultPeopleDetector(), np.float32).reshape(-1)
        tall = cv2.HOGDescriptor()
        tall.setSVMDetector(svm)
        small = cv2.HOGDescriptor((48, 96), (16, 16), (8, 8), (8, 8), 9, 1, -1.0,
                                  cv2.HOGDescriptor_L2Hys, 0.2, False, SMALL_LEVELS)
        small.setSVMDetector(cv2.HOGDescriptor_getDaimlerPeopleDetector())
        self._tall = _Window(tall, max(1.0, TALL_ENLARGED / float(min_person_px)), 0.0)
        self._small = _Window(small, max(1.0, SMALL_ENLARGED / float(min_person_px)),
                              SMALL_MARGIN)
        self._svm_weights, self._svm_bias = svm[:-1], float(svm[-1])
        self.description = (f"hog (OpenCV HOG, default 64x128 and Daimler 48x96 SVMs; frames "
                            f"enlarged {self._tall.upscale:.2f}x and {self._small.upscale:.2f}x "
                            f"for people from {min_person_px:g} px)")

    @classmethod
    def from_argument(cls, argument: str, options) -> HogDetector:
        if argument:
            raise base.DetectorError("hog takes no argument")
        return cls(options.min_person_px)

    def _enlarged(self, bgr: np.ndarray, window: _Window) -> np.ndarray:
        """The frame enlarged for `window` (cv2.resize copies it at an upscale of 1)."""
        return self._cv2.resize(bgr, None, fx=window.upscale, fy=window.upscale,
                                interpolation=self._cv2.INTER_LINEAR)

    def _boxes(self, enlarged: np.ndarray, window: _Window) -> base.Boxes:
        """The window's boxes, in the frame's pixels."""
        rects, margins = window.hog.detectMultiScale(enlarged, hitThreshold=window.margin,
                                                     winStride=WIN_STRIDE, padding=PADDING,
                                                     scale=PYRAMID_SCALE)
        if len(rects) == 0:
            return base.Boxes.empty()
        rects = np.asarray(rects, np.float32) / window.upscale
        xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        margins = np.asarray(margins, np.float32).reshape(-1)
        return base.Boxes(xyxy, 1.0 / (1.0 + np.exp(-margins)))

    def default_margins(self, enlarged: np.ndarray, boxes: base.Boxes) -> np.ndarray:
        """The default SVM's margin for each box, cut from the frame enlarged as for the
        default window (edges repeated where a box reaches outside) and resized to it."""
        cv2 = self._cv2
        corners = np.rint(boxes.xyxy * self._tall.upscale).astype(int)
        height, width = enlarged.shape[:2]
        pad = 1 + max(0, -corners[:, :2].min(), (corners[:, 2] - width).max(),
                      (corners[:, 3] - height).max())
        padded = cv2.copyMakeBorder(enlarged, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        margins = []
        for x0, y0, x1, y1 in corners + pad:
            crop = cv2.resize(padded[y0:y1, x0:x1], DEFAULT_WINDOW,
                              interpolation=cv2.INTER_LINEAR)
            features = self._tall.hog.compute(crop).reshape(-1)
            margins.append(float(features @ self._svm_weights) + self._svm_bias)
        return np.asarray(margins, np.float32)

    def __call__(self, frame: np.ndarray) -> base.Boxes:
        bgr = self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2BGR)
        enlarged = self._enlarged(bgr, self._tall)
        tall = self._boxes(enlarged, self._tall)
        small = self._boxes(self._enlarged(bgr, self._small), self._small)
        if len(small):
            small = small.select(self.default_margins(enlarged, small) >= CONFIRM_MARGIN)
        boxes = base.Boxes(np.concatenate([tall.xyxy, small.xyxy]),
                           np.concatenate([tall.scores, small.scores]))
        if len(boxes) == 0:
            return boxes
        return drop_parts(boxes.select(np.sort(base.nms(boxes.xyxy, boxes.scores, MERGE_IOU))))


def drop_parts(boxes: base.Boxes) -> base.Boxes:
    """`boxes` less those lying mostly (CONTAINED of their area) inside a box at least
    CONTAINED_TALLER times taller."""
    xyxy = boxes.xyxy
    inside = base.intersections(xyxy, xyxy)                       # [part, whole]
    width, height = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    part = ((inside >= CONTAINED * (width * height)[:, None])
            & (height[None, :] >= CONTAINED_TALLER * height[:, None]))
    return boxes.select(~part.any(axis=1))
