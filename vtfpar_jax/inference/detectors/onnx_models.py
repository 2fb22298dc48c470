"""Person detectors exported to ONNX, run with onnxruntime (the `export` extra).

    --detector onnx:yolov8n.onnx

The graph takes one image, (1, 3, H, W) float32 (H, W from the graph; 640 where
they are not fixed). Its outputs are read in one of the layouts users export,
told apart by their number and shapes; each is one `Layout` below, which
prepares the image as its exporter trained on it and decodes the outputs:

- yolo: one output (1, 4 + C, N), N > 4 + C (Ultralytics YOLOv8/11 without NMS):
  per candidate cx, cy, w, h in input pixels, then C class scores.
- yolo_nms: one output (1, K, 6) (exported with NMS in the graph): x0, y0, x1, y1,
  score, class in input pixels.
- yolov5: one output (1, N, 5 + C) with N three candidates per cell of the stride
  8, 16 and 32 grids (YOLOv5, YOLOv7): cx, cy, w, h in input pixels, objectness,
  C class scores; a box's score is objectness times class score.
- yolox: one output (1, N, 5 + C) with N one candidate per cell of those grids
  (YOLOX as its export script writes it, the head not decoded): x, y offsets in
  cells, log w, log h in strides, objectness, C class scores. Its image is BGR in
  [0, 255].
- detr: two outputs, logits (1, Q, C + 1) and boxes (1, Q, 4) (DETR as exported
  from transformers): the image is resized to (H, W) and normalised with the
  ImageNet mean and deviation; scores are the softmax over classes (the last is
  "no object"), boxes cx, cy, w, h as fractions of the image.

The YOLO layouts letterbox the image (scaled to fit, padded right and below with
grey 114; RGB in [0, 1] unless said), and those without NMS in the graph keep
person boxes above the score threshold, then apply non-maximum suppression (IoU
NMS_IOU) as the exporter would have. The person class is the one the graph's
metadata `names` calls 'person' (Ultralytics writes it), else COCO's: 0 for the
YOLO layouts (80 classes), 1 for detr (COCO's 91 ids).
"""

from __future__ import annotations

import ast
import os

import numpy as np

from vtfpar_jax.inference.detectors import base

DEFAULT_SIDE = 640
NMS_IOU = 0.45
LETTERBOX_GREY = 114
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
YOLO_STRIDES = (8, 16, 32)


def _cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cxcy, wh = boxes[:, :2], boxes[:, 2:4]
    return np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)


def grid_cells(size: tuple[int, int]) -> np.ndarray:
    """(N, 3) x, y, stride of every cell of the stride 8, 16 and 32 grids over an (H, W)
    input, finest grid first, rows before columns: the order YOLO heads list them in."""
    cells = []
    for stride in YOLO_STRIDES:
        ys, xs = np.mgrid[0:size[0] // stride, 0:size[1] // stride]
        cells.append(np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, stride)], axis=1))
    return np.concatenate(cells).astype(np.float32)


def _kept_people(xyxy: np.ndarray, scores: np.ndarray, threshold: float) -> base.Boxes:
    """Boxes scoring at least `threshold`, then NMS (for graphs without it)."""
    keep = scores >= threshold
    found = base.Boxes(xyxy[keep], scores[keep])
    return found.select(base.nms(found.xyxy, found.scores, NMS_IOU))


class Layout:
    """How one family of exported detectors takes its image and gives its boxes."""

    name = ""
    written = ""          # its outputs, as the error for an unknown layout lists them
    coco_person = 0       # the person class when the graph does not name its classes

    @staticmethod
    def matches(shapes: list[tuple], size: tuple[int, int]) -> bool:
        raise NotImplementedError

    @classmethod
    def for_graph(cls, outputs, size: tuple[int, int]) -> Layout:
        """The layout, built for the graph's outputs and its (H, W) input."""
        return cls()

    def prepare(self, frame: np.ndarray, size: tuple[int, int], cv2) -> tuple[np.ndarray, float]:
        """(the (1, 3, H, W) float32 input, the frame's enlargement into it)."""
        canvas, scale = letterbox(frame, size, cv2)
        return (canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)[None], scale

    def decode(self, outputs: list[np.ndarray], frame_size: tuple[int, int], scale: float,
               person: int, threshold: float) -> base.Boxes:
        """Person boxes in the frame's pixels (not yet clipped to it)."""
        raise NotImplementedError


