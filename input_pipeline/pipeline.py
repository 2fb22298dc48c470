"""tf.data from a tracklet builder to numpy batches `{'video', 'labels', 'mask'}`.

Graph per example: choose T frame indices -> gather their JPEG bytes ->
decode only those -> resize to `image_size` (bilinear, aspect not kept, as
published) -> training augmentation drawn independently per frame (zero-pad
`pad_pixels`, 10 as published, random crop back to size, horizontal flip p=0.5; reference section 1)
-> normalise. Shapes: video (B, T, H, W, 3) float32, labels (B, A) float32,
mask (B,) bool. B is the per-host batch: `batch_size // process_count`.

Determinism: every random draw is a stateless TF op seeded from
(seed, epoch, example index), and the shuffle is seeded from (seed, epoch),
so an epoch is a pure function of its arguments. Resuming mid-epoch
(`start_batch=k`) skips k*B serialized records before any JPEG is decoded.

Hosts: host i of P reads only the slice [i*N//P, (i+1)*N//P) of the split;
the slices are disjoint and cover it. Training drops what does not fill a
batch (every host runs `steps_per_epoch` steps); evaluation pads every host to
the same number of batches with `mask=False` rows.

Benchmark: `python -m input_pipeline.pipeline --dataset synthetic_pedestrians
--data_dir DIR --batch_size 16 --frames 6 [--image_size 224]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import get_builder, tf_devices
from vtfpar_jax import attributes

tf_devices.hide_gpus_from_tensorflow()

log = logging.getLogger(__name__)

FRAME_CHOICES = ("random", "uniform", "first")
NORMALIZATIONS = {
    # Reference section 1 (quirk): mean 0.5, std 0.5, not CLIP's own statistics.
    "published": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
PAD_PIXELS = 10  # published, at 224 px; scale it with smaller frames
RATIO_FILE = "positive_ratio.json"
# Seeds the stateless draws of evaluation (used only with frame_choice='random').
_EVAL_SEED = (7, 0)


def attribute_set(builder: tfds.core.DatasetBuilder) -> attributes.AttributeSet:
    """The attribute set a builder's labels follow (its `ATTRIBUTE_SET` or info metadata)."""
    name = getattr(builder, "ATTRIBUTE_SET", None)
    if name is None and builder.info.metadata:
        name = builder.info.metadata.get("attribute_set")
    if name is None:
        raise ValueError(f"builder {builder.name!r} names no attribute set (ATTRIBUTE_SET)")
    return attributes.get(name)


def _check_options(frame_choice: str, normalization: str, frames: int,
                   image_size: tuple[int, int]) -> None:
    if frame_choice not in FRAME_CHOICES:
        raise ValueError(f"frame_choice={frame_choice!r}: expected one of {FRAME_CHOICES}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}: expected one of "
                         f"{sorted(NORMALIZATIONS)}")
    if frames < 1:
        raise ValueError(f"frames={frames}: need at least 1")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size={image_size!r}: expected (height, width)")


def _host_batch(batch_size: int, process_count: int) -> int:
    if batch_size < process_count or batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} (global) is not a positive multiple of "
                         f"process_count={process_count}")
    return batch_size // process_count


