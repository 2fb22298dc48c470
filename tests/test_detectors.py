"""vtfpar_jax.inference.detectors: each kind decodes a tiny random model's outputs into the
boxes worked
out by hand, keeps only the person class, and reports a bad --detector in one line.

The ONNX graphs are built here with onnx's helper API: their outputs are fixed random
tensors (plus zero times the image, so the image input is really read), written so that
every decoding step (letterbox scale, centre to corners, class filter, score threshold,
NMS, clipping) changes the answer. The Hugging Face model is a DETR from a config
with random weights, saved to a folder: nothing is downloaded.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from vtfpar_jax.inference import detectors

FRAME = (64, 48)        # (H, W): letterboxed into the graphs' 32x32 input at scale 0.5


def _constant_graph(path, outputs: dict[str, np.ndarray], names: str | None = None) -> str:
    """An ONNX model from image (1, 3, 32, 32) to the given tensors (+ 0 * sum(image))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Mul", ["image", "zero"], ["zeroed"]),
             helper.make_node("ReduceSum", ["zeroed"], ["nothing"], keepdims=0)]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    graph_outputs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names:
        model.metadata_props.add(key="names", value=names)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (*FRAME, 3), dtype=np.uint8)


def test_onnx_yolo_layout_without_nms(tmp_path):
    rng = np.random.default_rng(1)
    # Candidates as rows: cx, cy, w, h (input pixels), then the scores of 3 classes; the
    # first five by hand, seven more random ones that no class is sure of.
    boxes = np.array([[10, 10, 4, 8], [10.5, 10, 4, 8], [20, 20, 6, 10], [24, 8, 4, 6],
                      [5, 25, 2, 4]], np.float32)
    scores = np.array([[0.9, 0.1, 0.0], [0.7, 0.2, 0.1], [0.2, 0.95, 0.0], [0.6, 0.0, 0.3],
                       [0.3, 0.25, 0.1]], np.float32)
    noise = np.concatenate([rng.uniform(2, 30, (7, 4)), rng.uniform(0, 0.05, (7, 3))], axis=1)
    raw = np.concatenate([np.concatenate([boxes, scores], axis=1), noise]).T[None]  # (1, 7, 12)
    detector = detectors.build(f"onnx:{_constant_graph(tmp_path / 'y.onnx', {'out': raw})}")
    assert detector.layout == "yolo" and detector.person_class == 0
    found = detector(_frame())
    # By hand: corners = centre -/+ half size, divided by the letterbox scale 0.5; candidate 1
    # overlaps 0 (IoU 0.78) and scores lower: suppressed; 2 is not a person; 4 is under 0.5;
    # 3 reaches x = 52 > 48: clipped.
    np.testing.assert_allclose(found.xyxy, [[16, 12, 24, 28], [44, 10, 48, 22]])
    np.testing.assert_allclose(found.scores, [0.9, 0.6])

    # The graph's own class names decide which class is a person: now candidate 2 alone.
    named = _constant_graph(tmp_path / "named.onnx", {"out": raw},
                            "{0: 'car', 1: 'person', 2: 'dog'}")
    detector = detectors.build(f"onnx:{named}")
    assert detector.person_class == 1
    found = detector(_frame())
    np.testing.assert_allclose(found.xyxy, [[34, 30, 46, 50]])
    np.testing.assert_allclose(found.scores, [0.95])


def test_onnx_yolo_layout_with_nms_in_the_graph(tmp_path):
    rows = np.array([[2, 2, 10, 18, 0.8, 0], [4, 4, 8, 8, 0.9, 2], [1, 1, 3, 5, 0.3, 0],
                     [0, 0, 0, 0, 0, 0]], np.float32)[None]
    detector = detectors.build(f"onnx:{_constant_graph(tmp_path / 'n.onnx', {'out': rows})}")
    assert detector.layout == "yolo_nms"
    found = detector(_frame())
    np.testing.assert_allclose(found.xyxy, [[4, 4, 20, 36]])
    np.testing.assert_allclose(found.scores, [0.8])


