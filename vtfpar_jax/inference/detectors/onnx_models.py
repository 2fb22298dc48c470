"""Person detectors exported to ONNX, run with onnxruntime (the `export` extra).

    --detector onnx:yolov8n.onnx
    --detector onnx:rtdetr.onnx@rtdetr      # the layout named, where the graph leaves doubt

The graph takes one image, (1, 3, H, W) float32 (H, W from the graph; 640 where
they are not fixed). Its outputs are read in one of the layouts users export; each
is one row of LAYOUTS below, which prepares the image as its exporter trained on it
and decodes the outputs. A layout is taken only when it alone matches the graph
strictly: the number of outputs, their ranks and widths, and the class count
against the class names the model carries (`class_names`; without them, COCO's).
A graph that several layouts match is refused, naming them; `onnx:PATH@LAYOUT`
picks one, refused where the graph's outputs cannot be read so.

docs/tracking.md, "ONNX layouts", tables each layout's exporter, outputs, image
and decoding, and says how a layout is chosen without class names.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os
from collections.abc import Callable

import numpy as np
from scipy import special

from vtfpar_jax.errors import reason
from vtfpar_jax.inference.detectors import base

DEFAULT_SIDE = 640
NMS_IOU = 0.45
LETTERBOX_GREY = 114
# Per channel of the (1, 3, H, W) input.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
YOLO_STRIDES = (8, 16, 32)
YOLO_NAS_MARGIN = 4           # super-gradients scales COCO images to fit 636 of 640
COCO_CLASSES = 80             # the class count of COCO-trained detectors, person = 0
COCO_DETR_CLASSES = 91        # DETR's COCO logits: 91 category ids (person = 1), then no object
TRANSFORMERS_OUTPUTS = frozenset({"logits", "pred_boxes"})
UNSTATED = -1                 # a layout whose outputs do not show its class count


@functools.cache
def grid_cells(size: tuple[int, int]) -> np.ndarray:
    """(N, 3) x, y, stride of every cell of the stride 8, 16 and 32 grids over an (H, W)
    input, finest grid first, rows before columns: the order YOLO heads list them in."""
    cells = []
    for stride in YOLO_STRIDES:
        ys, xs = np.mgrid[0:size[0] // stride, 0:size[1] // stride]
        cells.append(np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, stride)], axis=1))
    cells = np.concatenate(cells).astype(np.float32)
    cells.flags.writeable = False    # cached: every call shares it
    return cells


def _per_cell(count, size: tuple[int, int]) -> int | None:
    """Candidates per grid cell in `count` candidates, or None for no whole number."""
    if not isinstance(count, int):
        return None
    cells = len(grid_cells(size))
    return count // cells if count % cells == 0 and count >= cells else None


def _columns(shapes: list[tuple], outputs: int, transposed: bool) -> tuple | None:
    """(N, K): the candidates and the columns of the class values, where the shapes are one
    (1, N, K) output ((1, K, N) transposed), or two: boxes (1, N, 4) and class values
    (1, N, K) in either order."""
    if len(shapes) != outputs or any(len(s) != 3 for s in shapes):
        return None
    if outputs == 1:
        return (shapes[0][2], shapes[0][1]) if transposed else shapes[0][1:]
    first, second = shapes
    if 4 not in (first[2], second[2]) or (
            first[1] != second[1] and isinstance(first[1], int) and isinstance(second[1], int)):
        return None
    classes = first if second[2] == 4 else second
    return classes[1], classes[2]


# How each layout's image is made: (the frame, the input's (H, W), cv2) -> (the (1, 3, H, W)
# float32 input, the frame's enlargement into it).

def _letterboxed(frame, size, cv2, margin: int = 0, centred: bool = False,
                 bgr_255: bool = False) -> tuple[np.ndarray, float]:
    """The frame scaled to fit (H - margin, W - margin) on an (H, W) grey canvas, at its top
    left or centred; RGB in [0, 1], or BGR in [0, 255]. Ultralytics and YOLOv5 take it top
    left; YOLOX's export BGR; YOLO-NAS (super-gradients' COCO recipe) within a margin of 4,
    centred."""
    (h, w), (fh, fw) = size, frame.shape[:2]
    scale = min((h - margin) / fh, (w - margin) / fw)
    resized = cv2.resize(frame, (round(fw * scale), round(fh * scale)),
                         interpolation=cv2.INTER_LINEAR)
    top, left = _centre(size, resized.shape[:2]) if centred else (0, 0)
    canvas = np.full((h, w, 3), LETTERBOX_GREY, np.uint8)
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    if bgr_255:
        return _planar(canvas[..., ::-1]), scale
    return _planar(canvas) / 255.0, scale


def _centre(size: tuple[int, int], resized: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of an (h, w) image centred in the input, as super-gradients pads."""
    return (size[0] - resized[0]) // 2, (size[1] - resized[1]) // 2


