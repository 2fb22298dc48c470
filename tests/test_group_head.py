"""The group head (model.head = 'group', the published train_marco.py recipe): its layout
from the attribute sets, the forward pass as base_block_marco.py computes it, and the
model config's checks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from vtfpar_jax import attributes
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import clip, group_head, vtfpar
from vtfpar_jax.state import build

# base_block_marco.TransformerClassifier's attr_len for MARS.
PUBLISHED_MARS_CLASSES = (2, 2, 2, 2, 2, 2, 2, 2, 2, 6, 5, 9, 10, 4)


def test_group_layout_comes_from_the_attribute_sets():
    assert group_head.class_counts(attributes.MARS.head_groups) == PUBLISHED_MARS_CLASSES
    assert sum(group_head.class_counts(attributes.MARS.head_groups)) == 52
    # DukeMTMC-VID: its 8 binary groups, where the published attr_len has 7 (docs/quirks.md).
    assert group_head.class_counts(attributes.DUKE.head_groups) == (2,) * 8 + (6, 5, 9, 8)
    for attribute_set in attributes.ATTRIBUTE_SETS.values():
        group_head.check_layout(attribute_set.head_groups, attribute_set.num_attributes)


def test_targets_as_published_split_gt_to_indices():
    """A binary column p becomes [1-p, p]; every group takes the argmax."""
    rng = np.random.default_rng(0)
    s = attributes.MARS
    labels = np.zeros((5, s.num_attributes), np.float32)
    expected = np.zeros((5, len(s.groups)), np.int32)
    for g, columns in enumerate(s.head_groups):
        if len(columns) == 1:
            expected[:, g] = rng.integers(0, 2, 5)
            labels[:, columns[0]] = expected[:, g]
        else:
            expected[:, g] = rng.integers(0, len(columns), 5)
            labels[np.arange(5), np.asarray(columns)[expected[:, g]]] = 1
    np.testing.assert_array_equal(group_head.targets(jnp.asarray(labels), s.head_groups),
                                  expected)


def test_column_probabilities_are_the_softmax_within_each_group():
    columns = ((0,), (1, 2, 3), (4,))
    logits = np.random.default_rng(1).standard_normal((4, 7)) * 3
    probs = group_head.column_probabilities(logits, columns)
    e = np.exp(logits)
    np.testing.assert_allclose(probs[:, 0], e[:, 1] / e[:, :2].sum(1))
    np.testing.assert_allclose(probs[:, 1:4], e[:, 2:5] / e[:, 2:5].sum(1, keepdims=True))
    np.testing.assert_allclose(probs[:, 4], e[:, 6] / e[:, 5:7].sum(1))
    # Binary: above 0.5 exactly when class 1 wins the argmax.
    np.testing.assert_array_equal(probs[:, 0] > 0.5, logits[:, 1] > logits[:, 0])
    with pytest.raises(ValueError, match=r"expected \(B, 7\)"):
        group_head.column_probabilities(logits[:, :6], columns)


def _compiled(fn, *args):
    """jit at a low XLA optimisation level on the CPU: these graphs run once."""
    opts = ({"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
            if jax.default_backend() == "cpu" else {})
    return jax.jit(fn).lower(*args).compile(opts)


def _tiny_group_config(columns=((0,), (1, 2, 3), (4,))) -> vtfpar.VTFPARConfig:
    return vtfpar.VTFPARConfig(backbone=clip.tiny(), num_attributes=5, frames=2, dim=32, heads=4,
                               spatial_map=((0, 0),), temporal_map=((0, 0),),
                               use_temporal=False, drop_path_rate=0.0, head="group",
                               group_columns=columns)


def _torch(x):
    import torch
    return torch.tensor(np.array(x))


def test_group_head_forward_as_base_block_marco():
    """Group g's Linear reads fused token g; BatchNorm1d runs over the concatenated logits.
    Checked against torch's Linear and BatchNorm1d (eval and train mode) on our weights."""
    torch = pytest.importorskip("torch")
    cfg = _tiny_group_config()

    def run(key):
        """The variables, and the (logits, collections) of eval and train mode: one compile."""
        k = jax.random.split(key, 4)
        backbone_params = clip.init_params(cfg.backbone, k[0])
        variables = vtfpar.init(cfg, k[1])
        # Running statistics other than 0/1, so eval mode's BatchNorm is seen to use them.
        variables["batch_stats"]["bn"] = {"mean": jnp.linspace(-0.3, 0.4, 7),
                                          "var": jnp.linspace(0.5, 2.0, 7)}
        size = cfg.backbone.image_size
        video = jax.random.normal(k[2], (3, cfg.frames, size, size, 3))
        text = jax.random.normal(k[3], (cfg.num_attributes, cfg.backbone.projection_dim))
        return variables, [vtfpar.apply(cfg, variables, backbone_params, video, text, train=train,
                                        capture_intermediates=True) for train in (False, True)]

    key = jax.random.key(2)
    variables, outputs = _compiled(run, key)(key)
    params = variables["params"]
    assert cfg.num_logits == 7
    assert [params[f"group_head_{g}"]["kernel"].shape for g in range(3)] == [
        (32, 2), (32, 3), (32, 2)]
    assert "heads_kernel" not in params

    for train, (logits, state) in zip((False, True), outputs, strict=True):
        fused = _torch(state["intermediates"]["fused_tokens"][0])
        heads = []
        for g, n in enumerate(group_head.class_counts(cfg.group_columns)):
            linear = torch.nn.Linear(cfg.dim, n)
            with torch.no_grad():
                linear.weight.copy_(_torch(params[f"group_head_{g}"]["kernel"]).T)
                linear.bias.copy_(_torch(params[f"group_head_{g}"]["bias"]))
            heads.append(linear)
        bn = torch.nn.BatchNorm1d(7)
        with torch.no_grad():
            bn.weight.copy_(_torch(params["bn"]["scale"]))
            bn.bias.copy_(_torch(params["bn"]["bias"]))
            bn.running_mean.copy_(_torch(variables["batch_stats"]["bn"]["mean"]))
            bn.running_var.copy_(_torch(variables["batch_stats"]["bn"]["var"]))
            bn.train(train)
            expected = bn(torch.cat([heads[g](fused[:, g, :]) for g in range(3)], dim=1))
        np.testing.assert_allclose(np.asarray(logits), expected.numpy(), rtol=1e-5, atol=1e-5)
        if train:
            np.testing.assert_allclose(np.asarray(state["batch_stats"]["bn"]["var"]),
                                       bn.running_var.numpy(), rtol=1e-5, atol=1e-6)