def _host_slice(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
    return (process_index * num_examples // process_count,
            (process_index + 1) * num_examples // process_count)


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    splits = builder.info.splits
    if split not in splits:
        raise ValueError(f"dataset {builder.name!r} has no split {split!r}; "
                         f"it has {sorted(splits)} (is it prepared in {builder.data_dir}?)")
    return splits[split].num_examples


def steps_per_epoch(builder: tfds.core.DatasetBuilder, batch_size: int,
                    process_count: int = 1) -> int:
    """Training steps per epoch, the same on every host (the smallest host share rules)."""
    smallest_share = _num_examples(builder, "train") // process_count
    return smallest_share // _host_batch(batch_size, process_count)


def positive_ratio(builder: tfds.core.DatasetBuilder) -> np.ndarray:
    """(A,) float32 positive rate of each attribute over the train split.

    Computed once and cached as `positive_ratio.json` in `builder.data_dir`.
    """
    num_attributes = attribute_set(builder).num_attributes
    path = os.path.join(builder.data_dir, RATIO_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            cached = json.load(f)
        ratio = np.asarray(cached["positive_ratio"], np.float32)
        if ratio.shape == (num_attributes,):
            return ratio
        log.warning("%s holds %s values, expected %d: recomputing", path, ratio.shape,
                    num_attributes)
    total = np.zeros(num_attributes, np.float64)
    count = 0
    # Only the labels are needed: keep the frames as undecoded bytes.
    ds = builder.as_dataset(split="train", decoders={"frames": tfds.decode.SkipDecoding()})
    for labels in tfds.as_numpy(ds.map(lambda ex: ex["labels"]).batch(1024)):
        total += labels.sum(0)
        count += len(labels)
    if not count:
        raise ValueError(f"dataset {builder.name!r}: the train split is empty")
    ratio = (total / count).astype(np.float32)
    # Written to a temporary file then renamed, so that hosts racing here
    # never read a half-written cache; gfile, since data_dir may be a bucket.
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.gfile.GFile(temporary, "w") as f:
            json.dump({"num_examples": count, "attribute_set": attribute_set(builder).name,
                       "positive_ratio": ratio.tolist()}, f)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except (OSError, tf.errors.OpError) as error:   # a read-only data_dir still works
        log.warning("could not cache the positive ratio in %s: %s", path, error)
    return ratio


def _frame_indices(num_frames: tf.Tensor, frames: int, frame_choice: str,
                   seed: tf.Tensor) -> tf.Tensor:
    """(T,) int32 indices into a tracklet of `num_frames` frames."""
    n = tf.cast(num_frames, tf.int32)
    if frame_choice == "first":
        return tf.minimum(tf.range(frames), n - 1)
    if frame_choice == "uniform":
        # Centres of T equal bins: in order, repeats when n < T.
        centres = (tf.range(frames, dtype=tf.float32) + 0.5) * tf.cast(n, tf.float32) / frames
        return tf.minimum(tf.cast(tf.floor(centres), tf.int32), n - 1)
    perm_seed, replace_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    # As published: T distinct frames in random order (random.sample), or T
    # draws with replacement when the tracklet is shorter than T.
    return tf.cond(
        n >= frames,
        lambda: tf.argsort(tf.random.stateless_uniform([n], perm_seed))[:frames],
        lambda: tf.random.stateless_uniform([frames], replace_seed, 0, n, dtype=tf.int32))


def _make_example_fn(frames: int, image_size: tuple[int, int], frame_choice: str,
                     augment: bool, normalization: str, base_seed: tf.Tensor,
                     pad_pixels: int = PAD_PIXELS):
    height, width = image_size
    mean, std = (tf.constant(v, tf.float32) for v in NORMALIZATIONS[normalization])

    def one_frame(args):
        data, seed = args
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        # PIL's bilinear (the published transforms) filters when it shrinks, which
        # antialias=True matches; when only enlarging (synthetic 64x32 -> 224) the
        # filter changes nothing and costs time, so it is skipped.
        shrinks = tf.reduce_any(tf.shape(image)[:2] > tf.constant([height, width]))
        image = tf.cond(
            shrinks,
            lambda: tf.image.resize(image, (height, width), method="bilinear", antialias=True),
            lambda: tf.image.resize(image, (height, width), method="bilinear"))
        # The published transforms act on a uint8 PIL image: round like it does.
        image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
        if augment:
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            image = tf.pad(image, [[pad_pixels, pad_pixels], [pad_pixels, pad_pixels], [0, 0]])
            offset = tf.random.stateless_uniform([2], crop_seed, 0, 2 * pad_pixels + 1,
                                                 dtype=tf.int32)
            image = tf.slice(image, [offset[0], offset[1], 0], [height, width, 3])
            flip = tf.random.stateless_uniform([], flip_seed) < 0.5
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        return (image / 255.0 - mean) / std

    def example_fn(index, example):
        seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        choice_seed, frame_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        indices = _frame_indices(tf.shape(example["frames"])[0], frames, frame_choice,
                                 choice_seed)
        chosen = tf.gather(example["frames"], indices)   # decode only these T
        frame_seeds = tf.random.experimental.stateless_split(frame_seed, frames)
        video = tf.map_fn(one_frame, (chosen, frame_seeds),
                          fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32))
        return {"video": video, "labels": tf.cast(example["labels"], tf.float32),
                "mask": tf.constant(True)}

    return example_fn


def _read(builder: tfds.core.DatasetBuilder, split: str, shuffle_seed: int | None):
    ds = builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None,
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
        decoders={"frames": tfds.decode.SkipDecoding()})
    return ds.map(lambda ex: {"frames": ex["frames"], "labels": ex["labels"]})


def _finish(ds: tf.data.Dataset) -> Iterator[dict]:
    options = tf.data.Options()
    options.deterministic = True
    return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE).with_options(options)))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def train_batches(builder: tfds.core.DatasetBuilder, *, batch_size: int, frames: int,
                  epoch: int, start_batch: int = 0, seed: int = 0,
                  image_size: tuple[int, int] = (224, 224), frame_choice: str = "random",
                  augment: bool = True, normalization: str = "published",
                  pad_pixels: int = PAD_PIXELS, process_index: int = 0,
                  process_count: int = 1, shuffle_buffer: int = 1024) -> Iterator[dict]:
    """One epoch of this host's training batches, from batch `start_batch` on.

    Args:
      batch_size: global batch; each host yields B = batch_size // process_count.
      frames: T frames per clip.
      epoch, seed: the epoch is a pure function of these (shuffle and draws).
      start_batch: resume point: yields batches start_batch .. steps_per_epoch-1.
      pad_pixels: zero padding on every side before the random crop (augment only).
      shuffle_buffer: examples held by the shuffle (serialized JPEG bytes).

    Yields:
      {'video': (B, T, H, W, 3) float32, 'labels': (B, A) float32, 'mask': (B,) bool}.
    """
    _check_options(frame_choice, normalization, frames, image_size)
    if not 0 <= pad_pixels <= min(image_size):
        raise ValueError(f"pad_pixels={pad_pixels}: expected 0..{min(image_size)} for frames "
                         f"of {image_size[0]}x{image_size[1]}")
    host_batch = _host_batch(batch_size, process_count)
    steps = steps_per_epoch(builder, batch_size, process_count)
    if not 0 <= start_batch <= steps:
        raise ValueError(f"start_batch={start_batch} is not in [0, {steps}] (steps_per_epoch)")
    start, end = _host_slice(_num_examples(builder, "train"), process_index, process_count)
    epoch_seed = _epoch_seed(seed, epoch)
    ds = _read(builder, f"train[{start}:{end}]", shuffle_seed=epoch_seed)
    # The index (position in the split) is taken before shuffling, so an
    # example's draws depend neither on where the shuffle puts it nor on the
    # number of hosts; the shuffle is seeded, hence repeatable.
    ds = ds.enumerate(start).shuffle(shuffle_buffer, seed=epoch_seed,
                                     reshuffle_each_iteration=False)
    ds = ds.take(steps * host_batch).skip(start_batch * host_batch)
    base_seed = tf.constant([seed, epoch], tf.int64)
    ds = ds.map(_make_example_fn(frames, tuple(image_size), frame_choice, augment,
                                 normalization, base_seed, pad_pixels),
                num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds.batch(host_batch, drop_remainder=True))


