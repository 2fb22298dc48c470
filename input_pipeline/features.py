"""What every tracklet builder stores, and how its frames are vetted at build time.

The three builders (synthetic, MARS, DukeMTMC-VID) write one record per
tracklet with the same feature dict, so that `input_pipeline.pipeline` reads
any of them the same way; only the label width A differs, and it is read from
the builder's `ATTRIBUTE_SET` (a name in `vtfpar_jax.attributes`).

Frames are checked here, once, when the dataset is built: a frame that does
not decode as a JPEG would otherwise crash `tf.io.decode_jpeg` in the middle
of a training run. Unreadable frames are skipped and counted; a tracklet left
with no frame is dropped and named in the build log.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from input_pipeline import tf_devices
from vtfpar_jax import attributes

tf_devices.hide_gpus_from_tensorflow()

log = logging.getLogger(__name__)


def tracklet_features(attribute_set: str) -> tfds.features.FeaturesDict:
    """The feature dict shared by all builders; `labels` has A = len(set) columns."""
    num_attributes = attributes.get(attribute_set).num_attributes
    return tfds.features.FeaturesDict({
        "frames": tfds.features.Sequence(
            tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")),
        "labels": tfds.features.Tensor(shape=(num_attributes,), dtype=np.uint8),
        "pid": tfds.features.Scalar(dtype=np.int64),
        "camera": tfds.features.Scalar(dtype=np.int64),
        "tracklet": tfds.features.Scalar(dtype=np.int64),
        "num_frames": tfds.features.Scalar(dtype=np.int64),
        "tracklet_name": tfds.features.Text(),
    })


def jpeg_problem(data: bytes) -> str | None:
    """Why `data` is not a decodable 3-channel-able JPEG, or None when it is fine.

    A full decode (not `Image.verify`, which misses truncated scans) is the
    only check that matches what `tf.io.decode_jpeg` will do at train time.
    """
    if not data:
        return "empty file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                return f"not a JPEG ({image.format})"
            if image.mode not in ("RGB", "L"):   # tf.io.decode_jpeg rejects e.g. CMYK
                return f"colour mode {image.mode}"
            image.load()
    except (OSError, ValueError, SyntaxError) as error:
        return f"undecodable ({error})"
    return None


@dataclasses.dataclass
class BuildStats:
    """Counts of what a split's generator left out, logged when it ends."""

    split: str
    skipped_frames: int = 0
    dropped_tracklets: list[str] = dataclasses.field(default_factory=list)
    written: int = 0

    def log_summary(self) -> None:
        log.info("split %s: %d tracklets written, %d unreadable frames skipped, "
                 "%d tracklets dropped for having no readable frame%s",
                 self.split, self.written, self.skipped_frames, len(self.dropped_tracklets),
                 f" ({', '.join(self.dropped_tracklets[:20])})" if self.dropped_tracklets else "")


def readable_frames(name: str, frames: Sequence[tuple[str, bytes]],
                    stats: BuildStats) -> list[bytes]:
    """The JPEG bytes among `frames` ((label, bytes) pairs) that decode, in order.

    Each rejected frame is logged with its label (a path for real datasets)
    and counted in `stats`.
    """
    kept = []
    for label, data in frames:
        problem = jpeg_problem(data)
        if problem is None:
            kept.append(data)
        else:
            stats.skipped_frames += 1
            log.warning("tracklet %s: skipping frame %s: %s", name, label, problem)
    return kept


def make_example(name: str, frames: Sequence[tuple[str, bytes]], labels: np.ndarray,
                 pid: int, camera: int, tracklet: int,
                 stats: BuildStats) -> tuple[str, dict] | None:
    """A (key, example) for the builder, or None when no frame is readable.

    Args:
      name: tracklet name, also the example key (unique within a split).
      frames: (label, JPEG bytes) in temporal order; bytes are stored as given.
      labels: (A,) 0/1 vector.
    """
    kept = readable_frames(name, frames, stats)
    if not kept:
        stats.dropped_tracklets.append(name)
        log.warning("tracklet %s: dropped, none of its %d frames is readable", name, len(frames))
        return None
    stats.written += 1
    return name, {
        "frames": kept,
        "labels": np.asarray(labels, np.uint8),
        "pid": int(pid),
        "camera": int(camera),
        "tracklet": int(tracklet),
        "num_frames": len(kept),
        "tracklet_name": name,
    }
