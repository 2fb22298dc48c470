"""Evaluation metrics: the published group protocol, standard PAR metrics, Chen et al.'s.

All functions take `probs` (B, A), sigmoid outputs in [0, 1], and `labels`
(B, A), 0/1, whose columns follow an `AttributeSet`. Pure numpy: evaluation
collects the model's outputs on the host and scores them here.

Four protocols are in use on MARS / DukeMTMC-VID (docs/published-model.md §9):

- `group_metrics`: what the published training script prints (the headline).
- `par_metrics`: label-based mA and instance-based accuracy/precision/recall/F1.
- `chen_metrics`: argmax per multi-class group, accuracy and macro F1 per group.
- `marco_metrics`: what the published second recipe (train_marco.py) prints: argmax per
  group, accuracy, macro and micro F1 per group.

Every figure is a fraction in [0, 1] (`format_table` prints percentages) and a
plain Python float / int / list, so a result dict goes straight to JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from vtfpar_jax.attributes import AttributeSet
from vtfpar_jax.models import group_head
from vtfpar_jax.outputs import files

PUBLISHED_THRESHOLD = 0.45
DEFAULT_THRESHOLD = 0.5


def sigmoid(logits: Any) -> np.ndarray:
    """Logits (B, A) -> probabilities (B, A), float64 (scipy's expit: large logits of
    either sign neither overflow nor warn)."""
    return special.expit(np.asarray(logits, dtype=np.float64))


def probabilities(logits: Any, model_cfg) -> np.ndarray:
    """A model's logits -> per-column probabilities (B, A), float64: the sigmoid of each
    attribute's logit (head 'attribute'), or the softmax within each group (head 'group';
    a binary column gets its present class)."""
    if model_cfg.head == "group":
        return group_head.column_probabilities(logits, model_cfg.group_columns)
    return sigmoid(logits)


def _ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    """numerator / denominator elementwise, with 0/0 (any x/0) defined as 0."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, np.float64),
                                                 np.asarray(denominator, np.float64))
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape),
                     where=denominator != 0)


def _check_inputs(probs: Any, labels: Any,
                  attribute_set: AttributeSet | None) -> tuple[np.ndarray, np.ndarray]:
    """Validates and returns (probs (B, A) as given, labels (B, A) as bool)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    where = f" for attribute set {attribute_set.name!r}" if attribute_set is not None else ""
    if probs.ndim != 2 or labels.ndim != 2 or probs.shape != labels.shape:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape}{where}: expected two "
                         "(B, A) arrays of the same shape")
    if attribute_set is not None and probs.shape[1] != attribute_set.num_attributes:
        raise ValueError(f"probs/labels {probs.shape}: attribute set {attribute_set.name!r} has "
                         f"{attribute_set.num_attributes} columns, the arrays have "
                         f"{probs.shape[1]}")
    if probs.shape[0] == 0:
        raise ValueError(f"probs/labels {probs.shape}{where}: no samples to score")
    if not (np.issubdtype(probs.dtype, np.floating) or np.issubdtype(probs.dtype, np.integer)):
        raise ValueError(f"probs{where} has dtype {probs.dtype}: expected real numbers")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        # The usual cause is handing over raw logits.
        raise ValueError(f"probs {probs.shape}{where} must lie in [0, 1] (range seen "
                         f"[{probs.min()}, {probs.max()}]); pass sigmoid(logits)")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"labels {labels.shape}{where} must be 0/1; values seen: "
                         f"{np.unique(labels)[:10].tolist()}")
    if attribute_set is not None:
        names = [g.name for g in attribute_set.groups]
        if len(set(names)) != len(names):
            # Results are keyed by group name: duplicates would overwrite each other.
            raise ValueError(f"attribute set {attribute_set.name!r} repeats group names: {names}")
    return probs, labels.astype(bool)


def _column_counts(predicted: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """predicted, labels (B, A) bool -> TP/TN/FP/FN per column, each (A,) int64."""
    return {
        "tp": np.sum(predicted & labels, axis=0),
        "tn": np.sum(~predicted & ~labels, axis=0),
        "fp": np.sum(predicted & ~labels, axis=0),
        "fn": np.sum(~predicted & labels, axis=0),
    }


def _group_means(groups: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """Each of `keys` averaged over the groups, unweighted: a protocol's headline figures."""
    return {key: float(np.mean([g[key] for g in groups.values()])) for key in keys}