def eval_batches(builder: tfds.core.DatasetBuilder, split: str, *, batch_size: int,
                 frames: int, image_size: tuple[int, int] = (224, 224),
                 frame_choice: str = "uniform", normalization: str = "published",
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Every tracklet of `split` once across hosts, no augmentation, deterministic.

    Every host yields ceil(ceil(N / P) / B) batches; rows past the host's share
    are zeros with `mask=False`.

    Yields:
      {'video': (B, T, H, W, 3) float32, 'labels': (B, A) float32, 'mask': (B,) bool}.
    """
    _check_options(frame_choice, normalization, frames, image_size)
    host_batch = _host_batch(batch_size, process_count)
    num_examples = _num_examples(builder, split)
    start, end = _host_slice(num_examples, process_index, process_count)
    num_batches = math.ceil(math.ceil(num_examples / process_count) / host_batch)
    ds = _read(builder, f"{split}[{start}:{end}]", shuffle_seed=None).enumerate(start)
    ds = ds.map(_make_example_fn(frames, tuple(image_size), frame_choice, False,
                                 normalization, tf.constant(_EVAL_SEED, tf.int64)),
                num_parallel_calls=tf.data.AUTOTUNE)
    num_attributes = attribute_set(builder).num_attributes
    padding = {"video": tf.zeros((frames, *image_size, 3), tf.float32),
               "labels": tf.zeros((num_attributes,), tf.float32),
               "mask": tf.constant(False)}
    pad_rows = num_batches * host_batch - (end - start)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(pad_rows))
    return _finish(ds.batch(host_batch, drop_remainder=True))


def _benchmark(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Throughput of the training input pipeline.")
    parser.add_argument("--dataset", required=True, help="builder name, e.g. "
                        "synthetic_pedestrians or synthetic_pedestrians/tiny")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--image_size", type=int, default=224, help="square side")
    parser.add_argument("--steps", type=int, default=50, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    args = parser.parse_args(argv)
    builder = get_builder(args.dataset, args.data_dir)
    builder.download_and_prepare()
    steps = steps_per_epoch(builder, args.batch_size)
    if steps < 1:
        raise ValueError(f"batch_size={args.batch_size} exceeds the train split")

    def batches():
        epoch = 0
        while True:
            yield from train_batches(builder, batch_size=args.batch_size, frames=args.frames,
                                     epoch=epoch, image_size=(args.image_size,) * 2)
            epoch += 1

    stream = batches()
    for _ in range(args.warmup):
        next(stream)
    began = time.perf_counter()
    for _ in range(args.steps):
        next(stream)
    seconds = time.perf_counter() - began
    tracklets = args.steps * args.batch_size
    return {"dataset": args.dataset, "batch_size": args.batch_size, "frames": args.frames,
            "image_size": args.image_size, "batches": args.steps, "seconds": round(seconds, 3),
            "tracklets_per_s": round(tracklets / seconds, 1),
            "frames_per_s": round(tracklets * args.frames / seconds, 1),
            "cpus": os.cpu_count()}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    result = _benchmark()
    print(f"train pipeline {result['dataset']}: {result['tracklets_per_s']} tracklets/s, "
          f"{result['frames_per_s']} frames/s (B={result['batch_size']}, T={result['frames']}, "
          f"{result['image_size']}px, {result['cpus']} CPUs)")
    print(json.dumps(result))
