"""The backbone's names before it was called a backbone (up to main@fd7faaf), read as today's.

Until then "clip" named the frozen backbone, CLIP or SigLIP alike: the config group `clip`
(its weights' source, path, preset, image and patch size) beside the string `backbone` (which
one), `model.clip_dtype`, the params key `clip` beside `model` (so `frozen_patterns` such as
'clip/.*'), and a model dir's `clip/` folder. Model dirs, checkpoints, Hub layouts and
experiment records written then still hold those names; every reader maps them here, so a
model made then loads, and a run started then resumes, as one made today. One value changed
its form: `model.remat`, a bool before the remat policies (1db70a4), reads as the policy it
meant.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import jax

PARAMS_KEY = "backbone"       # beside 'model' in the params, trainable and frozen trees
OLD_PARAMS_KEY = "clip"
FOLDER = "backbone"           # a model dir's copy of the backbone (HF format)
OLD_FOLDER = "clip"
# Dotted config fields: old name -> name now. `backbone` was the backbone's name (a string);
# it is now the group of everything about the backbone.
FIELDS = {"backbone": "backbone.name", "clip": "backbone",
          "model.clip_dtype": "model.backbone_dtype"}
# 'clip/' as the first component of a '/'-joined param path, in a regex over such paths.
_OLD_PATTERN_ROOT = re.compile(r"(?<![\w/])clip/")


def field(name: str) -> str:
    """A dotted config field by its name now ('clip.path' -> 'backbone.path'); the group
    `clip` takes its fields along, `backbone` (then a string) has none."""
    for old, new in FIELDS.items():
        if name == old or (old == "clip" and name.startswith("clip.")):
            return new + name[len(old):]
    return name


def config(stored: dict) -> dict:
    """A stored config (dict, as config.json holds it) under today's names and forms; one that
    has them already is returned as it is (a copy)."""
    c = copy.deepcopy(stored)
    model = c.get("model", {})
    if isinstance(model.get("remat"), bool):
        model["remat"] = "blocks" if model["remat"] else "none"
    if isinstance(c.get("backbone"), dict) and "clip" not in c:
        return c
    group = dict(c.pop("clip", {}))
    if "backbone" in c:
        group["name"] = c.pop("backbone")
    if group:
        c["backbone"] = group
    if "clip_dtype" in model:
        model["backbone_dtype"] = model.pop("clip_dtype")
    if "frozen_patterns" in c:
        c["frozen_patterns"] = [frozen_pattern(p) for p in c["frozen_patterns"]]
    return c


def frozen_pattern(pattern: str) -> str:
    """A `frozen_patterns` regex over param paths under today's root ('clip/.*' ->
    'backbone/.*')."""
    return _OLD_PATTERN_ROOT.sub(PARAMS_KEY + "/", pattern)


def params(tree: Any, old: str = OLD_PARAMS_KEY, new: str = PARAMS_KEY) -> Any:
    """`tree` (params, trainable or frozen leaves, a whole train state with its optimiser
    state, or its abstract form) with the key `old` renamed `new` wherever it stands beside
    'model' or alone; `params(tree, PARAMS_KEY, OLD_PARAMS_KEY)` names it as a checkpoint
    of earlier code holds it."""
    def rename(node):
        if not isinstance(node, dict):
            return node
        renamed = {k: params(v, old, new) for k, v in node.items()}
        if old in renamed and set(renamed) <= {"model", old}:
            renamed[new] = renamed.pop(old)
        return renamed

    # Every dict is taken whole, so that its keys can change; jax walks the rest (train
    # state, optax states, lists).
    return jax.tree.map(rename, tree, is_leaf=lambda node: isinstance(node, dict))


def holds_old_params_key(tree: Any) -> bool:
    """Whether a saved tree (nested dicts and lists, as a checkpoint's metadata holds it)
    has the backbone's params under 'clip'."""
    if isinstance(tree, dict):
        if OLD_PARAMS_KEY in tree and set(tree) <= {"model", OLD_PARAMS_KEY}:
            return True
        return any(holds_old_params_key(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(holds_old_params_key(v) for v in tree)
    return False


def backbone_folder(model: str) -> str:
    """The model dir's copy of its backbone: backbone/, or clip/ in a model dir made before."""
    old = os.path.join(model, OLD_FOLDER)
    new = os.path.join(model, FOLDER)
    return old if os.path.isdir(old) and not os.path.isdir(new) else new
