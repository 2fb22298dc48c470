"""train_marco.py checkpoints (one head per attribute group, base_block_marco.py) convert
both ways: the weight shapes tell the head, and the export gives back every tensor."""

from __future__ import annotations

import numpy as np
import pytest

from vtfpar_jax import attributes
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.convert import openpar, to_openpar
from vtfpar_jax.models import group_head

pytestmark = pytest.mark.slow

MARS_CLASSES = (2, 2, 2, 2, 2, 2, 2, 2, 2, 6, 5, 9, 10, 4)    # base_block_marco.py, MARS
DUKE_PUBLISHED = (2, 2, 2, 2, 2, 2, 2, 6, 5, 9, 8)            # its DukeMTMC-VID: 11 groups


def _group_state(case, classes) -> dict[str, np.ndarray]:
    """The parity case's published state with base_block_marco's heads and BatchNorm."""
    rng = np.random.default_rng(0)
    state = {k: v for k, v in case["state_dict"].items()
             if not k.startswith(("model/weight_layer.", "model/bn."))}
    dim = state["model/norm.weight"].shape[0]
    for g, n in enumerate(classes):
        state[f"model/weight_layer.{g}.weight"] = rng.normal(0, 0.06, (n, dim)).astype(np.float32)
        state[f"model/weight_layer.{g}.bias"] = rng.normal(0, 0.02, n).astype(np.float32)
    width = sum(classes)
    state.update({"model/bn.weight": rng.normal(1, 0.1, width).astype(np.float32),
                  "model/bn.bias": rng.normal(0, 0.02, width).astype(np.float32),
                  "model/bn.running_mean": rng.normal(0, 0.1, width).astype(np.float32),
                  "model/bn.running_var": rng.uniform(0.5, 2, width).astype(np.float32)})
    return state


def test_group_heads_are_told_by_their_shapes_and_export_back(openpar_case):
    case = openpar_case("default")
    state = _group_state(case, MARS_CLASSES)
    cfg, variables = openpar.convert(state, **case["meta"]["openpar_options"])
    assert cfg.head == "group"
    assert cfg.group_columns == attributes.get("mars").head_groups
    assert cfg.num_logits == 52 and cfg.num_attributes == 43
    assert variables["params"]["group_head_9"]["kernel"].shape == (240, 6)
    exported = to_openpar.state_dict(cfg, variables)
    heads = ("model/weight_layer.", "model/bn.", "model/word")
    for key in [k for k in state if k.startswith(heads)]:
        np.testing.assert_array_equal(exported[key], state[key], err_msg=key)
    assert not any(k.startswith("model/weight_layer.14.") for k in exported)


def test_the_dataset_groups_must_match_the_heads(openpar_case):
    case = openpar_case("default")
    options = case["meta"]["openpar_options"]
    with pytest.raises(WeightImportError, match=r"\[2, 2, 2, 2, 2, 2, 2, 6, 5, 9, 8\] classes"):
        openpar.convert(_group_state(case, DUKE_PUBLISHED), **options)
    duke = attributes.get("duke").head_groups
    with pytest.raises(WeightImportError, match="the dataset's"):
        openpar.convert(_group_state(case, MARS_CLASSES), group_columns=duke, **options)


def test_the_attribute_head_is_still_the_default(openpar_case):
    case = openpar_case("default")
    cfg, _ = openpar.convert(case["state_dict"], **case["meta"]["openpar_options"])
    assert cfg.head == "attribute" and cfg.group_columns == ()


def test_published_group_layout_is_mars():
    assert group_head.class_counts(attributes.get("mars").head_groups) == MARS_CLASSES
    assert to_openpar.PUBLISHED_GROUP_CLASSES == MARS_CLASSES