def test_onnx_yolov5_layout_scores_objectness_times_class(tmp_path):
    # (1, 3 candidates x 21 cells of the 32x32 input's stride 8/16/32 grids, 5 + 2): cx, cy,
    # w, h in input pixels, objectness, person, other class.
    rows = np.zeros((63, 7), np.float32)
    rows[:4] = [[10, 10, 4, 8, 0.9, 0.9, 0.1], [10.5, 10, 4, 8, 0.9, 0.8, 0.1],
                [20, 20, 6, 10, 0.6, 0.9, 0.0], [24, 8, 4, 6, 0.9, 0.2, 0.9]]
    detector = detectors.build(f"onnx:{_constant_graph(tmp_path / 'v5.onnx', {'out': rows[None]})}")
    assert detector.layout == "yolov5" and detector.person_class == 0
    found = detector(_frame())
    # 0.9 x 0.9; candidate 1 (0.72) overlaps it at IoU 0.78: suppressed; 0.6 x 0.9; 0.9 x 0.2
    # is under 0.5. Corners divided by the letterbox scale 0.5.
    np.testing.assert_allclose(found.xyxy, [[16, 12, 24, 28], [34, 30, 46, 50]])
    np.testing.assert_allclose(found.scores, [0.81, 0.54], rtol=1e-6)


def test_onnx_yolox_layout_decodes_the_grid(tmp_path):
    # (1, 21 cells, 5 + 2): x, y offsets in cells, log w, log h in strides, objectness,
    # person, other class. Cells: 16 of stride 8 (4x4), 4 of stride 16, 1 of stride 32.
    rows = np.zeros((21, 7), np.float32)
    rows[0] = [0.5, 1.0, np.log(2), np.log(3), 0.9, 0.8, 0.0]    # cell (0, 0), stride 8
    rows[5] = [0, 0, 0, 0, 0.9, 0.5, 0.0]                        # cell (1, 1): 0.45 < 0.5
    rows[16] = [0.5, 0.5, 0, 0, 0.8, 0.1, 0.9]                   # stride 16: another class
    rows[20] = [0.25, 0.5, np.log(0.5), 0, 1.0, 0.6, 0.0]        # the stride 32 cell
    path = _constant_graph(tmp_path / "x.onnx", {"output": rows[None]})
    detector = detectors.build(f"onnx:{path}")
    assert detector.layout == "yolox" and detector.person_class == 0
    found = detector(_frame())
    # Cell 0: centre (4, 8), size 16 x 24 -> (-4, -4, 12, 20) / 0.5, clipped at 0; cell 20:
    # centre (8, 16), size 16 x 32 -> (0, 0, 16, 32) / 0.5 (IoU 0.37 with the first: kept).
    np.testing.assert_allclose(found.xyxy, [[0, 0, 24, 40], [0, 0, 32, 64]], atol=1e-5)
    np.testing.assert_allclose(found.scores, [0.72, 0.6], rtol=1e-6)
    # YOLOX's own exports take BGR in [0, 255], letterboxed with grey 114.
    red = np.zeros((*FRAME, 3), np.uint8)
    red[..., 0] = 255
    image, scale = detector._layout.prepare(red, detector.size, detector._cv2)
    assert scale == 0.5 and image.shape == (1, 3, 32, 32)
    assert (image[0, :, 0, 0] == [0, 0, 255]).all() and (image[0, :, 0, 31] == 114).all()


def test_onnx_unknown_layout_names_the_ones_read(tmp_path):
    path = _constant_graph(tmp_path / "u.onnx", {"out": np.zeros((1, 20, 7), np.float32)})
    with pytest.raises(detectors.DetectorError, match=r"outputs of shapes \[\(1, 20, 7\)\] for "
                       r"a 32x32 input: not a layout this reads \(yolov5: .*yolox: .*yolo_nms: "):
        detectors.build(f"onnx:{path}")


def test_onnx_detr_layout(tmp_path):
    logits = np.array([[0, 3, 0], [3, 0, 0], [0, 0, 3], [0, 2.3, 2.4]], np.float32)[None]
    boxes = np.array([[0.5, 0.5, 0.25, 0.5], [0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 1, 1],
                      [0.9, 0.9, 0.1, 0.1]], np.float32)[None]
    path = _constant_graph(tmp_path / "d.onnx", {"logits": logits, "pred_boxes": boxes})
    detector = detectors.build(f"onnx:{path}")
    assert detector.layout == "detr" and detector.person_class == 1
    found = detector(_frame())
    # Query 0: softmax person = e^3 / (e^3 + 2); box centre (24, 32), size 12 x 32 in a
    # 48 x 64 frame. Query 1 is class 0, query 2 "no object", query 3's person share < 0.5.
    np.testing.assert_allclose(found.xyxy, [[18, 16, 30, 48]], rtol=1e-6)
    np.testing.assert_allclose(found.scores, [np.e ** 3 / (np.e ** 3 + 2)], rtol=1e-6)


