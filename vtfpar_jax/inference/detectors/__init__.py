"""Person detectors behind one interface, built from `--detector KIND[:ARGUMENT]`.

    detector = detectors.build("hog", min_person_px=48)
    detector = detectors.build("onnx:yolov8n.onnx", score_threshold=0.4)
    detector = detectors.build("onnx:rtdetr.onnx@rtdetr")         # its layout named
    detector = detectors.build("hf:PekingU/rtdetr_r18vd")          # Hub id or a local folder
    boxes = detector(frame)            # base.Boxes: xyxy in the frame's pixels, scores in [0, 1]

A new detector is one module with one `base.Detector` subclass that has a
`from_argument(argument, options)` classmethod, plus one line in REGISTRY. The
modules are imported on use, so OpenCV, onnxruntime and torch load only for the
detector asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib

from vtfpar_jax import errors
from vtfpar_jax.inference.detectors.base import (
    MIN_PERSON_PX,
    SCORE_THRESHOLD,
    Boxes,
    Detector,
    DetectorError,
)

__all__ = ["REGISTRY", "Boxes", "Detector", "DetectorError", "Options", "add_options", "build"]

# kind -> (module, class)
REGISTRY = {
    "hog": ("vtfpar_jax.inference.detectors.hog", "HogDetector"),
    "onnx": ("vtfpar_jax.inference.detectors.onnx_models", "OnnxDetector"),
    "hf": ("vtfpar_jax.inference.detectors.huggingface", "HuggingFaceDetector"),
}


@dataclasses.dataclass(frozen=True)
class Options:
    min_person_px: float = MIN_PERSON_PX     # the built-in detector's smallest person
    score_threshold: float = SCORE_THRESHOLD  # a learned detector's person score, at least


def add_options(parser: argparse.ArgumentParser, min_person_px: int | None = MIN_PERSON_PX,
                min_person_px_shown: str = "%(default)s") -> None:
    """--detector, --min_person_px and --score_threshold: what `build` takes."""
    parser.add_argument("--detector", default="hog",
                        help="hog (OpenCV's, built in), onnx:MODEL.onnx (YOLO or DETR layout) "
                        "or hf:HUB_ID_OR_FOLDER (transformers object detection); "
                        "default %(default)s")
    parser.add_argument("--min_person_px", type=errors.positive_int, default=min_person_px,
                        help="hog: height of the smallest person to find; frames are enlarged "
                        f"to bring it to the detector's window (default {min_person_px_shown})")
    parser.add_argument("--score_threshold", type=errors.probability, default=SCORE_THRESHOLD,
                        help="onnx/hf: person score to keep a box (default %(default)s)")


def build(spec: str, **options) -> Detector:
    """The detector `spec` names: 'hog', 'onnx:PATH[@LAYOUT]' or 'hf:HUB_ID_OR_FOLDER'. A
    detector's DetectorError says what is wrong; it is raised here after '--detector SPEC: '."""
    kind, _, argument = spec.partition(":")
    if kind not in REGISTRY:
        raise DetectorError(f"--detector {spec!r}: unknown kind {kind!r}; expected hog, "
                            "onnx:MODEL.onnx[@LAYOUT] or hf:HUB_ID_OR_FOLDER")
    module, cls = REGISTRY[kind]
    try:
        return getattr(importlib.import_module(module), cls).from_argument(argument,
                                                                           Options(**options))
    except DetectorError as e:
        raise DetectorError(f"--detector {spec.rstrip(':')}: {e}") from None
