"""The tf.data pipeline on the tiny synthetic config (24 train / 8 test tracklets, 32x16).

The pipeline only decodes: its frames are uint8 as stored. Resize, augmentation and
normalisation run on the device (tests/test_preprocess.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from input_pipeline import get_builder, pipeline

SIZE = (32, 16)   # the tiny config's stored frames


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
                                               frame_choice="first"))


def _decoded(builder, split: str) -> dict[str, np.ndarray]:
    """Every tracklet's frames decoded by PIL (libjpeg's accurate DCT, as the published
    code reads them), (n, h, w, 3) uint8, by name."""
    ds = builder.as_dataset(split=split, decoders={"frames": tfds.decode.SkipDecoding()})
    return {ex["tracklet_name"].decode(): np.stack([
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in ex["frames"]])
        for ex in tfds.as_numpy(ds)}


def test_train_shapes_dtypes_and_bytes(builder):
    batches = list(pipeline.train_batches(builder, batch_size=4, frames=6, epoch=0))
    assert len(batches) == pipeline.steps_per_epoch(builder, 4) == 6
    for batch in batches:
        assert batch["video"].shape == (4, 6, *SIZE, 3) and batch["video"].dtype == np.uint8
        assert batch["labels"].shape == (4, 24) and batch["labels"].dtype == np.float32
        assert batch["mask"].dtype == bool and batch["mask"].all()
    video_bytes = 4 * 6 * SIZE[0] * SIZE[1] * 3
    assert pipeline.batch_bytes(batches[0]) == video_bytes + 4 * 24 * 4 + 4
    assert pipeline.stored_frame_size(builder, "train") == SIZE


def test_frames_are_the_stored_ones_decoded(builder):
    """frame_choice='first' of each test tracklet equals TFDS's own decode of its frames."""
    stored = _decoded(builder, "test")
    batches = list(pipeline.eval_batches(builder, "test", batch_size=8, frames=2,
                                         frame_choice="first"))
    got = [video for b in batches for video in b["video"][b["mask"]]]
    assert len(got) == len(stored) == 8
    for video in got:
        assert any(np.array_equal(video, frames[[0, min(1, len(frames) - 1)]])
                   for frames in stored.values())


def test_frame_size_resizes_on_the_host(builder):
    batch = next(pipeline.eval_batches(builder, "test", batch_size=2, frames=2,
                                       frame_choice="first", frame_size=(40, 20)))
    assert batch["video"].shape == (2, 2, 40, 20, 3) and batch["video"].dtype == np.uint8
    reference = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
        next(iter(_decoded(builder, "test").values()))[:1], (40, 20), antialias=True)), 0, 255),
        tf.uint8).numpy()
    np.testing.assert_array_equal(batch["video"][0, :1], reference)