def _planar(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) image as the graph's (1, 3, H, W) float32."""
    return image.astype(np.float32).transpose(2, 0, 1)[None]


def _stretched(frame, size, cv2):
    """Resized to (H, W), RGB in [0, 1] (the RT-DETR layouts)."""
    return _planar(cv2.resize(frame, size[::-1], interpolation=cv2.INTER_LINEAR)) / 255.0, 1.0


def _imagenet(frame, size, cv2):
    """Resized to (H, W), normalised with ImageNet's mean and deviation (DETR)."""
    image, _ = _stretched(frame, size, cv2)
    return (image - IMAGENET_MEAN) / IMAGENET_STD, 1.0


# How each layout's outputs are read: (the batch's one image's outputs, float32, boxes
# first; the input's (H, W); the frame's (H, W); the scale; the person class) -> (person
# boxes x0, y0, x1, y1 in the frame's pixels, their scores), all candidates.

def _corners(cxcywh: np.ndarray) -> np.ndarray:
    return base.import_extra("supervision").xcycwh_to_xyxy(cxcywh)


def _in_frame(cxcywh: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes given as cx, cy, w, h fractions of the (stretched) image, in the frame's pixels."""
    fh, fw = frame_size
    return _corners(cxcywh) * [fw, fh, fw, fh]


def _yolo(outputs, size, frame_size, scale, person):
    rows = outputs[0].T                                     # (N, 4 + C): cx, cy, w, h
    return _corners(rows[:, :4]) / scale, rows[:, 4 + person]


def _yolo_nms(outputs, size, frame_size, scale, person):
    rows = outputs[0][outputs[0][:, 5].round() == person]   # x0, y0, x1, y1, score, class
    return rows[:, :4] / scale, rows[:, 4]


def _yolov5(outputs, size, frame_size, scale, person):
    rows = outputs[0]                                       # cx, cy, w, h, objectness
    return _corners(rows[:, :4]) / scale, rows[:, 4] * rows[:, 5 + person]


def _yolox(outputs, size, frame_size, scale, person):
    rows, cells = outputs[0], grid_cells(size)   # x, y in cells, log w, log h in strides
    xy = (rows[:, :2] + cells[:, :2]) * cells[:, 2:]
    wh = np.exp(rows[:, 2:4]) * cells[:, 2:]
    return _corners(np.concatenate([xy, wh], 1)) / scale, rows[:, 4] * rows[:, 5 + person]


def _rtdetr_ultralytics(outputs, size, frame_size, scale, person):
    rows = outputs[0]                                       # (Q, 4 + C)
    return _in_frame(rows[:, :4], frame_size), rows[:, 4 + person]


def _yolo_nas(outputs, size, frame_size, scale, person):
    boxes, scores = outputs
    top, left = _centre(size, (round(frame_size[0] * scale), round(frame_size[1] * scale)))
    return (boxes - [left, top, left, top]) / scale, scores[:, person]


def _rtdetr(outputs, size, frame_size, scale, person):
    boxes, logits = outputs
    return _in_frame(boxes, frame_size), special.expit(logits[:, person])


def _detr(outputs, size, frame_size, scale, person):
    boxes, logits = outputs                      # the last column of logits: no object
    return _in_frame(boxes, frame_size), special.softmax(logits, axis=1)[:, person]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one family of exported detectors takes its image and gives its boxes."""

    name: str
    written: str                # its outputs, as the errors list them
    outputs: int                # one, or two: boxes and class values
    extra: int                  # columns of the class values beyond the C classes
    candidates: Callable        # (N candidates, K columns, input (H, W)) -> whether they fit
    prepare: Callable           # the image, as its exporter trained on it
    decode: Callable            # the person boxes, not yet thresholded
    nms: bool                   # whether its graph leaves non-maximum suppression to us
    transposed: bool = False    # one (1, K, N) output, not (1, N, K)
    classes_shown: bool = True  # whether its outputs show the class count
    coco_classes: int | None = None    # without class names, the one class count read so
    coco_person: int = 0        # the person class when the model does not name its classes
    named_outputs: frozenset = frozenset()   # output names that are it, at any class count

    def class_count(self, shapes: list[tuple], size: tuple[int, int]) -> int | None:
        """The classes that outputs of these shapes hold in this layout (UNSTATED where they
        do not show it), or None where they cannot be read so: the strict matching."""
        found = _columns(shapes, self.outputs, self.transposed)
        if (found is None or not isinstance(found[1], int) or found[1] <= self.extra
                or not self.candidates(*found, size)):
            return None
        return found[1] - self.extra if self.classes_shown else UNSTATED

    def matches(self, outputs, size: tuple[int, int], names: dict[int, str] | None) -> bool:
        """Whether the graph's outputs are this layout's, beyond doubt: their shapes fit it
        and their class count is the names' (or, without names, one it reads unnamed)."""
        count = self.class_count([tuple(o.shape) for o in outputs], size)
        if count is None:
            return False
        if names is not None:
            return count in (UNSTATED, len(names))
        return (self.coco_classes in (None, count)
                or {o.name for o in outputs} == self.named_outputs)


LAYOUTS = (
    Layout("yolov5", "yolov5: one (1, 3 x cells, 5+C)", outputs=1, extra=5,
           candidates=lambda n, k, size: _per_cell(n, size) == 3,
           prepare=_letterboxed, decode=_yolov5, nms=True),
    Layout("yolox", "yolox: one (1, cells, 5+C)", outputs=1, extra=5,
           candidates=lambda n, k, size: _per_cell(n, size) == 1,
           prepare=functools.partial(_letterboxed, bgr_255=True), decode=_yolox, nms=True),
    Layout("yolo_nms", "yolo_nms: one (1, K, 6)", outputs=1, extra=0,
           candidates=lambda n, k, size: k == 6, classes_shown=False,
           prepare=_letterboxed, decode=_yolo_nms, nms=False),
    Layout("yolo", "yolo: one (1, 4+C, N)", outputs=1, extra=4, transposed=True,
           # more candidates than columns; not 6 wide (yolo_nms)
           candidates=lambda n, k, size: n != 6 and (not isinstance(n, int) or n > k),
           prepare=_letterboxed, decode=_yolo, nms=True),
    Layout("rtdetr_ultralytics",
           "rtdetr_ultralytics: one (1, Q, 4+C), Q not a whole number of cells",
           outputs=1, extra=4, candidates=lambda n, k, size: _per_cell(n, size) is None,
           prepare=_stretched, decode=_rtdetr_ultralytics, nms=False,
           coco_classes=COCO_CLASSES),
    Layout("yolo_nas", "yolo_nas: (1, cells, 4) x0y0x1y1 boxes and (1, cells, C) scores",
           outputs=2, extra=0, candidates=lambda n, k, size: _per_cell(n, size) == 1,
           prepare=functools.partial(_letterboxed, margin=YOLO_NAS_MARGIN, centred=True),
           decode=_yolo_nas, nms=True, coco_classes=COCO_CLASSES),
    Layout("rtdetr", "rtdetr: (1, Q, C) logits and (1, Q, 4) boxes, Q not one per cell",
           outputs=2, extra=0, candidates=lambda n, k, size: _per_cell(n, size) != 1,
           prepare=_stretched, decode=_rtdetr, nms=False, coco_classes=COCO_CLASSES),
    Layout("detr", "detr: (1, Q, C+1) logits and (1, Q, 4) boxes", outputs=2, extra=1,
           candidates=lambda n, k, size: True, prepare=_imagenet, decode=_detr, nms=False,
           coco_classes=COCO_DETR_CLASSES, coco_person=1, named_outputs=TRANSFORMERS_OUTPUTS),
)
BY_NAME = {k.name: k for k in LAYOUTS}


def _boxes_first(outputs) -> list[int]:
    """The graph's outputs in the order the layouts read them: of two, the boxes (the one
    named for boxes, else the one 4 wide), then the class values."""
    if len(outputs) == 1:
        return [0]
    by_name = [i for i, o in enumerate(outputs) if "box" in o.name.lower()]
    boxes = by_name[0] if len(by_name) == 1 else int(outputs[1].shape[2] == 4)
    return [boxes, 1 - boxes]


def _layout(outputs, size: tuple[int, int], names: dict[int, str] | None, spec: str,
            named: str | None) -> Layout:
    """The layout the user `named`, where the graph's outputs can be read so; else the one
    layout that matches them; or a DetectorError. `spec`: how the user names this model,
    onnx:PATH, for the message on how to pick."""
    shapes = [tuple(o.shape) for o in outputs]
    said = f"outputs of shapes {shapes} for a {size[0]}x{size[1]} input"
    if named is not None:
        if BY_NAME[named].class_count(shapes, size) is None:
            raise base.DetectorError(f"{said} cannot be read as {BY_NAME[named].written}")
        return BY_NAME[named]
    said += "" if names is None else f" and {len(names)} class names"
    found = [k for k in LAYOUTS if k.matches(outputs, size, names)]
    if len(found) > 1:
        raise base.DetectorError(
            f"{said} fit more than one layout (" + "; ".join(k.written for k in found)
            + "); name the one it is: " + " or ".join(f"{spec}@{k.name}" for k in found))
    if not found:
        shaped = [k for k in LAYOUTS if k.class_count(shapes, size) is not None]
        if shaped:
            counts = (f"its {len(names)} class names" if names is not None
                      else "COCO (the model names no classes)")
            advice = (f"; by shape it could be {' or '.join(k.name for k in shaped)}, but its "
                      f"class count is not theirs for {counts}; name the one it is: "
                      + " or ".join(f"{spec}@{k.name}" for k in shaped))
        else:
            advice = f"; if it is one of them, name it: {spec}@LAYOUT"
        raise base.DetectorError(f"{said}: not a layout this reads ("
                                 + "; ".join(k.written for k in LAYOUTS) + ")" + advice)
    return found[0]


def class_names(session, path: str) -> tuple[dict[int, str] | None, str]:
    """(class index -> name, where they were read) from where exporters write them, or
    (None, '') where the model names none:

    - the ONNX metadata `names`: a Python dict {0: 'person', ...} (Ultralytics: YOLOv8/11,
      RT-DETR; YOLOv5's export.py too), or a list;
    - `config.json` beside the graph with transformers' `id2label` (optimum writes the
      model's config next to its ONNX export).

    super-gradients (YOLO-NAS) writes no class names into the graph that we could find,
    and we could not confirm any other exporter's key; such a graph is read with COCO's
    class count and person class."""
    names = session.get_modelmeta().custom_metadata_map.get("names")
    if names:
        return _parsed_names(names, "metadata 'names'"), "metadata 'names'"
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.isfile(config):
        try:
            with open(config) as f:
                id2label = json.load(f).get("id2label")
        except (OSError, ValueError, AttributeError):
            id2label = None
        if isinstance(id2label, dict):
            return _parsed_names(id2label, f"id2label of {config}"), f"id2label of {config}"
    return None, ""


def _parsed_names(value: str | dict, where: str) -> dict[int, str]:
    """{index: name} of a dict or list of class names, or of its Python text."""
    try:
        if isinstance(value, str):
            value = ast.literal_eval(value)
        if isinstance(value, (list, tuple)):
            value = dict(enumerate(value))
        names = {int(k): str(v) for k, v in value.items()}
    except (ValueError, SyntaxError, TypeError, AttributeError):
        raise base.DetectorError(f"{where} is not a dict or list of class names: "
                                 f"{str(value)[:80]!r}") from None
    if sorted(names) != list(range(len(names))):
        raise base.DetectorError(f"{where}: class indices are not 0 to {len(names) - 1}")
    return names


def _person_class(names: dict[int, str] | None, where: str, layout: Layout) -> int:
    if names is None:
        return layout.coco_person
    people = [i for i, name in names.items() if name.lower() == "person"]
    if not people:
        shown = list(names.values())[:5] + (["..."] if len(names) > 5 else [])
        raise base.DetectorError(f"{where} names no class 'person' ({len(names)} classes: "
                                 + ", ".join(shown) + ")")
    return people[0]


def split_layout(argument: str) -> tuple[str, str | None]:
    """(path, layout name or None) of 'PATH' or 'PATH@LAYOUT' (a file whose own name holds
    '@' is a path)."""
    if os.path.isfile(argument) or "@" not in argument:
        return argument, None
    path, _, name = argument.rpartition("@")
    if name not in BY_NAME:
        raise base.DetectorError(f"unknown layout {name!r}; the layouts are "
                                 + ", ".join(BY_NAME))
    return path, name


class OnnxDetector(base.LearnedDetector):
    """An exported detector under onnxruntime, in one of the layouts above, its person class."""

    source_hint = "the model's path, onnx:MODEL.onnx (or onnx:MODEL.onnx@LAYOUT)"

    def __init__(self, argument: str, score_threshold: float = base.SCORE_THRESHOLD):
        path, named = split_layout(argument)
        ort = base.import_extra("onnxruntime")
        self._cv2 = base.import_extra("cv2")
        self._sv = base.import_extra("supervision")
        if not os.path.isfile(path):
            raise base.DetectorError("no such file")
        try:
            self._session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as e:   # onnxruntime raises its own classes for every kind of bad file
            raise base.DetectorError(f"not a readable ONNX model ({reason(e)})") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise base.DetectorError("expected one image input (1, 3, H, W); the graph has "
                                     f"{[i.shape for i in inputs]}")
        self._input = inputs[0].name
        self.size = tuple(side if isinstance(side, int) else DEFAULT_SIDE
                          for side in inputs[0].shape[2:])
        outputs = self._session.get_outputs()
        self._order = _boxes_first(outputs)
        names, where = class_names(self._session, path)
        self._layout = _layout(outputs, self.size, names, f"onnx:{path}", named)
        self.person_class = _person_class(names, where, self._layout)
        count = self._layout.class_count([tuple(o.shape) for o in outputs], self.size)
        if count not in (UNSTATED, None) and self.person_class >= count:
            raise base.DetectorError(f"the person class is {self.person_class}, but the "
                                     f"{self._layout.name} layout's outputs hold {count} classes")
        self.layout = self._layout.name
        self.score_threshold = score_threshold
        self.description = (f"onnx:{path} ({self.layout} layout"
                            + (" as named" if named else "")
                            + f", class {self.person_class}, score >= {score_threshold:g})")

    def __call__(self, frame: np.ndarray) -> base.Boxes:
        """Person boxes in the frame's pixels: those scoring at least the threshold, then
        NMS (IoU NMS_IOU) where the graph has none, as its exporter would have, clipped."""
        image, scale = self._layout.prepare(frame, self.size, self._cv2)
        outputs = self._session.run(None, {self._input: image})
        image_outputs = [np.asarray(outputs[i][0], np.float32) for i in self._order]
        xyxy, scores = self._layout.decode(image_outputs, self.size, frame.shape[:2], scale,
                                           self.person_class)
        keep = scores >= self.score_threshold
        found = base.Boxes(xyxy[keep], scores[keep])
        if self._layout.nms:
            found = found.select(base.nms(found.xyxy, found.scores, NMS_IOU))
        return base.Boxes(self._sv.clip_boxes(found.xyxy, frame.shape[1::-1]), found.scores)
