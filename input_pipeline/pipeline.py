"""tf.data from a tracklet builder to numpy batches `{'video', 'labels', 'mask'}` of uint8 frames.

Graph per example: choose T frame indices -> gather their JPEG bytes ->
decode only those -> uint8 frames as stored. That is all the host does: the
resize to the model's input, the training augmentation and the normalisation
run on the device, inside the jitted step (vtfpar_jax.models.preprocess), so the host
sends a quarter of the bytes float32 would take and spends its cores on JPEG
decoding alone. Shapes: video (B, T, h, w, 3) uint8 at the stored frame size,
labels (B, A) float32, mask (B,) bool. B is the per-host batch:
`batch_size // process_count`.

Every frame of a batch must have one size. A dataset whose frames vary in size
names one with `frame_size=(h, w)` (config.input.frame_size): frames of another
size are then resized to it on the host (bilinear, filtered when shrinking,
rounded to uint8); without it, a frame whose size differs from the split's
first is refused, naming the tracklet and the option.

Determinism: every random draw is a stateless TF op seeded from
(seed, epoch, example index), and the shuffle is seeded from (seed, epoch),
so an epoch is a pure function of its arguments. Resuming mid-epoch
(`start_batch=k`) skips k*B serialized records before any JPEG is decoded.

Hosts: host i of P reads only the slice [i*N//P, (i+1)*N//P) of the split;
the slices are disjoint and cover it. Training drops what does not fill a
batch (every host runs `steps_per_epoch` steps); evaluation pads every host to
the same number of batches with `mask=False` rows.

Frames that do not decode were left out when the dataset was built
(input_pipeline.features: counted, and named with their tracklet, in the build
log), so decoding here does not fail on them.

Benchmark: `python -m input_pipeline.pipeline --mars_geometry --data_dir DIR`
(MARS's 256x128 frames, drawn, no download) or `--dataset NAME --data_dir DIR`;
see `_benchmark`.
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
from vtfpar_jax.errors import UserError

tf_devices.hide_gpus_from_tensorflow()

log = logging.getLogger(__name__)

FRAME_CHOICES = ("random", "uniform", "first")
RATIO_FILE = "positive_ratio.json"
# Seeds the stateless draws of evaluation (used only with frame_choice='random').
_EVAL_SEED = (7, 0)


class InputDataError(UserError, ValueError):
    """Frames the pipeline cannot batch as configured; the message names the tracklet."""


def attribute_set(builder: tfds.core.DatasetBuilder) -> attributes.AttributeSet:
    """The attribute set a builder's labels follow (its `ATTRIBUTE_SET` or info metadata)."""
    name = getattr(builder, "ATTRIBUTE_SET", None)
    if name is None and builder.info.metadata:
        name = builder.info.metadata.get("attribute_set")
    if name is None:
        raise ValueError(f"builder {builder.name!r} names no attribute set (ATTRIBUTE_SET)")
    return attributes.get(name)


def _check_options(frame_choice: str, frames: int,
                   frame_size: tuple[int, int] | None) -> None:
    if frame_choice not in FRAME_CHOICES:
        raise ValueError(f"frame_choice={frame_choice!r}: expected one of {FRAME_CHOICES}")
    if frames < 1:
        raise ValueError(f"frames={frames}: need at least 1")
    if frame_size is not None and (len(frame_size) != 2 or min(frame_size) < 1):
        raise ValueError(f"frame_size={frame_size!r}: expected (height, width) or None")


def frame_size(input_config) -> tuple[int, int] | None:
    """config.input.frame_size as the pipeline takes it: None for (0, 0) (as stored)."""
    size = tuple(int(v) for v in input_config.get("frame_size", (0, 0)))
    if size == (0, 0):
        return None
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"config.input.frame_size={size}: expected (height, width) of "
                         "positive sizes, or (0, 0) for frames as stored")
    return size


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
    ds = builder.as_dataset(split="train", read_config=_read_config(),
                            decoders={"frames": tfds.decode.SkipDecoding()})
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


def stored_frame_size(builder: tfds.core.DatasetBuilder, split: str) -> tuple[int, int]:
    """(h, w) of the first frame of `split`, read from its JPEG header."""
    ds = builder.as_dataset(split=split, read_config=_read_config(),
                            decoders={"frames": tfds.decode.SkipDecoding()})
    for example in ds.take(1):
        height, width, _ = tf.io.extract_jpeg_shape(example["frames"][0]).numpy().tolist()
        return height, width
    raise ValueError(f"dataset {builder.name!r}: the {split} split is empty")