def test_config_checks_name_the_field():
    cfg = _tiny_group_config()
    with pytest.raises(ValueError, match="head='softmax'"):
        dataclasses.replace(cfg, head="softmax")
    with pytest.raises(ValueError, match="6 groups but 5 attributes"):
        dataclasses.replace(cfg, group_columns=((0,),) * 6)
    with pytest.raises(ValueError, match="exactly once"):
        dataclasses.replace(cfg, group_columns=((0,), (1, 2), (4,)))
    with pytest.raises(ValueError, match="head='group' only"):
        dataclasses.replace(cfg, head="attribute")


def test_model_config_takes_the_groups_for_the_group_head_only():
    config = common.base_config()
    s = attributes.MARS
    attribute_cfg = build.model_config(config, clip.vit_b16(), s.num_attributes, s.head_groups)
    assert (attribute_cfg.head, attribute_cfg.group_columns) == ("attribute", ())
    assert attribute_cfg.num_logits == 43
    config.model.head = "group"
    group_cfg = build.model_config(config, clip.vit_b16(), s.num_attributes, s.head_groups)
    assert group_cfg.group_columns == s.head_groups and group_cfg.num_logits == 52
    config.backbone.source = "random"   # check_config reads no weights for it
    config.model.spatial_map = config.model.temporal_map = "0->0"
    build.check_config(config)
    config.model.head = "groups"
    with pytest.raises(ConfigError, match="head='groups'"):
        build.check_config(config)


