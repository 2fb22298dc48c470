"""The tf.data pipeline on the tiny synthetic config (24 train / 8 test tracklets, 32x16)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import get_builder, pipeline

SIZE = (32, 16)


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    b = get_builder("synthetic_pedestrians/tiny", tmp_path_factory.mktemp("tfds"))
    b.download_and_prepare()
    return b


def _fingerprints(batches) -> list[str]:
    """One hash per unmasked row: identifies the tracklet when frames are chosen 'first'."""
    return [hashlib.sha1(video.tobytes()).hexdigest()
            for batch in batches for video in batch["video"][batch["mask"]]]


def _reference(builder, split: str) -> list[str]:
    return _fingerprints(pipeline.eval_batches(builder, split, batch_size=4, frames=2,
                                               image_size=SIZE, frame_choice="first"))


def test_train_shapes_dtypes_and_range(builder):
    batches = list(pipeline.train_batches(builder, batch_size=4, frames=6, epoch=0,
                                          image_size=SIZE))
    assert len(batches) == pipeline.steps_per_epoch(builder, 4) == 6
    for batch in batches:
        assert batch["video"].shape == (4, 6, *SIZE, 3) and batch["video"].dtype == np.float32
        assert batch["labels"].shape == (4, 24) and batch["labels"].dtype == np.float32
        assert batch["mask"].dtype == bool and batch["mask"].all()
        assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    # The zero padding of the crop augmentation shows as -1 (black after normalising).
    assert any((b["video"] == -1.0).all(axis=-1).any() for b in batches)


def test_pad_pixels_bounds_the_crop_shift(builder):
    """Augmented frames are the plain ones shifted by at most pad_pixels, maybe mirrored."""
    kwargs = dict(batch_size=4, frames=2, epoch=0, image_size=SIZE, frame_choice="first")
    plain = next(pipeline.train_batches(builder, augment=False, **kwargs))["video"]
    for pad in (0, 3):
        video = next(pipeline.train_batches(builder, augment=True, pad_pixels=pad,
                                            **kwargs))["video"]
        frames = zip(video.reshape(-1, *SIZE, 3), plain.reshape(-1, *SIZE, 3), strict=True)
        for got, want in frames:
            padded = np.pad(want, ((pad, pad), (pad, pad), (0, 0)), constant_values=-1.0)
            crops = [padded[dy:dy + SIZE[0], dx:dx + SIZE[1]]
                     for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
            assert any(np.array_equal(got, c) or np.array_equal(got, c[:, ::-1])
                       for c in crops), f"pad_pixels={pad}: frame is no such crop"
    with pytest.raises(ValueError, match="pad_pixels=40"):
        pipeline.train_batches(builder, pad_pixels=40, **kwargs)


def test_clip_normalization_and_bad_options(builder):
    batch = next(pipeline.eval_batches(builder, "test", batch_size=2, frames=2, image_size=SIZE,
                                       normalization="clip"))
    assert batch["video"].min() < -1.0 and batch["video"].max() > 1.0
    with pytest.raises(ValueError, match="frame_choice='middle'"):
        pipeline.eval_batches(builder, "test", batch_size=2, frames=2, frame_choice="middle")
    with pytest.raises(ValueError, match="normalization='imagenet'"):
        pipeline.train_batches(builder, batch_size=2, frames=2, epoch=0,
                               normalization="imagenet")
    with pytest.raises(ValueError, match="batch_size=3 .* process_count=2"):
        pipeline.train_batches(builder, batch_size=3, frames=2, epoch=0, process_count=2)
    with pytest.raises(ValueError, match="no split 'validation'"):
        pipeline.eval_batches(builder, "validation", batch_size=2, frames=2)


def test_uniform_eval_is_identical_run_to_run(builder):
    def run():
        return list(pipeline.eval_batches(builder, "test", batch_size=3, frames=4,
                                          image_size=SIZE))
    first, second = run(), run()
    assert len(first) == len(second) == 3
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_is_a_function_of_seed_and_epoch(builder):
    def run(epoch, seed=0):
        return np.stack([b["video"] for b in pipeline.train_batches(
            builder, batch_size=4, frames=3, epoch=epoch, seed=seed, image_size=SIZE)])
    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    assert not np.array_equal(run(0), run(0, seed=1))


@pytest.mark.parametrize("k", [1, 4])
def test_start_batch_resumes_exactly(builder, k):
    full = list(pipeline.train_batches(builder, batch_size=4, frames=4, epoch=3, seed=5,
                                       image_size=SIZE))
    resumed = list(pipeline.train_batches(builder, batch_size=4, frames=4, epoch=3, seed=5,
                                          image_size=SIZE, start_batch=k))
    assert len(resumed) == len(full) - k
    for a, b in zip(full[k:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_two_hosts_train_shares_are_disjoint_and_cover_the_split(builder):
    shares = []
    for index in range(2):
        batches = list(pipeline.train_batches(
            builder, batch_size=4, frames=2, epoch=0, image_size=SIZE, frame_choice="first",
            augment=False, process_index=index, process_count=2))
        assert len(batches) == pipeline.steps_per_epoch(builder, 4, process_count=2) == 6
        assert all(b["video"].shape[0] == 2 for b in batches)   # per-host batch
        shares.append(_fingerprints(batches))
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(_reference(builder, "train"))


@pytest.mark.parametrize("hosts,batch_size", [(2, 6), (3, 3)])
def test_eval_covers_every_tracklet_once_with_equal_batch_counts(builder, hosts, batch_size):
    counts, seen, masks = [], [], 0
    for index in range(hosts):
        batches = list(pipeline.eval_batches(
            builder, "test", batch_size=batch_size, frames=2, image_size=SIZE,
            frame_choice="first", process_index=index, process_count=hosts))
        counts.append(len(batches))
        seen += _fingerprints(batches)
        masks += sum(int(b["mask"].sum()) for b in batches)
        assert all((b["video"][~b["mask"]] == 0).all() for b in batches)
    assert len(set(counts)) == 1
    assert masks == 8 and sorted(seen) == sorted(_reference(builder, "test"))


def test_frame_choice_indices():
    seed = tf.constant([1, 2], tf.int64)

    def indices(n, frames, choice):
        return pipeline._frame_indices(tf.constant(n), frames, choice, seed).numpy().tolist()

    assert indices(10, 4, "uniform") == [1, 3, 6, 8]
    assert indices(3, 6, "uniform") == [0, 0, 1, 1, 2, 2]
    assert indices(3, 5, "first") == [0, 1, 2, 2, 2]
    distinct = indices(10, 6, "random")
    assert len(set(distinct)) == 6 and all(0 <= i < 10 for i in distinct)
    assert indices(10, 6, "random") == distinct   # stateless: same seed, same draw
    orders = [pipeline._frame_indices(tf.constant(10), 6, "random",
                                      tf.constant([s, 0], tf.int64)).numpy().tolist()
              for s in range(5)]
    assert any(o != sorted(o) for o in orders)   # as published, temporal order is not kept
    short = indices(2, 6, "random")   # fewer frames than T: drawn with replacement
    assert len(short) == 6 and set(short) <= {0, 1}


def test_tracklets_shorter_than_t(builder):
    # The tiny config has 3..8 frames, so T=10 is longer than every tracklet.
    for choice in ("random", "uniform", "first"):
        batch = next(pipeline.train_batches(builder, batch_size=2, frames=10, epoch=0,
                                            image_size=SIZE, frame_choice=choice))
        assert batch["video"].shape == (2, 10, *SIZE, 3)
        assert np.isfinite(batch["video"]).all()


def test_positive_ratio_is_the_train_mean_and_cached(builder):
    labels = np.stack([ex["labels"] for ex in tfds.as_numpy(builder.as_dataset(split="train"))])
    ratio = pipeline.positive_ratio(builder)
    assert ratio.dtype == np.float32 and ratio.shape == (24,)
    np.testing.assert_allclose(ratio, labels.mean(0), rtol=1e-6)
    cache = os.path.join(builder.data_dir, pipeline.RATIO_FILE)
    with open(cache) as f:
        stored = json.load(f)
    stored["positive_ratio"] = [0.25] * 24   # a later call must read this, not recompute
    with open(cache, "w") as f:
        json.dump(stored, f)
    np.testing.assert_array_equal(pipeline.positive_ratio(builder), np.full(24, 0.25))


def test_benchmark_entry(builder):
    root = str(Path(builder.data_dir).parents[2])   # <root>/<name>/<config>/<version>
    result = pipeline._benchmark(["--dataset", "synthetic_pedestrians/tiny", "--data_dir", root,
                                  "--batch_size", "4", "--frames", "2", "--image_size", "32",
                                  "--steps", "8", "--warmup", "1"])
    assert result["tracklets_per_s"] > 0 and result["frames_per_s"] > 0