def letterbox(frame: np.ndarray, size: tuple[int, int], cv2) -> tuple[np.ndarray, float]:
    """(the frame scaled to fit (H, W) and padded right and below with grey, the scale)."""
    (h, w), (fh, fw) = size, frame.shape[:2]
    scale = min(h / fh, w / fw)
    resized = cv2.resize(frame, (round(fw * scale), round(fh * scale)),
                         interpolation=cv2.INTER_LINEAR)
    canvas = np.full((h, w, 3), LETTERBOX_GREY, np.uint8)
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    return canvas, scale


class Yolo(Layout):
    name, written = "yolo", "yolo: one (1, 4+C, N)"

    @staticmethod
    def matches(shapes, size):
        if len(shapes) != 1 or len(shapes[0]) != 3:
            return False
        _, rows, cols = shapes[0]
        return (cols != 6 and isinstance(rows, int) and rows > 4
                and (not isinstance(cols, int) or cols > rows))

    def decode(self, outputs, frame_size, scale, person, threshold):
        rows = np.asarray(outputs[0][0], np.float32).T          # (N, 4 + C)
        return _kept_people(_cxcywh_to_xyxy(rows[:, :4]) / scale, rows[:, 4 + person],
                            threshold)


class YoloNms(Layout):
    name, written = "yolo_nms", "yolo_nms: one (1, K, 6)"

    @staticmethod
    def matches(shapes, size):
        return len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][2] == 6

    def decode(self, outputs, frame_size, scale, person, threshold):
        rows = np.asarray(outputs[0][0], np.float32)
        keep = (rows[:, 5].round() == person) & (rows[:, 4] >= threshold)
        return base.Boxes(rows[keep, :4] / scale, rows[keep, 4])


def _per_cell(shapes: list[tuple], size: tuple[int, int]) -> int | None:
    """Candidates per grid cell of a (1, N, 5 + C) output, or None for another shape."""
    if len(shapes) != 1 or len(shapes[0]) != 3 or not isinstance(shapes[0][1], int):
        return None
    cells = len(grid_cells(size))
    count = shapes[0][1]
    return count // cells if count % cells == 0 and count >= cells else None


class Yolov5(Layout):
    name, written = "yolov5", "yolov5: one (1, 3 x cells, 5+C)"

    @staticmethod
    def matches(shapes, size):
        return _per_cell(shapes, size) == 3

    def decode(self, outputs, frame_size, scale, person, threshold):
        rows = np.asarray(outputs[0][0], np.float32)            # (N, 5 + C)
        return _kept_people(_cxcywh_to_xyxy(rows[:, :4]) / scale,
                            rows[:, 4] * rows[:, 5 + person], threshold)


class Yolox(Layout):
    name, written = "yolox", "yolox: one (1, cells, 5+C)"

    def __init__(self, size: tuple[int, int]):
        self.cells = grid_cells(size)

    @classmethod
    def for_graph(cls, outputs, size):
        return cls(size)

    @staticmethod
    def matches(shapes, size):
        return _per_cell(shapes, size) == 1

    def prepare(self, frame, size, cv2):
        canvas, scale = letterbox(frame, size, cv2)
        return canvas[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None], scale

    def decode(self, outputs, frame_size, scale, person, threshold):
        rows = np.asarray(outputs[0][0], np.float32)            # (N, 5 + C)
        xy = (rows[:, :2] + self.cells[:, :2]) * self.cells[:, 2:]
        wh = np.exp(rows[:, 2:4]) * self.cells[:, 2:]
        return _kept_people(_cxcywh_to_xyxy(np.concatenate([xy, wh], 1)) / scale,
                            rows[:, 4] * rows[:, 5 + person], threshold)