def _jpeg(height: int, width: int) -> bytes:
    pixels = np.random.default_rng(height).integers(0, 256, (height, width, 3), np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


def test_a_frame_of_another_size_is_refused_naming_the_tracklet_and_option():
    example = {"frames": tf.constant([_jpeg(32, 16), _jpeg(30, 16)]),
               "labels": tf.zeros((24,), tf.uint8), "tracklet_name": tf.constant("test00042")}
    ds = tf.data.Dataset.from_tensors(example).enumerate()
    refuse = pipeline._make_example_fn(2, SIZE, False, "first", tf.constant([0, 0], tf.int64))
    with pytest.raises(pipeline.InputDataError,
                       match=r"test00042 .*30 16 3.*config\.input\.frame_size"):
        next(pipeline._finish(ds.map(refuse).batch(1)))
    resize = pipeline._make_example_fn(2, SIZE, True, "first", tf.constant([0, 0], tf.int64))
    batch = next(pipeline._finish(ds.map(resize).batch(1)))
    assert batch["video"].shape == (1, 2, *SIZE, 3)


def test_bad_options(builder):
    with pytest.raises(ValueError, match="frame_choice='middle'"):
        pipeline.eval_batches(builder, "test", batch_size=2, frames=2, frame_choice="middle")
    with pytest.raises(ValueError, match="frame_size=.0, 5."):
        pipeline.train_batches(builder, batch_size=2, frames=2, epoch=0, frame_size=(0, 5))
    with pytest.raises(ValueError, match="config.input.frame_size"):
        pipeline.frame_size({"frame_size": (-1, 4)})
    assert pipeline.frame_size({"frame_size": (0, 0)}) is None
    assert pipeline.frame_size({}) is None
    with pytest.raises(ValueError, match="batch_size=3 .* process_count=2"):
        pipeline.train_batches(builder, batch_size=3, frames=2, epoch=0, process_count=2)
    with pytest.raises(ValueError, match="no split 'validation'"):
        pipeline.eval_batches(builder, "validation", batch_size=2, frames=2)


def test_uniform_eval_is_identical_run_to_run(builder):
    def run():
        return list(pipeline.eval_batches(builder, "test", batch_size=3, frames=4))
    first, second = run(), run()
    assert len(first) == len(second) == 3
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_is_a_function_of_seed_and_epoch(builder):
    def run(epoch, seed=0):
        return np.stack([b["video"] for b in pipeline.train_batches(
            builder, batch_size=4, frames=3, epoch=epoch, seed=seed)])
    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    assert not np.array_equal(run(0), run(0, seed=1))


@pytest.mark.parametrize("k", [1, 4])
def test_start_batch_resumes_exactly(builder, k):
    full = list(pipeline.train_batches(builder, batch_size=4, frames=4, epoch=3, seed=5))
    resumed = list(pipeline.train_batches(builder, batch_size=4, frames=4, epoch=3, seed=5,
                                          start_batch=k))
    assert len(resumed) == len(full) - k
    for a, b in zip(full[k:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_two_hosts_train_shares_are_disjoint_and_cover_the_split(builder):
    shares = []
    for index in range(2):
        batches = list(pipeline.train_batches(
            builder, batch_size=4, frames=2, epoch=0, frame_choice="first",
            process_index=index, process_count=2))
        assert len(batches) == pipeline.steps_per_epoch(builder, 4, process_count=2) == 6
        assert all(b["video"].shape[0] == 2 for b in batches)   # per-host batch
        shares.append(_fingerprints(batches))
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(_reference(builder, "train"))


@pytest.mark.parametrize("hosts,batch_size", [(2, 6), (3, 3)])
def test_eval_covers_every_tracklet_once_with_equal_batch_counts(builder, hosts, batch_size):
    counts, seen, masks, indices = [], [], 0, []
    for index in range(hosts):
        batches = list(pipeline.eval_batches(
            builder, "test", batch_size=batch_size, frames=2,
            frame_choice="first", process_index=index, process_count=hosts))
        counts.append(len(batches))
        seen += _fingerprints(batches)
        masks += sum(int(b["mask"].sum()) for b in batches)
        assert all((b["video"][~b["mask"]] == 0).all() for b in batches)
        assert all((b["index"][~b["mask"]] == -1).all() for b in batches)
        indices += [int(i) for b in batches for i in b["index"][b["mask"]]]
    assert len(set(counts)) == 1
    assert masks == 8 and sorted(seen) == sorted(_reference(builder, "test"))
    # Each tracklet's place in the split, the same whatever the host count.
    assert sorted(indices) == list(range(8))


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
                                            frame_choice=choice))
        assert batch["video"].shape == (2, 10, *SIZE, 3) and batch["video"].dtype == np.uint8


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


def test_benchmark_entry(builder, tmp_path):
    root = str(Path(builder.data_dir).parents[2])   # <root>/<name>/<config>/<version>
    out = tmp_path / "bench.json"
    result = pipeline._benchmark(["--dataset", "synthetic_pedestrians/tiny", "--data_dir", root,
                                  "--batch_size", "4", "--frames", "2", "--image_size", "32",
                                  "--steps", "8", "--warmup", "1", "--step_frames_per_s", "100",
                                  "--json", str(out)])
    assert result["tracklets_per_s"] > 0 and result["frames_per_s"] > 0
    assert result["frames_per_s_per_core"] == pytest.approx(
        result["frames_per_s"] / result["cores"], rel=1e-2)
    assert result["ratio_to_step"] == pytest.approx(result["frames_per_s"] / 100, rel=1e-2)
    # uint8 frames as stored, against float32 model input at 32x32: 4 * 32 / 16 = 8x fewer.
    assert result["batch_bytes"] == 4 * 2 * 32 * 16 * 3 + 4 * 24 * 4 + 4
    assert result["float32_model_input_batch_bytes"] == 4 * 2 * 32 * 32 * 3 * 4 + 4 * 24 * 4 + 4
    saved = json.loads(out.read_text())
    assert {"frames_per_s", "cores", "frames_per_s_per_core"} <= set(saved)
    assert f"ratio {result['ratio_to_step']}" in pipeline._summary(result)


def test_a_read_that_stops_early_leaves_no_partial_cache_warning(builder, capfd):
    """TFDS caches a small split as it reads it; reading the first frame only, or stopping a
    run before its epoch ends, then made TF warn (from C++, on descriptor 2) that the partial
    cache was discarded. Every dataset here is read once, so none is cached."""
    capfd.readouterr()
    assert pipeline.stored_frame_size(builder, "test") == SIZE
    next(pipeline.train_batches(builder, batch_size=4, frames=2, epoch=0))
    assert "cache" not in capfd.readouterr().err
