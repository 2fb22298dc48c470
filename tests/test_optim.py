"""The published learning-rate schedule, and frozen params selected by path patterns."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from vtfpar_jax import attributes
from vtfpar_jax.backbones import text
from vtfpar_jax.models import vtfpar
from vtfpar_jax.state import build, optim
from vtfpar_jax.state.train_state import Frozen, TrainState
from vtfpar_jax.training.config_file import load_config_file
from vtfpar_jax.training.train_step import make_train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_lr(e: int) -> float:
    """docs/published-model.md §8, written out independently of vtfpar_jax.state.optim."""
    if e < 5:
        return 1e-5 + e * (1e-3 - 1e-5) / 5
    return 2e-6 + 0.5 * (1e-3 - 2e-6) * (1 + math.cos(math.pi * e / 30))


def published_optimizer() -> ml_collections.ConfigDict:
    return load_config_file(os.path.join(REPO, "configs", "mars.py")).optimizer


def test_reference_formula_end_points():
    assert reference_lr(30) == pytest.approx(2e-6, rel=1e-12, abs=0)
    assert reference_lr(1) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 5)
    cos_at_5 = 2e-6 + 0.5 * (1e-3 - 2e-6) * (1 + math.cos(math.pi / 6))
    assert reference_lr(5) == pytest.approx(cos_at_5)


def test_published_config_is_the_published_recipe():
    opt = published_optimizer()
    assert (opt.name, opt.lr, opt.b1, opt.b2, opt.eps, opt.weight_decay) == (
        "adam", 1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert (opt.schedule, opt.warmup_epochs, opt.warmup_lr, opt.min_lr) == (
        "published", 5, 1e-5, 2e-6)


@pytest.mark.parametrize("epoch", range(1, 31))
def test_published_epoch_lr_matches_reference(epoch):
    opt = published_optimizer()
    got = optim.published_epoch_lr(epoch, lr=opt.lr, num_epochs=30,
                                   warmup_epochs=opt.warmup_epochs, warmup_lr=opt.warmup_lr,
                                   min_lr=opt.min_lr)
    assert got == pytest.approx(reference_lr(epoch), rel=1e-12, abs=0)


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 375])
def test_schedule_is_constant_within_each_epoch_and_matches_reference(steps_per_epoch):
    schedule = optim.make_schedule(published_optimizer(), 30, steps_per_epoch)
    spe = steps_per_epoch
    for e in range(1, 31):
        # Epoch e (1-based) is updates (e-1)*spe .. e*spe-1: first, middle, last of them.
        for step in sorted({(e - 1) * spe, (e - 1) * spe + spe // 2, e * spe - 1}):
            got = float(schedule(jnp.asarray(step)))
            assert got == pytest.approx(reference_lr(e), rel=1e-6, abs=0), (e, step)
    # Past the last epoch the schedule stays at the last epoch's value.
    assert float(schedule(jnp.asarray(30 * spe + 5))) == pytest.approx(2e-6, rel=1e-6)
    # And it is traceable (used inside the jitted step).
    assert float(jax.jit(schedule)(jnp.asarray(4 * spe))) == pytest.approx(reference_lr(5),
                                                                          rel=1e-6)


def test_unknown_schedule_and_optimizer_are_clear_errors():
    opt = published_optimizer()
    opt.schedule = "linear"
    with pytest.raises(ValueError, match="schedule='linear'"):
        optim.make_schedule(opt, 30, 10)
    opt = published_optimizer()
    opt.name = "sgd"
    with pytest.raises(ValueError, match="optimizer.name='sgd'"):
        optim.make_optimizer(opt, optax.constant_schedule(1e-3))


# ---------------------------------------------------------------- partition / frozen


def toy_params():
    k = iter(jax.random.split(jax.random.PRNGKey(0), 8))
    return {
        "model": {"head": {"kernel": jax.random.normal(next(k), (3, 2)),
                           "bias": jnp.zeros((2,))},
                  "norm": {"scale": jnp.ones((3,))}},
        "backbone": {
            "vision": {"layers_0": {"fc1": {"kernel": jax.random.normal(next(k), (3, 3))}},
                       "layers_1": {"fc1": {"kernel": jax.random.normal(next(k), (3, 3))}}},
            "text": {"embed": jax.random.normal(next(k), (5, 3))}},
    }


def flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


def test_partition_merge_round_trip():
    params = toy_params()
    trainable, frozen = optim.partition(params, ("backbone/.*",))
    assert set(flat(trainable)) == {"model/head/kernel", "model/head/bias", "model/norm/scale"}
    assert set(flat(frozen)) == {"backbone/vision/layers_0/fc1/kernel",
                                 "backbone/vision/layers_1/fc1/kernel", "backbone/text/embed"}
    merged = optim.merge(trainable, frozen)
    assert jax.tree.structure(merged) == jax.tree.structure(params)
    assert set(flat(merged)) == set(flat(params))
    for path, value in flat(params).items():
        np.testing.assert_array_equal(flat(merged)[path], value, err_msg=path)
    # Full match only: 'backbone' alone matches no leaf, so nothing is frozen.
    trainable, frozen = optim.partition(params, ("backbone",))
    assert frozen == {} and set(flat(trainable)) == set(flat(params))
    # No patterns: everything trains.
    trainable, frozen = optim.partition(params, ())
    assert frozen == {} and set(flat(trainable)) == set(flat(params))


def test_freezing_everything_is_a_clear_error():
    with pytest.raises(ValueError, match="freeze every parameter"):
        optim.partition(toy_params(), (".*",))
    with pytest.raises(ValueError, match="freeze every parameter"):
        optim.partition(toy_params(), ("backbone/.*", "model/.*"))


def test_bad_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="frozen_patterns: bad regular expression"):
        optim.partition(toy_params(), ("backbone/(.*",))


def test_frozen_leaves_get_no_optimizer_state_and_do_not_move():
    params = toy_params()
    trainable, frozen = optim.partition(params, ("backbone/.*", "model/norm/.*"))
    opt = published_optimizer()
    tx = optim.make_optimizer(opt, optim.make_schedule(opt, 30, 2))
    opt_state = tx.init(trainable)
    n_trainable = len(jax.tree.leaves(trainable))
    assert n_trainable == 2
    # Adam: mu and nu for each trainable leaf, plus scalar counts; nothing shaped like CLIP.
    big = [x for x in jax.tree.leaves(opt_state) if x.ndim > 0]
    assert len(big) == 2 * n_trainable
    shapes = sorted(x.shape for x in big)
    assert shapes == sorted([(3, 2), (2,)] * 2)

    def loss(t, f):
        p = optim.merge(t, f)
        h = p["backbone"]["text"]["embed"] @ p["backbone"]["vision"]["layers_0"]["fc1"]["kernel"]
        h = h * p["model"]["norm"]["scale"]
        return jnp.sum((h @ p["model"]["head"]["kernel"] + p["model"]["head"]["bias"]) ** 2)

    t = trainable
    for _ in range(3):
        grads = jax.grad(loss)(t, frozen)
        updates, opt_state = tx.update(grads, opt_state, t)
        t = optax.apply_updates(t, updates)
    assert not np.allclose(t["model"]["head"]["kernel"], trainable["model"]["head"]["kernel"])
    merged = flat(optim.merge(t, frozen))
    for path, value in flat(params).items():
        if path.startswith("backbone/") or path.startswith("model/norm/"):
            np.testing.assert_array_equal(merged[path], value, err_msg=path)


# ------------------------------------------------- partial fine-tune through the train step


@pytest.fixture(scope="module")
def smoke_parts():
    config = load_config_file(os.path.join(REPO, "configs", "demo.py") + ":smoke")
    config.model.frames = 2
    aset = attributes.get("synthetic")
    backbone_cfg, backbone_params = build.load_backbone(config, config.seed)
    model_cfg = build.model_config(config, backbone_cfg, aset.num_attributes)
    phrases, tokens = build.attribute_tokens(config, aset)
    features = text.attribute_text_features(backbone_cfg, backbone_params, phrases, tokens)
    variables = vtfpar.init(model_cfg, jax.random.PRNGKey(0))
    return config, aset, model_cfg, backbone_params, features, variables


@pytest.mark.slow
def test_partial_finetune_trains_backbone_block_3_only(smoke_parts):
    config, aset, model_cfg, backbone_params, features, variables = smoke_parts
    params = {"model": variables["params"], "backbone": backbone_params}
    # configs/common.py suggests the first two; logit_scale (unused here) is the
    # one CLIP leaf outside both towers.
    patterns = ("backbone/text/.*", "backbone/vision/(?!layers_3/).*", "backbone/logit_scale")
    trainable, frozen = optim.partition(params, patterns)
    block3 = {k for k in flat(params) if k.startswith("backbone/vision/layers_3/")}
    assert block3, sorted(flat(params))[:20]
    assert {k for k in flat(trainable) if k.startswith("backbone/")} == block3
    assert not any(k.startswith("backbone/vision/layers_3/") for k in flat(frozen))
    assert any(k.startswith("backbone/vision/layers_2/") for k in flat(frozen))

    opt = config.optimizer
    schedule = optim.make_schedule(opt, config.num_epochs, 3)
    tx = optim.make_optimizer(opt, schedule)
    state = TrainState(step=jnp.asarray(0, jnp.int32), trainable=trainable,
                       batch_stats=variables["batch_stats"], opt_state=tx.init(trainable))
    n_big = len([x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0])
    assert n_big == 2 * len(jax.tree.leaves(trainable))
    fz = Frozen(params=frozen, text_features=jnp.asarray(features),
                positive_ratio=jnp.full((aset.num_attributes,), 0.3, jnp.float32))
    step = jax.jit(make_train_step(model_cfg, tx, schedule,
                                   backbone_frozen="backbone" not in trainable))
    rng = np.random.default_rng(0)
    size = model_cfg.backbone.image_size
    batch = {"video": jnp.asarray(rng.normal(size=(4, 2, size, size, 3)), jnp.float32),
             "labels": jnp.asarray(rng.random((4, aset.num_attributes)) > 0.5, jnp.float32)}
    before = jax.tree.map(np.asarray, trainable)
    new, metrics = step(state, batch, jax.random.PRNGKey(1), fz)
    assert bool(metrics["finite"]) and int(new.step) == 1
    after = flat(jax.tree.map(np.asarray, new.trainable))
    before = flat(before)
    moved = [k for k in block3 if not np.array_equal(after[k], before[k])]
    # Every weight matrix of block 3 gets a gradient and moves.
    assert {k for k in block3 if k.endswith("kernel")} <= set(moved), sorted(block3 - set(moved))
    # Everything else of CLIP is bit-identical to a fresh copy of the initial CLIP.
    _, fresh_backbone = build.load_backbone(config, config.seed)
    merged = flat(jax.tree.map(np.asarray, optim.merge(new.trainable, frozen)))
    for k, v in flat({"backbone": fresh_backbone}).items():
        if k not in block3:
            np.testing.assert_array_equal(merged[k], v, err_msg=k)
    assert all(not k.startswith("backbone/") or k in block3 for k in after)


def test_default_side_tuning_freezes_all_of_the_backbone(smoke_parts):
    config, _, _, backbone_params, _, variables = smoke_parts
    trainable, frozen = optim.partition({"model": variables["params"], "backbone": backbone_params},
                                        config.frozen_patterns)
    assert set(trainable) == {"model"}
    assert set(flat(frozen)) == {f"backbone/{k}" for k in flat(backbone_params)}


# ---------------------------------------------- every optimiser option, against its math


def options(**fields) -> ml_collections.ConfigDict:
    opt = published_optimizer()
    opt.update(fields)
    return opt


def one_update(opt, grads_per_call, params):
    """Params after feeding `grads_per_call` to make_optimizer(opt, its schedule) in turn."""
    tx = optim.make_optimizer(opt, optim.make_schedule(opt, num_epochs=10, steps_per_epoch=4))
    state = tx.init(params)
    for g in grads_per_call:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def adam_first_step(g, lr, eps):
    """Adam's first update: bias-corrected m = g, v = g^2, so -lr * g / (|g| + eps)."""
    return -lr * g / (np.abs(g) + eps)


