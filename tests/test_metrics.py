"""Metrics on hand-computed tables: 4 samples of a 5-column set (2 binaries, pose of 3)."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest

from vtfpar_jax.attributes import SYNTHETIC, AttributeSet, Group
from vtfpar_jax.evaluation import metrics

TINY = AttributeSet(
    name="tiny",
    columns=("hat", "bag", "pose: front", "pose: side", "pose: back"),
    groups=(Group("hat", (0,)), Group("bag", (1,)), Group("pose", (2, 3, 4))),
    published_phrases=("hat", "bag", "front", "side", "back"),
    expanded_phrases=("wears a hat", "carries a bag", "faces", "side", "back"),
)

LABELS = np.array([[1, 0, 1, 0, 0],    # hat, pose front
                   [0, 1, 0, 1, 0],    # bag, pose side
                   [1, 1, 0, 0, 1],    # hat, bag, pose back
                   [0, 0, 1, 0, 0]])   # pose front
# 0.45 and 0.5 sit exactly on the two thresholds: both must count as negative.
PROBS = np.array([[0.90, 0.45, 0.70, 0.20, 0.10],
                  [0.30, 0.80, 0.50, 0.46, 0.00],
                  [0.45, 0.60, 0.10, 0.30, 0.20],
                  [0.20, 0.10, 0.90, 0.55, 0.05]])


def test_group_metrics_hand_computed():
    # Predictions at > 0.45:
    #   [1 0 1 0 0], [0 1 1 1 0], [0 1 0 0 0], [0 0 1 1 0]
    # hat:  TP 1 TN 2 FP 0 FN 1 -> acc 3/4, prec 1,   rec 1/2, F1 2/3
    # bag:  TP 2 TN 2           -> all 1
    # pose: TP 3 TN 6 FP 2 FN 1 -> acc 9/12, prec 3/5, rec 3/4, F1 2/3
    result = metrics.group_metrics(PROBS, LABELS, TINY)
    hat, bag, pose = (result["groups"][n] for n in ("hat", "bag", "pose"))
    assert (hat["tp"], hat["tn"], hat["fp"], hat["fn"]) == (1, 2, 0, 1)
    assert (pose["tp"], pose["tn"], pose["fp"], pose["fn"]) == (3, 6, 2, 1)
    np.testing.assert_allclose([hat["acc"], hat["prec"], hat["rec"], hat["f1"]],
                               [3 / 4, 1, 1 / 2, 2 / 3])
    np.testing.assert_allclose([bag["acc"], bag["prec"], bag["rec"], bag["f1"]], [1, 1, 1, 1])
    np.testing.assert_allclose([pose["acc"], pose["prec"], pose["rec"], pose["f1"]],
                               [3 / 4, 3 / 5, 3 / 4, 2 / 3])
    np.testing.assert_allclose([result["acc"], result["prec"], result["rec"], result["f1"]],
                               [2.5 / 3, 2.6 / 3, 2.25 / 3, 7 / 9])
    assert result["threshold"] == 0.45


def test_group_metrics_zero_over_zero_is_zero():
    # Nothing predicted and nothing true: prec, rec and F1 are 0/0 -> 0, acc is 1.
    labels = np.zeros((2, TINY.num_attributes), int)
    labels[:, 2] = 1  # pose stays one-hot; hat and bag have no positives
    probs = np.zeros(labels.shape)
    hat = metrics.group_metrics(probs, labels, TINY)["groups"]["hat"]
    assert hat == {"acc": 1.0, "prec": 0.0, "rec": 0.0, "f1": 0.0,
                   "tp": 0, "tn": 2, "fp": 0, "fn": 0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prob_equal_to_threshold_is_negative(dtype):
    labels = np.array([[1, 0, 1, 0, 0]])
    at = np.array([[0.45, 0.0, 1.0, 0.0, 0.0]], dtype)
    above = np.array([[0.4501, 0.0, 1.0, 0.0, 0.0]], dtype)
    assert metrics.group_metrics(at, labels, TINY)["groups"]["hat"]["tp"] == 0
    assert metrics.group_metrics(above, labels, TINY)["groups"]["hat"]["tp"] == 1
    at_half = np.array([[0.5, 0.0, 1.0, 0.0, 0.0]], dtype)
    assert metrics.par_metrics(at_half, labels)["attributes"]["tpr"][0] == 0.0
    assert metrics.chen_metrics(at_half, labels, TINY)["groups"]["hat"]["acc"] == 0.0


def test_par_metrics_hand_computed():
    # Predictions at > 0.5:
    #   [1 0 1 0 0], [0 1 0 0 0], [0 1 0 0 0], [0 0 1 1 0]
    result = metrics.par_metrics(PROBS, LABELS)
    per = result["attributes"]
    # hat: TPR 1/2 TNR 1; bag, front: perfect; side: TPR 0 TNR 2/3; back: TPR 0 TNR 1.
    np.testing.assert_allclose(per["tpr"], [1 / 2, 1, 1, 0, 0])
    np.testing.assert_allclose(per["tnr"], [1, 1, 1, 2 / 3, 1])
    np.testing.assert_allclose(per["ma"], [3 / 4, 1, 1, 1 / 3, 1 / 2])
    np.testing.assert_allclose(per["acc"], [3 / 4, 1, 1, 1 / 2, 3 / 4])
    assert per["positives"] == [2, 2, 2, 1, 1]
    assert per["negatives"] == [2, 2, 2, 3, 3]
    np.testing.assert_allclose(result["ma"], 43 / 60)
    # Per sample (|P∩Y|, |P∪Y|, |P|, |Y|): (2,2,2,2) (1,2,1,2) (1,3,1,3) (1,2,2,1).
    np.testing.assert_allclose(result["acc"], (1 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    np.testing.assert_allclose(result["prec"], (1 + 1 + 1 + 1 / 2) / 4)
    np.testing.assert_allclose(result["rec"], (1 + 1 / 2 + 1 / 3 + 1) / 4)
    # F1 of the means, 2 (7/8)(17/24) / (7/8 + 17/24), not the mean of per-sample F1s.
    np.testing.assert_allclose(result["f1"], 119 / 152)


def test_par_metrics_degenerate_attributes():
    # Column 0 has no positive, column 1 no negative: mA_j is the one defined rate.
    labels = np.array([[0, 1], [0, 1], [0, 1], [0, 1]])
    probs = np.array([[0.9, 0.9], [0.1, 0.9], [0.1, 0.1], [0.1, 0.1]])
    per = metrics.par_metrics(probs, labels)["attributes"]
    assert per["tpr"] == [None, 0.5]
    assert per["tnr"] == [0.75, None]
    np.testing.assert_allclose(per["ma"], [0.75, 0.5])


def test_par_metrics_empty_samples():
    # Sample 0: P = Y = {} -> perfect. Sample 1: P = {0}, Y = {} -> all 0.
    # Sample 2: P = {}, Y = {1} -> all 0.
    labels = np.array([[0, 0], [0, 0], [0, 1]])
    probs = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.1]])
    result = metrics.par_metrics(probs, labels)
    np.testing.assert_allclose([result["acc"], result["prec"], result["rec"]], [1 / 3] * 3)


def test_chen_metrics_hand_computed():
    result = metrics.chen_metrics(PROBS, LABELS, TINY)
    hat, bag, pose = (result["groups"][n] for n in ("hat", "bag", "pose"))
    # hat at > 0.5: true [1 0 1 0], predicted [1 0 0 0]: acc 3/4;
    # F1(neg) = 2*2/(2*2+1) = 4/5, F1(pos) = 2/(2+1) = 2/3, macro 11/15.
    assert hat["acc"] == 0.75
    np.testing.assert_allclose(hat["class_f1"], [4 / 5, 2 / 3])
    np.testing.assert_allclose(hat["f1"], 11 / 15)
    assert bag["acc"] == 1.0 and bag["f1"] == 1.0
    # pose argmax: predicted front, front, side, front; true front, side, back, front.
    # front: TP 2 FP 1 -> 4/5; side: FP 1 FN 1 -> 0; back: FN 1 -> 0.
    assert pose["acc"] == 0.5
    np.testing.assert_allclose(pose["class_f1"], [4 / 5, 0, 0])
    np.testing.assert_allclose(pose["f1"], 4 / 15)
    np.testing.assert_allclose([result["acc"], result["f1"]], [3 / 4, 2 / 3])


def test_chen_macro_f1_skips_classes_that_never_occur():
    # 'back' is neither true nor predicted: macro over front and side only.
    labels = np.array([[0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 0]])
    probs = np.array([[0, 0, 0.9, 0.1, 0.0], [0, 0, 0.2, 0.8, 0.0], [0, 0, 0.7, 0.3, 0.1]])
    pose = metrics.chen_metrics(probs, labels, TINY)["groups"]["pose"]
    # front: TP 1 FP 1 -> 2/3; side: TP 1 FN 1 -> 2/3.
    assert pose["class_f1"][2] is None
    np.testing.assert_allclose(pose["f1"], 2 / 3)


def test_chen_rejects_labels_that_are_not_one_hot():
    labels = LABELS.copy()
    labels[1, 2] = 1  # two poses at once
    with pytest.raises(ValueError, match="group 'pose'.*not one-hot"):
        metrics.chen_metrics(PROBS, labels, TINY)


def test_evaluate_all_drops_masked_rows():
    # Padding rows that are confidently wrong: they would move every figure.
    padding_labels = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 1]])
    padding_probs = 1.0 - padding_labels
    probs = np.concatenate([PROBS[:2], padding_probs, PROBS[2:]])
    labels = np.concatenate([LABELS[:2], padding_labels, LABELS[2:]])
    mask = np.array([True, True, False, False, True, True])
    masked = metrics.evaluate_all(probs, labels, TINY, mask=mask)
    clean = metrics.evaluate_all(PROBS, LABELS, TINY)
    assert masked == clean
    assert masked["num_samples"] == 4
    assert metrics.evaluate_all(probs, labels, TINY) != clean
    np.testing.assert_allclose(clean["group"]["f1"], 7 / 9)
    np.testing.assert_allclose(clean["par"]["ma"], 43 / 60)
    np.testing.assert_allclose(clean["chen"]["f1"], 2 / 3)


def test_shape_and_value_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'tiny' has 5 columns.*\(4, 4\)|\(4, 4\).*'tiny'"):
        metrics.group_metrics(PROBS[:, :4], LABELS[:, :4], TINY)
    with pytest.raises(ValueError, match=r"probs \(4, 5\) and labels \(3, 5\)"):
        metrics.par_metrics(PROBS, LABELS[:3])
    with pytest.raises(ValueError, match="sigmoid"):
        metrics.group_metrics(PROBS * 10 - 5, LABELS, TINY)
    with pytest.raises(ValueError, match="0/1"):
        metrics.par_metrics(PROBS, LABELS * 2)
    with pytest.raises(ValueError, match=r"mask \(3,\)"):
        metrics.evaluate_all(PROBS, LABELS, TINY, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="no samples"):
        metrics.evaluate_all(PROBS, LABELS, TINY, mask=np.zeros(4, bool))


def test_sigmoid_matches_definition_without_overflow():
    logits = np.array([[-1000.0, -2.0, 0.0, 2.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        probs = metrics.sigmoid(logits)
    np.testing.assert_allclose(probs, [[0.0, 1 / (1 + np.e ** 2), 0.5, 1 / (1 + np.e ** -2), 1]])


def test_synthetic_set_perfect_predictions():
    # One-hot rows drawn per group of the real synthetic set; labels as probs score 1.
    rng = np.random.default_rng(0)
    labels = np.zeros((16, SYNTHETIC.num_attributes), int)
    for group in SYNTHETIC.groups:
        if group.is_binary:
            labels[:, group.columns[0]] = rng.integers(0, 2, 16)
        else:
            labels[np.arange(16), rng.choice(group.columns, 16)] = 1
    result = metrics.evaluate_all(labels.astype(float), labels, SYNTHETIC)
    assert result["group"]["acc"] == 1.0 and result["chen"]["f1"] == 1.0
    assert result["par"]["ma"] == 1.0 and result["par"]["f1"] == 1.0
    assert len(result["group"]["groups"]) == len(SYNTHETIC.groups)


def test_format_table_and_save_report(tmp_path):
    results = metrics.evaluate_all(PROBS, LABELS, TINY)
    table = metrics.format_table(results, TINY)
    for column in TINY.columns:
        assert column in table
    # Headline: group protocol acc 83.33, prec 86.67, rec 75.00, F1 77.78.
    headline = next(line for line in table.splitlines() if line.startswith("Headline"))
    assert all(v in headline for v in ("83.33", "86.67", "75.00", "77.78"))
    assert "mA  71.67" in table and "macro F1  66.67" in table
    pose_row = next(line for line in table.splitlines() if line.strip().startswith("pose "))
    assert pose_row.split() == ["pose", "75.00", "60.00", "75.00", "66.67", "|", "50.00",
                                "26.67"]

    paths = metrics.save_report(results, TINY, tmp_path / "report")
    assert json.loads(paths["json"].read_text()) == results
    assert paths["png"].name == "per_attribute.png" and paths["png"].stat().st_size > 0
    image = matplotlib.image.imread(paths["png"])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # something was drawn