class Detr(Layout):
    name, written, coco_person = "detr", "detr: (1, Q, C+1) logits and (1, Q, 4) boxes", 1

    def __init__(self, boxes_output: int):
        self.boxes_output = boxes_output

    @classmethod
    def for_graph(cls, outputs, size):
        # The boxes output is the one named so (transformers: pred_boxes), else the one
        # whose last axis is 4.
        by_name = [i for i, o in enumerate(outputs) if "box" in o.name.lower()]
        return cls(by_name[0] if len(by_name) == 1 else int(outputs[-1].shape[2] == 4))

    @staticmethod
    def matches(shapes, size):
        return (len(shapes) == 2 and all(len(s) == 3 for s in shapes)
                and 4 in (shapes[0][2], shapes[1][2]))

    def prepare(self, frame, size, cv2):
        image = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_LINEAR)
        image = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return image.transpose(2, 0, 1)[None], 1.0

    def decode(self, outputs, frame_size, scale, person, threshold):
        fh, fw = frame_size
        boxes, logits = outputs[self.boxes_output], outputs[1 - self.boxes_output]
        logits = np.asarray(logits[0], np.float32)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        scores = probs[:, person]
        keep = scores >= threshold
        xyxy = _cxcywh_to_xyxy(np.asarray(boxes[0], np.float32)[keep]) * [fw, fh, fw, fh]
        return base.Boxes(xyxy, scores[keep])


LAYOUTS = (Yolov5, Yolox, YoloNms, Yolo, Detr)   # the first that matches is taken


def _layout(outputs, size: tuple[int, int]) -> Layout:
    """The layout of the graph's outputs, built for it; or a DetectorError."""
    shapes = [tuple(o.shape) for o in outputs]
    kind = next((k for k in LAYOUTS if k.matches(shapes, size)), None)
    if kind is None:
        raise base.DetectorError(f"outputs of shapes {shapes} for a {size[0]}x{size[1]} input: "
                                 "not a layout this reads ("
                                 + "; ".join(k.written for k in LAYOUTS) + ")")
    return kind.for_graph(outputs, size)


def _person_class(session, layout: Layout) -> int:
    names = session.get_modelmeta().custom_metadata_map.get("names")
    if names:
        try:
            for index, name in ast.literal_eval(names).items():
                if str(name).lower() == "person":
                    return int(index)
        except (ValueError, SyntaxError, AttributeError):
            pass
    return layout.coco_person


class OnnxDetector(base.LearnedDetector):
    """An exported detector under onnxruntime, in one of the layouts above, its person class."""

    kind = "onnx"
    source_hint = "the model's path, onnx:MODEL.onnx"

    def __init__(self, path: str, score_threshold: float = base.SCORE_THRESHOLD):
        ort = base.import_extra("onnxruntime")
        cv2 = base.import_extra("cv2")
        if not os.path.isfile(path):
            raise base.DetectorError(f"--detector onnx:{path}: no such file")
        try:
            self._session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as e:   # onnxruntime raises its own classes for every kind of bad file
            raise base.DetectorError(f"--detector onnx:{path}: not a readable ONNX model "
                                     f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self._cv2 = cv2
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise base.DetectorError(f"--detector onnx:{path}: expected one image input "
                                     f"(1, 3, H, W); the graph has {[i.shape for i in inputs]}")
        self._input = inputs[0].name
        h, w = inputs[0].shape[2:]
        self.size = (h if isinstance(h, int) else DEFAULT_SIDE,
                     w if isinstance(w, int) else DEFAULT_SIDE)
        try:
            self._layout = _layout(self._session.get_outputs(), self.size)
        except base.DetectorError as e:
            raise base.DetectorError(f"--detector onnx:{path}: {e}") from None
        self.layout = self._layout.name
        self.person_class = _person_class(self._session, self._layout)
        self.score_threshold = score_threshold
        self.description = (f"onnx:{path} ({self.layout} layout, class {self.person_class}, "
                            f"score >= {score_threshold:g})")

    def __call__(self, frame: np.ndarray) -> base.Boxes:
        image, scale = self._layout.prepare(frame, self.size, self._cv2)
        outputs = self._session.run(None, {self._input: image})
        return self.decode(outputs, frame.shape[:2], scale)

    def decode(self, outputs: list[np.ndarray], frame_size: tuple[int, int],
               scale: float) -> base.Boxes:
        """The graph's outputs as person boxes in the frame's pixels (`scale`: the frame's
        enlargement into the input)."""
        fh, fw = frame_size
        found = self._layout.decode(outputs, frame_size, scale, self.person_class,
                                    self.score_threshold)
        found.xyxy[:, 0::2] = found.xyxy[:, 0::2].clip(0, fw)
        found.xyxy[:, 1::2] = found.xyxy[:, 1::2].clip(0, fh)
        return found
