"""OpenCV's HOG person detector (Dalal and Triggs, its built-in linear SVM; nothing to download).

Its window is 64x128 px (a person spans about 96 px of it: the SVM was trained
with a margin around each person), so on its own it finds nobody much under
100 px tall, which is most people a surveillance camera sees. The frame is
therefore enlarged first, by SMALLEST_PERSON_ENLARGED / min_person_px (never
shrunk), and boxes are mapped back to the frame's pixels. 160 px was chosen on
drawn street videos encoded as a camera encodes them (people 48-192 px tall,
docs/tracking.md): it finds 48 px people about as often as 192 px ones; 96 px
(the window's own person height) misses most 48 px people. For 48 px that is a
3.3x enlargement: time per frame grows with its square.

Scores are SVM margins (positive: a person); they are passed through a logistic
function, so a box on the decision boundary scores 0.5 and the tracker's
thresholds act on numbers in (0, 1).
"""

from __future__ import annotations

import numpy as np

from vtfpar_jax.inference.detectors import base

SMALLEST_PERSON_ENLARGED = 160   # px: the height min_person_px is enlarged to
WIN_STRIDE = (8, 8)
PADDING = (8, 8)
PYRAMID_SCALE = 1.05


class HogDetector(base.Detector):
    """Person boxes from OpenCV's default people detector, on a frame enlarged so that
    people `min_person_px` tall fill its window."""

    def __init__(self, min_person_px: float = base.MIN_PERSON_PX, margin: float = 0.0):
        """margin: the SVM margin a window needs to count as a person (OpenCV's
        hitThreshold; 0 is the SVM's own boundary)."""
        cv2 = base.import_extra("cv2")
        self._cv2 = cv2
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.upscale = max(1.0, SMALLEST_PERSON_ENLARGED / float(min_person_px))
        self.margin = margin
        self.description = (f"hog (OpenCV HOG + linear SVM; frames enlarged {self.upscale:.2f}x "
                            f"for people from {min_person_px:g} px)")

    @classmethod
    def from_argument(cls, argument: str, options) -> HogDetector:
        if argument:
            raise base.DetectorError(f"--detector hog:{argument}: hog takes no argument")
        return cls(options.min_person_px)

    def __call__(self, frame: np.ndarray) -> base.Boxes:
        cv2 = self._cv2
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if self.upscale > 1.0:
            bgr = cv2.resize(bgr, None, fx=self.upscale, fy=self.upscale,
                             interpolation=cv2.INTER_LINEAR)
        rects, margins = self._hog.detectMultiScale(bgr, hitThreshold=self.margin,
                                                    winStride=WIN_STRIDE, padding=PADDING,
                                                    scale=PYRAMID_SCALE)
        if len(rects) == 0:
            return base.Boxes.empty()
        rects = np.asarray(rects, np.float32) / self.upscale
        xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        margins = np.asarray(margins, np.float32).reshape(-1)
        return base.Boxes(xyxy, 1.0 / (1.0 + np.exp(-margins)))