def test_group_loss_as_train_marco():
    """Against batch_engine_marco's loop: torch CrossEntropyLoss per group (batch mean),
    divided by the group's class count, summed; and the gradient through it."""
    torch = pytest.importorskip("torch")
    from vtfpar_jax.training import losses
    s = attributes.MARS
    rng = np.random.default_rng(3)
    labels = np.zeros((6, s.num_attributes), np.float32)
    for columns in s.head_groups:
        if len(columns) == 1:
            labels[:, columns[0]] = rng.integers(0, 2, 6)
        else:
            labels[np.arange(6), rng.choice(columns, 6)] = 1
    logits = rng.standard_normal((6, 52)).astype(np.float32) * 2
    loss_and_grad = jax.value_and_grad(
        lambda x, y: losses.group_cross_entropy(x, y, s.head_groups))
    ours, grad = _compiled(loss_and_grad, logits, labels)(logits, labels)

    counts = group_head.class_counts(s.head_groups)
    logits_t = torch.tensor(logits, requires_grad=True)
    targets = [torch.tensor(np.asarray(t)) for t in
               np.asarray(group_head.targets(jnp.asarray(labels), s.head_groups)).T]
    expected = sum(torch.nn.CrossEntropyLoss()(out, target.long()) / n for out, target, n in
                   zip(torch.split(logits_t, counts, dim=1), targets, counts, strict=True))
    expected.backward()
    np.testing.assert_allclose(float(ours), expected.item(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), logits_t.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_marco_metrics_equal_scikit_learn(seed):
    """batch_engine_marco.valid_trainer's figures: per-group accuracy of the argmax and
    sklearn's f1_score(average='macro' / 'micro'), then their means, on random labels."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from vtfpar_jax.evaluation import metrics
    s = attributes.MARS
    rng = np.random.default_rng(seed)
    b = 40
    labels = np.zeros((b, s.num_attributes), np.int64)
    for columns in s.head_groups:
        if len(columns) == 1:
            labels[:, columns[0]] = rng.integers(0, 2, b)
        else:   # a few classes only, so some never occur in the labels
            labels[np.arange(b), rng.choice(columns[:3], b)] = 1
    logits = rng.standard_normal((b, 52))
    probs = group_head.column_probabilities(logits, s.head_groups)
    ours = metrics.marco_metrics(probs, labels, s)

    true = np.asarray(group_head.targets(jnp.asarray(labels), s.head_groups))
    predicted = [np.argmax(block, axis=1) for block in
                 np.split(logits, np.cumsum(group_head.class_counts(s.head_groups))[:-1], axis=1)]
    expected = {"acc": [], "f1_macro": [], "f1_micro": []}
    for g, group in enumerate(s.groups):
        per_group = {"acc": sklearn_metrics.accuracy_score(true[:, g], predicted[g]),
                     "f1_macro": sklearn_metrics.f1_score(true[:, g], predicted[g],
                                                          average="macro"),
                     "f1_micro": sklearn_metrics.f1_score(true[:, g], predicted[g],
                                                          average="micro")}
        for key, value in per_group.items():
            np.testing.assert_allclose(ours["groups"][group.name][key], value, rtol=1e-12)
            expected[key].append(value)
    for key, values in expected.items():
        np.testing.assert_allclose(ours[key], np.mean(values), rtol=1e-12)


def test_group_head_decisions_are_the_argmax_of_each_group():
    from vtfpar_jax.evaluation import decisions
    s = attributes.SYNTHETIC
    counts = group_head.class_counts(s.head_groups)
    logits = np.random.default_rng(4).standard_normal((1, sum(counts)))
    probs = group_head.column_probabilities(logits, s.head_groups)[0]
    threshold = decisions.default_threshold("group")
    record = decisions.prediction_record(probs, s, threshold, "group", input="x")
    assert record["head"] == "group" and record["threshold"] == 0.5
    assert "argmax" in record["decision_rules"]["binary"]
    blocks = np.split(logits[0], np.cumsum(counts)[:-1])
    for group, block, decision in zip(s.groups, blocks, record["decisions"], strict=True):
        if group.is_binary:
            assert decision["present"] == (int(np.argmax(block)) == 1)
        else:
            assert decision["attribute"] == s.columns[group.columns[int(np.argmax(block))]]
    attribute_record = decisions.prediction_record(probs, s)
    assert attribute_record["head"] == "attribute" and attribute_record["threshold"] == 0.45