P0 = {"w": jnp.asarray([0.5, -1.0, 2.0])}
# float32 rounding of Adam's bias corrections (1 - 0.999 and the like): ~4e-6 seen.
ATOL = 2e-5


def test_constant_schedule_is_lr_everywhere():
    opt = options(schedule="constant", lr=3e-4)
    schedule = optim.make_schedule(opt, num_epochs=10, steps_per_epoch=4)
    assert all(math.isclose(float(schedule(s)), 3e-4, rel_tol=1e-6) for s in (0, 7, 39, 500))


def test_cosine_schedule_warms_up_linearly_then_follows_the_half_cosine():
    lr, warm, low = 1e-3, 1e-5, 2e-6
    opt = options(schedule="cosine", lr=lr, warmup_lr=warm, min_lr=low, warmup_epochs=2)
    schedule = optim.make_schedule(opt, num_epochs=10, steps_per_epoch=4)   # 8 warmup steps
    expected = {0: warm, 4: warm + (lr - warm) / 2, 8: lr,
                # after warmup: low + (lr - low)(1 + cos(pi t / T)) / 2 over T = 40 - 8 steps
                24: low + (lr - low) * (1 + math.cos(math.pi * 16 / 32)) / 2,
                40: low, 60: low}
    for step, want in expected.items():
        assert math.isclose(float(schedule(step)), want, rel_tol=1e-5), step


