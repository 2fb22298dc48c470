"""Person detectors exported to ONNX, run with onnxruntime (the `export` extra).

    --detector onnx:yolov8n.onnx

The graph takes one image, (1, 3, H, W) float32 RGB (H, W from the graph;
640 where they are not fixed). Its outputs are read in one of the layouts
users export, told apart by their number and shapes:

- yolo: one output (1, 4 + C, N), N > 4 + C (Ultralytics YOLOv8/11 without NMS):
  per candidate cx, cy, w, h in input pixels, then C class scores. The image is
  letterboxed (scaled to fit, padded right and below with grey 114), values in [0, 1];
  person boxes are kept above the score threshold, then non-maximum suppression
  (IoU NMS_IOU) as the exporter would have done.
- yolo_nms: one output (1, K, 6) (exported with NMS in the graph): x0, y0, x1, y1,
  score, class in input pixels; letterboxed as above.
- detr: two outputs, logits (1, Q, C + 1) and boxes (1, Q, 4) (DETR as exported
  from transformers): the image is resized to (H, W) and normalised with the
  ImageNet mean and deviation; scores are the softmax over classes (the last is
  "no object"), boxes cx, cy, w, h as fractions of the image.

The person class is the one the graph's metadata `names` calls 'person'
(Ultralytics writes it), else COCO's: 0 for the yolo layouts (80 classes), 1
for detr (COCO's 91 ids).
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
COCO_PERSON = {"yolo": 0, "yolo_nms": 0, "detr": 1}


def layout_of(shapes: list[tuple]) -> str:
    """'yolo', 'yolo_nms' or 'detr' from the output shapes, or a DetectorError."""
    if len(shapes) == 1 and len(shapes[0]) == 3:
        _, rows, cols = shapes[0]
        if cols == 6:
            return "yolo_nms"
        if isinstance(rows, int) and rows > 4 and (not isinstance(cols, int) or cols > rows):
            return "yolo"
    if len(shapes) == 2 and all(len(s) == 3 for s in shapes) and 4 in (shapes[0][2],
                                                                       shapes[1][2]):
        return "detr"
    raise base.DetectorError(f"outputs of shapes {shapes}: not a layout this reads (yolo: one "
                             "(1, 4+C, N); yolo_nms: one (1, K, 6); detr: (1, Q, C+1) logits "
                             "and (1, Q, 4) boxes)")


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lo = np.maximum(xyxy[i, :2], xyxy[rest, :2])
        hi = np.minimum(xyxy[i, 2:], xyxy[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        order = rest[inter / (areas[i] + areas[rest] - inter + 1e-9) <= iou]
    return np.asarray(keep, np.int64)


def _cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cxcy, wh = boxes[:, :2], boxes[:, 2:4]
    return np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)


def _person_class(session, layout: str) -> int:
    names = session.get_modelmeta().custom_metadata_map.get("names")
    if names:
        try:
            for index, name in ast.literal_eval(names).items():
                if str(name).lower() == "person":
                    return int(index)
        except (ValueError, SyntaxError, AttributeError):
            pass
    return COCO_PERSON[layout]


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
        outputs = self._session.get_outputs()
        try:
            self.layout = layout_of([tuple(o.shape) for o in outputs])
        except base.DetectorError as e:
            raise base.DetectorError(f"--detector onnx:{path}: {e}") from None
        # detr: the boxes output is the one named so (transformers: pred_boxes), else the
        # one whose last axis is 4.
        by_name = [i for i, o in enumerate(outputs) if "box" in o.name.lower()]
        self._boxes_output = (by_name[0] if len(by_name) == 1
                              else int(outputs[-1].shape[2] == 4))
        self.person_class = _person_class(self._session, self.layout)
        self.score_threshold = score_threshold
        self.description = (f"onnx:{path} ({self.layout} layout, class {self.person_class}, "
                            f"score >= {score_threshold:g})")

    def _letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        (h, w), (fh, fw) = self.size, frame.shape[:2]
        scale = min(h / fh, w / fw)
        resized = self._cv2.resize(frame, (round(fw * scale), round(fh * scale)),
                                   interpolation=self._cv2.INTER_LINEAR)
        canvas = np.full((h, w, 3), LETTERBOX_GREY, np.uint8)
        canvas[:resized.shape[0], :resized.shape[1]] = resized
        return canvas.astype(np.float32) / 255.0, scale

    def __call__(self, frame: np.ndarray) -> base.Boxes:
        fh, fw = frame.shape[:2]
        if self.layout == "detr":
            image = self._cv2.resize(frame, self.size[::-1], interpolation=self._cv2.INTER_LINEAR)
            image = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        else:
            image, scale = self._letterbox(frame)
        outputs = self._session.run(None, {self._input: image.transpose(2, 0, 1)[None]})
        return self.decode(outputs, (fh, fw), 1.0 if self.layout == "detr" else scale)

    def decode(self, outputs: list[np.ndarray], frame_size: tuple[int, int],
               scale: float) -> base.Boxes:
        """The graph's outputs as person boxes in the frame's pixels (`scale`: the letterbox's
        enlargement of the frame)."""
        fh, fw = frame_size
        if self.layout == "yolo":
            rows = np.asarray(outputs[0][0], np.float32).T          # (N, 4 + C)
            scores = rows[:, 4 + self.person_class]
            keep = scores >= self.score_threshold
            xyxy = _cxcywh_to_xyxy(rows[keep, :4]) / scale
            found = base.Boxes(xyxy, scores[keep])
            found = found.select(nms(found.xyxy, found.scores))
        elif self.layout == "yolo_nms":
            rows = np.asarray(outputs[0][0], np.float32)
            keep = (rows[:, 5].round() == self.person_class) & (rows[:, 4] >= self.score_threshold)
            found = base.Boxes(rows[keep, :4] / scale, rows[keep, 4])
        else:
            boxes, logits = outputs[self._boxes_output], outputs[1 - self._boxes_output]
            logits = np.asarray(logits[0], np.float32)
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            scores = probs[:, self.person_class]
            keep = scores >= self.score_threshold
            xyxy = _cxcywh_to_xyxy(np.asarray(boxes[0], np.float32)[keep]) * [fw, fh, fw, fh]
            found = base.Boxes(xyxy, scores[keep])
        found.xyxy[:, 0::2] = found.xyxy[:, 0::2].clip(0, fw)
        found.xyxy[:, 1::2] = found.xyxy[:, 1::2].clip(0, fh)
        return found
