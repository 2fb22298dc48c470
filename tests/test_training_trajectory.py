"""Our training follows the published training over several optimiser steps.

tests/fixtures/training_trajectories/ holds what `vtfpar compare-pytorch --train_steps 3
--record` recorded from the published PyTorch code (both heads, SGD and Adam): its per-step
losses, evaluation logits after training, BatchNorm's running statistics and the updates of
every trained tensor (on sampled entries), beside the published code's own largest
difference between 1 and 2, 3 or 4 CPU threads on the same figures. This test trains our
side from the same weights on the same batches and holds each figure to NOISE_FACTOR times
that noise floor:
float32 sums taken in another order are all that may differ, and the published code is
not reproducible to better than its floor itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vtfpar_jax import attributes
from vtfpar_jax.tools import compare_training

FIXTURES = Path(__file__).parent / "fixtures" / "training_trajectories"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "trajectory.json").is_file())
# How far past the published code's own noise floor each figure may go. When recorded, ours
# was at most 1.3x the floor on every figure but one: the attribute head's Adam loss at step
# 3, 8.0x, where Adam turns a head's near-zero gradient into steps of about lr in a
# direction rounding decides (docs/published-model.md §14).
NOISE_FACTOR = 10.0
FIGURES = ("loss_rel", "eval_logits_abs", "bn_running_abs", "update_rel_median",
           "update_rel_max")


def _exceeding(differences: dict, floor: dict) -> dict:
    return {k: (differences[k], floor[k]) for k in FIGURES
            if not differences[k] <= NOISE_FACTOR * floor[k]}


def test_every_head_and_optimiser_is_recorded():
    assert CASES == sorted(f"{head}_{opt}" for head in compare_training.HEADS
                           for opt in compare_training.OPTIMIZERS)


def test_the_bound_tells_one_training_from_another():
    """Within one head, the SGD and the Adam trajectories (same weights, same batches) are
    far outside each other's bound: the bound can fail."""
    for head in compare_training.HEADS:
        meta, sgd = compare_training.read_fixture(FIXTURES / f"{head}_sgd")
        _, adam = compare_training.read_fixture(FIXTURES / f"{head}_adam")
        differences = compare_training.trajectory_differences(adam, sgd)
        assert set(_exceeding(differences, meta["noise_floor"])) >= {
            "loss_rel", "eval_logits_abs", "update_rel_median"}, head


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_our_training_follows_the_published_trajectory(case):
    meta, recorded = compare_training.read_fixture(FIXTURES / case)
    assert meta["sample_case"] == compare_training.SAMPLE_CASES[meta["head"]]
    # Drawn for each case, not cached: a ViT-B/16 sample held for the rest of a test worker's
    # life costs it about 2 GB.
    start = compare_training.starting_point(meta["frames"], meta["head"])
    batches = compare_training.draw_batches(meta["seed"], meta["steps"], meta["batch"],
                                            meta["frames"], attributes.get("mars"))
    ours = compare_training.our_run(start, batches, meta["optimizer"], meta["lr"],
                                    meta["seed"])
    run = compare_training.summary_of(ours, start["published"], meta["trained_keys"],
                                      sampled=True)
    differences = compare_training.trajectory_differences(run, recorded)
    assert not _exceeding(differences, meta["noise_floor"]), (
        f"{case}: (ours vs published, published's noise floor) past {NOISE_FACTOR:g}x the "
        f"floor; worst tensor {differences['update_worst_tensor']}")