def _red_frame() -> np.ndarray:
    red = np.zeros((*FRAME, 3), np.uint8)
    red[..., 0] = 255
    return red


def test_onnx_yolo_nas_layout_centres_the_image_and_takes_scores_as_given(tmp_path):
    # (1, 21 cells, 4) x0, y0, x1, y1 in input pixels and (1, 21, 80) scores (COCO's count:
    # no class names needed). The 64x48 frame is scaled by (32 - 4) / 64 = 0.4375 to 28x21
    # and centred: 2 rows above, 5 columns left.
    boxes = np.zeros((21, 4), np.float32)
    scores = np.zeros((21, 80), np.float32)
    boxes[:4] = [[5, 2, 12, 16], [5.5, 2, 12.5, 16], [8.5, 9, 15.5, 23], [19, 16, 27, 30]]
    scores[:4, :2] = [[0.9, 0.0], [0.8, 0.0], [0.3, 0.95], [0.7, 0.1]]
    path = _constant_graph(tmp_path / "nas.onnx", {"pre_nms_bboxes_xyxy": boxes[None],
                                                   "pre_nms_scores": scores[None]})
    detector = detectors.build(f"onnx:{path}")
    assert detector.layout == "yolo_nas" and detector.person_class == 0
    found = detector(_frame())
    # (box - (5, 2)) / 0.4375; candidate 1 overlaps 0 and scores lower: suppressed; 2 is not
    # a person; 3 reaches x = 50.3 > 48: clipped. Scores unchanged (no sigmoid on top).
    np.testing.assert_allclose(found.xyxy, [[0, 0, 16, 32], [32, 32, 48, 64]], rtol=1e-6)
    np.testing.assert_allclose(found.scores, [0.9, 0.7], rtol=1e-6)
    image, scale = detector._layout.prepare(_red_frame(), detector.size, detector._cv2)
    assert scale == 0.4375 and image.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(image[0, :, 16, 16], [1, 0, 0])
    grey = np.full(3, 114 / 255, np.float32)
    for y, x in [(1, 16), (30, 16), (16, 4), (16, 26)]:     # the pads around the frame
        np.testing.assert_allclose(image[0, :, y, x], grey, err_msg=f"{y}, {x}")


def _rtdetr_outputs() -> tuple[np.ndarray, np.ndarray]:
    """(1, 5, 80) logits, (1, 5, 4) boxes (cx, cy, w, h as fractions) of five queries."""
    logits = np.full((5, 80), -6, np.float32)
    logits[:4, :2] = [[2.0, -3], [-1.0, -3], [-5.0, 5], [0.5, -3]]
    boxes = np.array([[0.5, 0.5, 0.25, 0.5], [0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1],
                      [0.1, 0.1, 0.4, 0.2], [0.5, 0.5, 1, 1]], np.float32)
    return logits[None], boxes[None]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_onnx_rtdetr_layout_scores_each_class_by_sigmoid(tmp_path):
    logits, boxes = _rtdetr_outputs()
    path = _constant_graph(tmp_path / "rt.onnx", {"scores": logits, "boxes": boxes})
    detector = detectors.build(f"onnx:{path}")
    assert detector.layout == "rtdetr" and detector.person_class == 0
    found = detector(_frame())
    # Query 0: centre (24, 32), size 12 x 32 of the 48 x 64 frame; query 1 sigmoid(-1) < 0.5;
    # query 2 another class; query 3 from x = -4.8: clipped.
    np.testing.assert_allclose(found.xyxy, [[18, 16, 30, 48], [0, 0, 14.4, 12.8]], rtol=1e-6)
    np.testing.assert_allclose(found.scores, _sigmoid(np.array([2.0, 0.5])), rtol=1e-6)
    # RTDetrImageProcessor's image: resized, in [0, 1], not normalised.
    image, scale = detector._layout.prepare(_red_frame(), detector.size, detector._cv2)
    assert scale == 1.0 and image.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(image[0, :, 0, 0], [1, 0, 0])


