"""The decisions a prediction reports: one per attribute group, and the record written per clip.

    decisions = decide(probs, MARS)      # binary: p > 0.45; multi-class: argmax of the group
    record = prediction_record(probs, MARS, input="walk.mp4")
    print(summary(record))

The published rules, shared by `predict` (the JSON and the console line) and
`visualize` (which bars are highlighted), so neither imports the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vtfpar_jax import attributes
from vtfpar_jax.evaluation import metrics

BINARY_RULE = "present when probability > {threshold} (the published threshold)"
MULTICLASS_RULE = "the column with the highest probability (argmax over the group)"
# The group head's binary attribute is a 2-way softmax: its present class wins the argmax
# exactly when that class's probability is above one half.
GROUP_HEAD_THRESHOLD = 0.5
GROUP_HEAD_BINARY_RULE = ("present when the softmax probability of its present class > "
                          "{threshold} (0.5: the argmax of the group's two classes)")


def default_threshold(head: str) -> float:
    """The binary threshold a head's outputs are read with: the published 0.45 for the
    attribute head's sigmoids, the argmax for the group head's softmaxes."""
    return GROUP_HEAD_THRESHOLD if head == "group" else metrics.PUBLISHED_THRESHOLD


def decision_rules(head: str, threshold: float) -> dict[str, str]:
    """The rules written beside a prediction, in words."""
    binary = GROUP_HEAD_BINARY_RULE if head == "group" else BINARY_RULE
    return {"binary": binary.format(threshold=threshold), "multi-class": MULTICLASS_RULE}


def decide(probs: np.ndarray, attribute_set: attributes.AttributeSet,
           threshold: float = metrics.PUBLISHED_THRESHOLD) -> list[dict[str, Any]]:
    """One decision per group for one clip's probabilities (A,).

    Binary groups: present when p > threshold. Multi-class groups: argmax.
    """
    probs = np.asarray(probs, np.float64)
    if probs.shape != (attribute_set.num_attributes,):
        raise ValueError(f"probs {probs.shape}: attribute set {attribute_set.name!r} has "
                         f"{attribute_set.num_attributes} columns")
    decisions = []
    for group in attribute_set.groups:
        if group.is_binary:
            (column,) = group.columns
            decisions.append({"group": group.name, "kind": "binary",
                              "attribute": attribute_set.columns[column],
                              "probability": float(probs[column]),
                              "present": bool(probs[column] > threshold)})
        else:
            best = group.columns[int(np.argmax(probs[list(group.columns)]))]
            decisions.append({"group": group.name, "kind": "multi-class",
                              "attribute": attribute_set.columns[best],
                              "value": attribute_set.columns[best].split(": ", 1)[-1],
                              "probability": float(probs[best])})
    return decisions


def decided_columns(decisions: list[dict[str, Any]],
                    attribute_set: attributes.AttributeSet) -> set[int]:
    """Columns that the decisions select: present binaries and each group's argmax."""
    index = {name: i for i, name in enumerate(attribute_set.columns)}
    return {index[d["attribute"]] for d in decisions
            if d["kind"] == "multi-class" or d["present"]}


def prediction_record(probs: np.ndarray, attribute_set: attributes.AttributeSet,
                      threshold: float = metrics.PUBLISHED_THRESHOLD, head: str = "attribute",
                      **about: Any) -> dict[str, Any]:
    """The JSON written per input: `about` (input, model, ...), the model's head, every
    probability (sigmoids, or softmaxes within groups for the group head), decisions."""
    decisions = decide(probs, attribute_set, threshold)   # also checks the shape
    return {**about,
            "attribute_set": attribute_set.name,
            "head": head,
            "threshold": threshold,
            "decision_rules": decision_rules(head, threshold),
            "probabilities": {name: float(p) for name, p in zip(attribute_set.columns, probs,
                                                                    strict=True)},
            "decisions": decisions}


def summary(record: dict[str, Any]) -> str:
    """One line: present binary attributes and each multi-class group's choice."""
    parts = [d["attribute"] for d in record["decisions"]
             if d["kind"] == "binary" and d["present"]]
    parts += [f"{d['group']}={d['value']}" for d in record["decisions"]
              if d["kind"] == "multi-class"]
    return ", ".join(parts) or "no binary attribute present"