def _make_example_fn(frames: int, size: tuple[int, int], resize: bool, frame_choice: str,
                     base_seed: tf.Tensor):
    """example -> {'video': (T, *size, 3) uint8, 'labels', 'mask'}.

    resize: frames of another size than `size` are resized to it (frame_size was
    given); else they are refused.
    """
    height, width = size

    def one_frame(data, name):
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        same = tf.reduce_all(tf.shape(image)[:2] == tf.constant([height, width]))
        if resize:
            # As the published transforms would on the original: bilinear, filtering
            # when shrinking (antialias), back to uint8.
            return tf.cond(same, lambda: image, lambda: tf.cast(tf.clip_by_value(tf.round(
                tf.image.resize(image, size, method="bilinear", antialias=True)), 0, 255),
                tf.uint8))
        check = tf.debugging.Assert(same, [
            "tracklet", name, "has a frame of shape", tf.shape(image),
            f"where the split's frames are {height}x{width}; set config.input.frame_size "
            "(frame_size=) to resize frames of varying size on the host"])
        with tf.control_dependencies([check]):
            return tf.identity(image)

    def example_fn(index, example):
        seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        choice_seed, _ = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        indices = _frame_indices(tf.shape(example["frames"])[0], frames, frame_choice,
                                 choice_seed)
        chosen = tf.gather(example["frames"], indices)   # decode only these T
        video = tf.map_fn(lambda data: one_frame(data, example["tracklet_name"]), chosen,
                          fn_output_signature=tf.TensorSpec((height, width, 3), tf.uint8))
        return {"video": video, "labels": tf.cast(example["labels"], tf.float32),
                "mask": tf.constant(True)}

    return example_fn


def _read_config(shuffle_seed: int | None = None) -> tfds.ReadConfig:
    """TFDS's autocache off: every dataset here is read once (each epoch and each evaluation
    builds its own), so a cache of a small split only held its bytes in memory, and a read
    that stops early (the first frame's size, a run's last step) made TF warn that the
    partial cache was discarded."""
    return tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)


def _read(builder: tfds.core.DatasetBuilder, split: str, shuffle_seed: int | None):
    ds = builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None,
        read_config=_read_config(shuffle_seed),
        decoders={"frames": tfds.decode.SkipDecoding()})
    return ds.map(lambda ex: {"frames": ex["frames"], "labels": ex["labels"],
                              "tracklet_name": ex["tracklet_name"]})


def _finish(ds: tf.data.Dataset) -> Iterator[dict]:
    options = tf.data.Options()
    options.deterministic = True   # evaluation and exact resume need the order
    batches = tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE).with_options(options))
    try:
        yield from batches
    except tf.errors.InvalidArgumentError as error:
        # The frame-size check above: one line naming the tracklet and the option.
        message = error.message.partition("assertion failed: ")[2] or error.message
        raise InputDataError(" ".join(message.replace("[", " ").replace("]", " ").split())
                             ) from None


def _frame_size_for(builder, split: str, frame_size) -> tuple[tuple[int, int], bool]:
    if frame_size is not None:
        return tuple(frame_size), True
    return stored_frame_size(builder, split), False


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def train_batches(builder: tfds.core.DatasetBuilder, *, batch_size: int, frames: int,
                  epoch: int, start_batch: int = 0, seed: int = 0,
                  frame_choice: str = "random", frame_size: tuple[int, int] | None = None,
                  process_index: int = 0, process_count: int = 1,
                  shuffle_buffer: int = 1024) -> Iterator[dict]:
    """One epoch of this host's training batches, from batch `start_batch` on.

    Args:
      batch_size: global batch; each host yields B = batch_size // process_count.
      frames: T frames per clip.
      epoch, seed: the epoch is a pure function of these (shuffle and draws); training
        passes its run's data-order seed (vtfpar_jax.models.rng.data_order_seed).
      start_batch: resume point: yields batches start_batch .. steps_per_epoch-1.
      frame_size: (h, w) every frame is resized to on the host; None: as stored.
      shuffle_buffer: examples held by the shuffle (serialized JPEG bytes).

    Yields:
      {'video': (B, T, h, w, 3) uint8, 'labels': (B, A) float32, 'mask': (B,) bool}
      (every row a tracklet: training batches are never padded).
    """
    _check_options(frame_choice, frames, frame_size)
    host_batch = _host_batch(batch_size, process_count)
    steps = steps_per_epoch(builder, batch_size, process_count)
    if not 0 <= start_batch <= steps:
        raise ValueError(f"start_batch={start_batch} is not in [0, {steps}] (steps_per_epoch)")
    size, resize = _frame_size_for(builder, "train", frame_size)
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
    ds = ds.map(_make_example_fn(frames, size, resize, frame_choice, base_seed),
                num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds.batch(host_batch, drop_remainder=True))