def test_onnx_class_names_beside_the_graph_pick_the_layout_and_person(tmp_path):
    # optimum's folder: model.onnx with transformers' output names, config.json's id2label.
    # Three names and three logits: per-class scores (rtdetr), not DETR's two + no object.
    logits, boxes = _rtdetr_outputs()
    logits = np.roll(logits[..., :3], 2, axis=-1)          # the person logit now in column 2
    path = _constant_graph(tmp_path / "model.onnx", {"logits": logits, "pred_boxes": boxes})
    (tmp_path / "config.json").write_text(
        '{"model_type": "rt_detr", "id2label": {"0": "car", "1": "dog", "2": "person"}}')
    detector = detectors.build(f"onnx:{path}")
    assert detector.layout == "rtdetr" and detector.person_class == 2
    np.testing.assert_allclose(detector(_frame()).scores, _sigmoid(np.array([2.0, 0.5])),
                               rtol=1e-6)


def test_onnx_ultralytics_rtdetr_layout(tmp_path):
    # One (1, 5 queries, 4 + 3) output: cx, cy, w, h as fractions, then scores as given;
    # Ultralytics writes the class names (person first here) into the metadata.
    rows = np.array([[0.5, 0.5, 0.25, 0.5, 0.9, 0.1, 0.0], [0.5, 0.5, 0.2, 0.2, 0.2, 0.9, 0.0],
                     [0.9, 0.9, 0.4, 0.4, 0.6, 0.0, 0.0], [0.5, 0.5, 1, 1, 0.1, 0.0, 0.0],
                     [0.2, 0.2, 0.1, 0.1, 0.0, 0.0, 0.8]], np.float32)[None]
    path = _constant_graph(tmp_path / "u.onnx", {"output0": rows},
                           "{0: 'person', 1: 'car', 2: 'dog'}")
    detector = detectors.build(f"onnx:{path}")
    assert detector.layout == "rtdetr_ultralytics" and detector.person_class == 0
    found = detector(_frame())
    np.testing.assert_allclose(found.xyxy, [[18, 16, 30, 48], [33.6, 44.8, 48, 64]], rtol=1e-6)
    np.testing.assert_allclose(found.scores, [0.9, 0.6], rtol=1e-6)


def test_onnx_ambiguous_graph_is_refused_and_a_named_layout_reads_it(tmp_path):
    # transformers' output names (DETR's, at any width) with 80 logits and no class names:
    # DETR's 79 classes + no object, or RT-DETR's 80 (COCO's count).
    logits, boxes = _rtdetr_outputs()
    path = _constant_graph(tmp_path / "a.onnx", {"logits": logits, "pred_boxes": boxes})
    with pytest.raises(detectors.DetectorError, match=(
            rf"^--detector onnx:{path}: outputs of shapes \[\(1, 5, 80\), \(1, 5, 4\)\] for a "
            r"32x32 input fit more than one layout \(rtdetr: .*; detr: .*\); name the one it "
            rf"is: onnx:{path}@rtdetr or onnx:{path}@detr$")):
        detectors.build(f"onnx:{path}")
    rtdetr = detectors.build(f"onnx:{path}@rtdetr")
    assert rtdetr.layout == "rtdetr" and rtdetr.person_class == 0
    np.testing.assert_allclose(rtdetr(_frame()).scores, _sigmoid(np.array([2.0, 0.5])),
                               rtol=1e-6)
    detr = detectors.build(f"onnx:{path}@detr", score_threshold=0.0)
    assert detr.layout == "detr" and detr.person_class == 1
    assert "detr layout as named" in detr.description