def group_metrics(probs: Any, labels: Any, attribute_set: AttributeSet,
                  threshold: float = PUBLISHED_THRESHOLD) -> dict[str, Any]:
    """The published protocol (docs/published-model.md §9), the headline figures.

    probs (B, A) in [0, 1], labels (B, A) 0/1, A = attribute_set.num_attributes.
    A prediction is positive when prob > threshold (strictly: a prob equal to
    the threshold is negative). For each group, TP/TN/FP/FN are summed over all
    its columns and all samples; Acc = (TP+TN)/(TP+TN+FP+FN), Prec = TP/(TP+FP),
    Rec = TP/(TP+FN), F1 = 2·Prec·Rec/(Prec+Rec). Any 0/0 (e.g. Prec of a group
    never predicted positive) is defined as 0. The headline figures are the
    unweighted means over groups.

    Returns {'threshold', 'acc', 'prec', 'rec', 'f1',
    'groups': {group name: {'acc', 'prec', 'rec', 'f1', 'tp', 'tn', 'fp', 'fn'}}}.
    """
    probs, labels = _check_inputs(probs, labels, attribute_set)
    counts = _column_counts(probs > threshold, labels)
    groups: dict[str, dict[str, float | int]] = {}
    for group in attribute_set.groups:
        cols = list(group.columns)
        tp, tn, fp, fn = (int(counts[k][cols].sum()) for k in ("tp", "tn", "fp", "fn"))
        prec = float(_ratio(tp, tp + fp))
        rec = float(_ratio(tp, tp + fn))
        groups[group.name] = {
            "acc": float(_ratio(tp + tn, tp + tn + fp + fn)),
            "prec": prec, "rec": rec, "f1": float(_ratio(2 * prec * rec, prec + rec)),
            "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        }
    return {"threshold": float(threshold), **_group_means(groups, ("acc", "prec", "rec", "f1")),
            "groups": groups}


def par_metrics(probs: Any, labels: Any, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Standard PAR metrics (Li et al., "A richly annotated dataset for pedestrian
    attribute recognition", 2016), per column, groups ignored.

    probs (B, A) in [0, 1], labels (B, A) 0/1; positive when prob > threshold.

    Label-based, per attribute j: TPR_j = TP/(TP+FN), TNR_j = TN/(TN+FP),
    mA_j = (TPR_j + TNR_j)/2, and mA = mean_j mA_j. An attribute with no
    positive (or no negative) sample has no TPR (TNR); its mA_j is then the one
    rate that is defined (TNR_j, or TPR_j) rather than half of it, so an absent
    class neither halves the score nor hides false alarms. `tpr`/`tnr` report
    such an undefined rate as None.

    Instance-based, per sample i with predicted set P_i and true set Y_i:
    acc_i = |P∩Y|/|P∪Y|, prec_i = |P∩Y|/|P|, rec_i = |P∩Y|/|Y|; acc, prec, rec
    are the means over samples, and F1 = 2·prec·rec/(prec+rec) of those means
    (not the mean of per-sample F1s). A sample with P and Y both empty is a
    perfect prediction (acc_i = prec_i = rec_i = 1); any other 0/0 (|P| = 0 or
    |Y| = 0 alone) is 0.

    Returns {'threshold', 'ma', 'acc', 'prec', 'rec', 'f1', 'attributes':
    {'acc', 'ma', 'tpr', 'tnr', 'positives', 'negatives'}}, the per-attribute
    entries being lists of length A in column order.
    """
    probs, labels = _check_inputs(probs, labels, None)
    predicted = probs > threshold
    counts = _column_counts(predicted, labels)
    positives = counts["tp"] + counts["fn"]
    negatives = counts["tn"] + counts["fp"]
    tpr = _ratio(counts["tp"], positives)
    tnr = _ratio(counts["tn"], negatives)
    has_pos, has_neg = positives > 0, negatives > 0
    # B > 0 (checked), so every column has a positive or a negative.
    ma_per_attribute = np.where(has_pos & has_neg, (tpr + tnr) / 2, np.where(has_pos, tpr, tnr))
    accuracy_per_attribute = (counts["tp"] + counts["tn"]) / labels.shape[0]

    intersection = np.sum(predicted & labels, axis=1)
    union = np.sum(predicted | labels, axis=1)
    # Per sample |P∩Y| over |P∪Y|, |P|, |Y|, averaged; 1 where P and Y are both empty.
    acc, prec, rec = (float(np.where(union == 0, 1.0, _ratio(intersection, d)).mean())
                      for d in (union, predicted.sum(axis=1), labels.sum(axis=1)))
    return {
        "threshold": float(threshold),
        "ma": float(ma_per_attribute.mean()),
        "acc": acc,
        "prec": prec,
        "rec": rec,
        "f1": float(_ratio(2 * prec * rec, prec + rec)),
        "attributes": {
            "acc": accuracy_per_attribute.tolist(),
            "ma": ma_per_attribute.tolist(),
            "tpr": [float(r) if d else None for r, d in zip(tpr, has_pos, strict=True)],
            "tnr": [float(r) if d else None for r, d in zip(tnr, has_neg, strict=True)],
            "positives": positives.tolist(),
            "negatives": negatives.tolist(),
        },
    }


def _macro_f1(true_class: np.ndarray, predicted_class: np.ndarray,
              num_classes: int) -> tuple[float, list[float | None]]:
    """true_class, predicted_class (B,) ints in [0, num_classes) -> (macro F1, per-class F1).

    Per-class F1 = 2TP/(2TP+FP+FN). The macro mean runs over the classes that
    occur in the labels or the predictions; a class absent from both has no
    F1 (None in the per-class list), as in sklearn's f1_score(average='macro').
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true_class, predicted_class), 1)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    per_class = _ratio(2 * tp, 2 * tp + fp + fn)
    return (float(per_class[present].mean()),
            [float(f) if p else None for f, p in zip(per_class, present, strict=True)])


def chen_metrics(probs: Any, labels: Any, attribute_set: AttributeSet,
                 threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Chen et al.'s protocol for MARS / DukeMTMC-VID attributes, per attribute group.

    probs (B, A) in [0, 1], labels (B, A) 0/1, A = attribute_set.num_attributes.
    A multi-class group predicts the argmax of its columns (the first column on
    a tie) and its labels must be one-hot (ValueError otherwise: the true class
    would be undefined). A binary group predicts positive when prob > threshold
    and has the two classes (negative, positive). Per group: accuracy = fraction
    of samples whose class is right; F1 = macro F1 over the group's classes
    that occur in its labels or predictions (for a binary group, both classes
    unless one never occurs). `acc` and `f1` are the unweighted means over groups.

    Returns {'threshold', 'acc', 'f1',
    'groups': {group name: {'acc', 'f1', 'class_f1'}}}; class_f1 lists the
    per-class F1 in column order ((negative, positive) for binaries), None for
    a class that never occurs.
    """
    probs, labels = _check_inputs(probs, labels, attribute_set)
    groups: dict[str, dict[str, Any]] = {}
    for group in attribute_set.groups:
        cols = list(group.columns)
        if group.is_binary:
            true_class = labels[:, cols[0]].astype(np.int64)
            predicted_class = (probs[:, cols[0]] > threshold).astype(np.int64)
        else:
            bad = np.flatnonzero(labels[:, cols].sum(axis=1) != 1)
            if bad.size:
                raise ValueError(f"attribute set {attribute_set.name!r}, group {group.name!r}: "
                                 f"labels of {bad.size} rows (first: {bad[:5].tolist()}) are "
                                 "not one-hot; a per-group class needs exactly one true class")
            true_class = np.argmax(labels[:, cols], axis=1)
            predicted_class = np.argmax(probs[:, cols], axis=1)
        f1, class_f1 = _macro_f1(true_class, predicted_class, 2 if group.is_binary else len(cols))
        groups[group.name] = {"acc": float(np.mean(true_class == predicted_class)),
                              "f1": f1, "class_f1": class_f1}
    return {"threshold": float(threshold), **_group_means(groups, ("acc", "f1")), "groups": groups}


def marco_metrics(probs: Any, labels: Any, attribute_set: AttributeSet) -> dict[str, Any]:
    """The published second recipe's metric (batch_engine_marco.valid_trainer, printed by
    train_marco.py), for either head.

    probs (B, A) in [0, 1], labels (B, A) 0/1. Each group's predicted class is the argmax
    of its classes: for a binary group, positive when prob > 0.5 (with the group head's
    2-way softmax, exactly its argmax; `group_head.column_probabilities`). Per group:
    accuracy, and F1 averaged over classes as scikit-learn's f1_score(average='macro')
    (over the classes in the labels or the predictions) and (average='micro'); then the
    unweighted means over groups. These are Chen et al.'s accuracy and macro F1 at 0.5
    (`chen_metrics`); micro F1 is the accuracy: summed over classes, each wrong sample is
    one false positive and one false negative, so 2 TP / (2 TP + FP + FN) = right / all.

    Returns {'acc', 'f1_macro', 'f1_micro',
    'groups': {group name: {'acc', 'f1_macro', 'f1_micro'}}}.
    """
    chen = chen_metrics(probs, labels, attribute_set, DEFAULT_THRESHOLD)
    groups = {name: {"acc": g["acc"], "f1_macro": g["f1"], "f1_micro": g["acc"]}
              for name, g in chen["groups"].items()}
    return _group_means(groups, ("acc", "f1_macro", "f1_micro")) | {"groups": groups}


def evaluate_all(probs: Any, labels: Any, attribute_set: AttributeSet,
                 mask: Any | None = None) -> dict[str, Any]:
    """All four protocols at their customary thresholds (0.45, 0.5, 0.5, argmax).

    probs (B, A) in [0, 1], labels (B, A) 0/1; mask (B,) bool, False marking
    padding rows (the padded last eval batch), which are dropped first.

    Returns {'attribute_set', 'num_samples', 'group', 'par', 'chen', 'marco'} with the
    dicts of `group_metrics`, `par_metrics`, `chen_metrics` and `marco_metrics`.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != probs.shape[:1]:
            raise ValueError(f"mask {mask.shape} for probs {probs.shape} (attribute set "
                             f"{attribute_set.name!r}): expected shape ({probs.shape[0]},)")
        if mask.dtype != bool:
            # An int mask would index rows instead of selecting them.
            raise ValueError(f"mask has dtype {mask.dtype}: expected bool")
        probs, labels = probs[mask], labels[mask]
    group = group_metrics(probs, labels, attribute_set)  # validates the shapes first
    return {
        "attribute_set": attribute_set.name,
        "num_samples": int(probs.shape[0]),
        "group": group,
        "par": par_metrics(probs, labels),
        "chen": chen_metrics(probs, labels, attribute_set),
        "marco": marco_metrics(probs, labels, attribute_set),
    }


def _pct(x: float) -> str:
    return f"{100.0 * x:6.2f}"


def format_table(results: dict[str, Any], attribute_set: AttributeSet) -> str:
    """A readable report of `evaluate_all`'s results: per attribute, per group, headline."""
    group, par, chen = results["group"], results["par"], results["chen"]
    per_attribute = par["attributes"]
    name_width = max(len(c) for c in attribute_set.columns + ("attribute",))
    group_width = max(len(name) for name in [g.name for g in attribute_set.groups] + ["group"])
    lines = [f"Attribute set {attribute_set.name!r}, {results['num_samples']} samples", "",
             f"Per attribute (prob > {par['threshold']:g}), in %",
             f"  {'attribute':<{name_width}}  {'pos':>6}  {'acc':>6}  {'mA':>6}"]
    for j, column in enumerate(attribute_set.columns):
        lines.append(f"  {column:<{name_width}}  {per_attribute['positives'][j]:>6}  "
                     f"{_pct(per_attribute['acc'][j])}  {_pct(per_attribute['ma'][j])}")
    lines += ["", f"Per group, in %: published protocol (prob > {group['threshold']:g}) | "
                  "Chen et al. (argmax / prob > " f"{chen['threshold']:g})",
              f"  {'group':<{group_width}}  {'acc':>6}  {'prec':>6}  {'rec':>6}  {'F1':>6}"
              f"  | {'acc':>6}  {'mF1':>6}"]
    for g in attribute_set.groups:
        gm, cm = group["groups"][g.name], chen["groups"][g.name]
        lines.append(f"  {g.name:<{group_width}}  {_pct(gm['acc'])}  {_pct(gm['prec'])}  "
                     f"{_pct(gm['rec'])}  {_pct(gm['f1'])}  | {_pct(cm['acc'])}  "
                     f"{_pct(cm['f1'])}")
    lines += ["",
              f"Headline, published group protocol (> {group['threshold']:g}): "
              f"acc {_pct(group['acc'])}  prec {_pct(group['prec'])}  "
              f"rec {_pct(group['rec'])}  F1 {_pct(group['f1'])}",
              f"PAR (> {par['threshold']:g}): mA {_pct(par['ma'])}  acc {_pct(par['acc'])}  "
              f"prec {_pct(par['prec'])}  rec {_pct(par['rec'])}  F1 {_pct(par['f1'])}",
              f"Chen et al.: acc {_pct(chen['acc'])}  macro F1 {_pct(chen['f1'])}"]
    if "marco" in results:   # reports written before it have none
        marco = results["marco"]
        lines.append(f"Published train_marco.py (argmax per group): acc {_pct(marco['acc'])}  "
                     f"macro F1 {_pct(marco['f1_macro'])}  micro F1 "
                     f"{_pct(marco['f1_micro'])}")
    return "\n".join(lines) + "\n"


def save_report(results: dict[str, Any], attribute_set: AttributeSet,
                out_dir: str | Path) -> dict[str, Path]:
    """Writes `metrics.json` (the results) and `per_attribute.png` (per-attribute
    accuracy and mA, one bar per attribute) into out_dir, created if missing.

    Returns {'json': path, 'png': path}.
    """
    # A Figure rather than pyplot: no global backend switch and no figure registry, so
    # a notebook's or a trainer's own plotting is untouched (savefig renders with Agg).
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "metrics.json"
    files.write_json(os.fspath(json_path), results)

    per_attribute = results["par"]["attributes"]
    names = list(attribute_set.columns)
    positions = np.arange(len(names))
    figure = Figure(figsize=(11, 1.5 + 0.28 * len(names)), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    panels = (("acc", "accuracy"), ("ma", "mA = (TPR + TNR) / 2"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        values = 100.0 * np.asarray(per_attribute[key])
        bars = ax.barh(positions, values, color="tab:blue" if key == "acc" else "tab:orange")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        ax.set(xlim=(0, 112), xlabel="%",
               title=f"per-attribute {title} (prob > {results['par']['threshold']:g})")
    axes[0].set_yticks(positions, names, fontsize=8)
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # column 0 at the top, as in the table
    figure.suptitle(f"{attribute_set.name}: {results['num_samples']} samples; published "
                    f"group protocol acc {100 * results['group']['acc']:.2f}, "
                    f"F1 {100 * results['group']['f1']:.2f}")
    png_path = out_dir / "per_attribute.png"
    files.save_figure(figure, os.fspath(png_path), dpi=100)
    return {"json": json_path, "png": png_path}