def test_adam_first_step_is_lr_times_the_gradient_sign():
    g = np.asarray([0.1, -2.0, 0.0], np.float32)
    opt = options(schedule="constant", lr=1e-2, eps=1e-3)
    after = one_update(opt, [{"w": jnp.asarray(g)}], P0)
    np.testing.assert_allclose(after["w"], P0["w"] + adam_first_step(g, 1e-2, 1e-3), atol=ATOL)


def test_adamw_decays_the_weights_by_lr_times_weight_decay():
    """With a zero gradient Adam moves nothing; AdamW shrinks each weight by lr * wd."""
    zero = {"w": jnp.zeros(3)}
    adam = options(schedule="constant", lr=0.1, weight_decay=0.5)
    np.testing.assert_array_equal(one_update(adam, [zero], P0)["w"], P0["w"])
    adamw = options(name="adamw", schedule="constant", lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(one_update(adamw, [zero], P0)["w"], P0["w"] * (1 - 0.1 * 0.5),
                               rtol=1e-6)


def test_gradient_clipping_scales_the_gradient_to_the_global_norm():
    g = np.asarray([3.0, 4.0, 0.0], np.float32)                # norm 5
    opt = options(schedule="constant", lr=1.0, eps=1.0, grad_clip_norm=1.0)
    after = one_update(opt, [{"w": jnp.asarray(g)}], P0)
    clipped = g / 5.0                                          # norm 1
    np.testing.assert_allclose(after["w"], P0["w"] + adam_first_step(clipped, 1.0, 1.0),
                               atol=ATOL)
    unclipped = one_update(options(schedule="constant", lr=1.0, eps=1.0), [{"w": jnp.asarray(g)}],
                           P0)
    np.testing.assert_allclose(unclipped["w"], P0["w"] + adam_first_step(g, 1.0, 1.0), atol=ATOL)


def test_accumulate_steps_equals_one_step_on_the_mean_gradient():
    """k micro-batches of equal size, accumulated: one update on their mean gradient (the
    gradient of the k-times larger batch); no update before the k-th."""
    g1, g2 = np.asarray([0.2, -1.0, 3.0], np.float32), np.asarray([0.6, 1.0, -1.0], np.float32)
    opt = options(schedule="constant", lr=1e-2, eps=1e-3, accumulate_steps=2)
    halfway = one_update(opt, [{"w": jnp.asarray(g1)}], P0)
    np.testing.assert_array_equal(halfway["w"], P0["w"])
    after = one_update(opt, [{"w": jnp.asarray(g1)}, {"w": jnp.asarray(g2)}], P0)
    np.testing.assert_allclose(after["w"], P0["w"] + adam_first_step((g1 + g2) / 2, 1e-2, 1e-3),
                               atol=ATOL)


def test_keep_every_steps_keeps_multiples_beyond_the_last_n(tmp_path):
    from vtfpar_jax.state.checkpoint import CheckpointStore
    store = CheckpointStore(str(tmp_path), keep=2, keep_every=3, async_save=False)
    for step in range(1, 9):
        store.save(step, {"w": np.full(2, step, np.float32)}, {"step": step})
    store.wait()
    assert store.steps() == [3, 6, 7, 8]      # every 3rd, and the newest 2
    store.close()