def eval_batches(builder: tfds.core.DatasetBuilder, split: str, *, batch_size: int,
                 frames: int, frame_choice: str = "uniform",
                 frame_size: tuple[int, int] | None = None, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """Every tracklet of `split` once across hosts, deterministic.

    Every host yields ceil(ceil(N / P) / B) batches; rows past the host's share
    are zeros with `mask=False`.

    Yields:
      {'video': (B, T, h, w, 3) uint8, 'labels': (B, A) float32, 'mask': (B,) bool,
       'index': (B,) int64, the tracklet's place in the split (-1 on padding rows)}.
    """
    _check_options(frame_choice, frames, frame_size)
    host_batch = _host_batch(batch_size, process_count)
    num_examples = _num_examples(builder, split)
    size, resize = _frame_size_for(builder, split, frame_size)
    start, end = _host_slice(num_examples, process_index, process_count)
    num_batches = math.ceil(math.ceil(num_examples / process_count) / host_batch)
    ds = _read(builder, f"{split}[{start}:{end}]", shuffle_seed=None).enumerate(start)
    example_fn = _make_example_fn(frames, size, resize, frame_choice,
                                  tf.constant(_EVAL_SEED, tf.int64))
    # The index names the tracklet for what is seeded per tracklet
    # (vtfpar_jax.experiments.corruptions).
    ds = ds.map(lambda index, example: {**example_fn(index, example), "index": index},
                num_parallel_calls=tf.data.AUTOTUNE)
    num_attributes = attribute_set(builder).num_attributes
    padding = {"video": tf.zeros((frames, *size, 3), tf.uint8),
               "labels": tf.zeros((num_attributes,), tf.float32),
               "mask": tf.constant(False), "index": tf.constant(-1, tf.int64)}
    pad_rows = num_batches * host_batch - (end - start)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(pad_rows))
    return _finish(ds.batch(host_batch, drop_remainder=True))


def batch_bytes(batch: dict) -> int:
    """Bytes a batch takes on its way to the devices (from its shapes and dtypes)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in batch.values())


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


MARS_GEOMETRY = "synthetic_pedestrians/mars_geometry"


def _benchmark(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m input_pipeline.pipeline",
        description="Throughput of the training input pipeline (host side: read, choose, "
        "decode, batch).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="builder name, e.g. synthetic_pedestrians or "
                        "synthetic_pedestrians/tiny")
    source.add_argument("--mars_geometry", action="store_true",
                        help=f"{MARS_GEOMETRY}: drawn tracklets at MARS's 256x128 with "
                        "photo-like grain, built in --data_dir on first use (no download)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--image_size", type=int, default=224,
                        help="the model's square input (resized on the device): sets the "
                        "float32 bytes the batch would take as model input")
    parser.add_argument("--steps", type=int, default=50, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--step_frames_per_s", type=float, default=None,
                        help="a train step's consumption (e.g. 2630 for the H200 at batch 16): "
                        "reports the pipeline's ratio to it and the cores that would feed it")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    dataset = MARS_GEOMETRY if args.mars_geometry else args.dataset
    builder = get_builder(dataset, args.data_dir)
    builder.download_and_prepare()
    steps = steps_per_epoch(builder, args.batch_size)
    if steps < 1:
        raise ValueError(f"batch_size={args.batch_size} exceeds the train split")

    def batches():
        epoch = 0
        while True:
            yield from train_batches(builder, batch_size=args.batch_size, frames=args.frames,
                                     epoch=epoch)
            epoch += 1

    stream = batches()
    for _ in range(args.warmup):
        batch = next(stream)
    began = time.perf_counter()
    for _ in range(args.steps):
        batch = next(stream)
    seconds = time.perf_counter() - began
    tracklets = args.steps * args.batch_size
    frames_per_s = tracklets * args.frames / seconds
    n_cores = cores()
    model_input = {"video": np.zeros((args.batch_size, args.frames, args.image_size,
                                      args.image_size, 3), np.float32),
                   "labels": batch["labels"], "mask": batch["mask"]}
    result = {"dataset": dataset, "batch_size": args.batch_size, "frames": args.frames,
              "frame_size": list(batch["video"].shape[2:4]), "image_size": args.image_size,
              "batches": args.steps, "seconds": round(seconds, 3),
              "tracklets_per_s": round(tracklets / seconds, 1),
              "frames_per_s": round(frames_per_s, 1), "cores": n_cores,
              "frames_per_s_per_core": round(frames_per_s / n_cores, 1),
              "batch_bytes": batch_bytes(batch),
              "float32_model_input_batch_bytes": batch_bytes(model_input)}
    if args.step_frames_per_s:
        result["step_frames_per_s"] = args.step_frames_per_s
        result["ratio_to_step"] = round(frames_per_s / args.step_frames_per_s, 3)
        result["cores_to_feed_step"] = math.ceil(args.step_frames_per_s
                                                 / (frames_per_s / n_cores))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _summary(r: dict) -> str:
    lines = [f"train pipeline {r['dataset']} ({r['frame_size'][0]}x{r['frame_size'][1]} frames, "
             f"B={r['batch_size']}, T={r['frames']}): {r['frames_per_s']} frames/s, "
             f"{r['tracklets_per_s']} tracklets/s on {r['cores']} cores = "
             f"{r['frames_per_s_per_core']} frames/s per core",
             f"host-to-device bytes per batch: {r['batch_bytes']:,} (uint8 frames as stored; "
             f"float32 {r['image_size']} px model input would be "
             f"{r['float32_model_input_batch_bytes']:,})"]
    if "ratio_to_step" in r:
        lines.append(f"against a step consuming {r['step_frames_per_s']:g} frames/s: ratio "
                     f"{r['ratio_to_step']}; {r['cores_to_feed_step']} cores at this rate per "
                     "core would feed it")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    result = _benchmark()
    print(_summary(result))
    print(json.dumps(result))