@pytest.mark.parametrize("suffix,names,fragment", [
    ("@yolov9", None, r"unknown layout 'yolov9'; the layouts are yolov5, yolox, yolo_nms, "
                      r"yolo, rtdetr_ultralytics, yolo_nas, rtdetr, detr$"),
    ("@yolox", None, r"outputs of shapes \[\(1, 5, 3\), \(1, 5, 4\)\] for a 32x32 input "
                     r"cannot be read as yolox: one \(1, cells, 5\+C\)$"),
    # Three logits: two classes + no object (detr) or three (rtdetr), never four.
    ("", "{0: 'car', 1: 'dog', 2: 'person', 3: 'cat'}",
     r"outputs of shapes \[\(1, 5, 3\), \(1, 5, 4\)\] for a 32x32 input and 4 class names: "
     r"not a layout this reads \(yolov5: .*\); by shape it could be rtdetr or detr, but its "
     r"class count is not theirs for its 4 class names; name the one it is: \S+@rtdetr or "
     r"\S+@detr$"),
    ("@rtdetr", "{0: 'car', 1: 'dog', 2: 'cat'}", r"metadata 'names' names no class 'person' "
                                                   r"\(3 classes: car, dog, cat\)$"),
    ("@rtdetr", "{0: 'car', 1: 'dog', 2: 'cat', 3: 'person'}",
     r"the person class is 3, but the rtdetr layout's outputs hold 3 classes$"),
    ("", "[car, dog", r"metadata 'names' is not a dict or list of class names: '\[car, dog'$"),
])
def test_onnx_bad_layout_or_class_names_is_one_error(tmp_path, suffix, names, fragment):
    logits, boxes = _rtdetr_outputs()
    path = _constant_graph(tmp_path / "b.onnx", {"scores": logits[..., :3], "boxes": boxes},
                           names)
    with pytest.raises(detectors.DetectorError,
                       match=rf"^--detector onnx:{re.escape(path + suffix)}: {fragment}"):
        detectors.build(f"onnx:{path}{suffix}")


@pytest.mark.slow   # about 30 s, mostly importing torch and transformers
def test_hugging_face_detr_keeps_the_person_class(tmp_path):
    import torch
    import transformers
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 8],
                                                  depths=[1, 1], out_features=["stage2"]),
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=12,
        id2label={0: "car", 1: "dog", 2: "person"})
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(config)
    processor = transformers.DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})
    model.save_pretrained(tmp_path / "a")
    processor.save_pretrained(tmp_path / "a")
    detector = detectors.build(f"hf:{tmp_path / 'a'}", score_threshold=0.0)
    assert detector.person_class == 2
    frame = _frame()
    found = detector(frame)
    # By hand from the raw outputs: softmax without the last "no object" column, each query's
    # best class and score; person queries only; centre boxes in fractions -> frame corners.
    inputs = detector._processor(images=frame, return_tensors="pt")
    with torch.no_grad():
        raw = detector._model(**inputs)
    probs = torch.softmax(raw.logits[0], -1)[:, :-1].numpy()
    labels, scores = probs.argmax(1), probs.max(1)
    cx, cy, w, h = raw.pred_boxes[0].numpy().T
    fh, fw = FRAME
    expected = np.stack([(cx - w / 2) * fw, (cy - h / 2) * fh, (cx + w / 2) * fw,
                         (cy + h / 2) * fh], 1)[labels == 2]
    assert len(expected), labels
    np.testing.assert_allclose(found.xyxy, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(found.scores, scores[labels == 2], rtol=1e-5)
    # The same weights with class 2 named otherwise: the boxes its queries found are not
    # people, and only queries of the class now named 'person' could be kept.
    model.config.id2label = {0: "person", 1: "car", 2: "dog"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(tmp_path / "b")
    processor.save_pretrained(tmp_path / "b")
    renamed = detectors.build(f"hf:{tmp_path / 'b'}", score_threshold=0.0)
    assert renamed.person_class == 0
    assert len(renamed(frame)) == (labels == 0).sum()


@pytest.mark.parametrize("spec,fragment", [
    ("onnx:missing.onnx", "missing.onnx: no such file"),
    ("onnx:", "give the model's path"),
    ("yolo:x.onnx", "unknown kind 'yolo'"),
    ("hog:7", "hog takes no argument"),
])
def test_bad_detector_spec_is_one_error(spec, fragment):
    with pytest.raises(detectors.DetectorError, match=fragment):
        detectors.build(spec)


def test_unreachable_hub_id_is_one_error(tmp_path, monkeypatch):
    """As offline: huggingface_hub reads HF_HUB_OFFLINE when imported, so its constant is
    set too (else the lookup waits on the network's timeouts)."""
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(detectors.DetectorError, match="hf:nobody/no-such-detector: cannot load"):
        detectors.build("hf:nobody/no-such-detector")
