"""`synthetic_pedestrians`: procedurally drawn pedestrian tracklets, no download needed.

Labels follow `vtfpar_jax.attributes.SYNTHETIC` (24 columns); how each column
shows in the pixels is described in `input_pipeline.synthetic_figures`. Each
tracklet is drawn from `numpy.random.default_rng([SEED, split, index])`, so a
build is reproducible bit for bit and independent of worker order.

Configs:
- `default`: 1,200 train / 400 test tracklets of 6..16 frames at 64x32 (HxW);
  docs/datasets.md gives its build time.
- `large`: 4,800 / 1,600 tracklets, otherwise as `default` (about a minute).
- `tiny`: 24 train / 8 test tracklets of 3..8 frames at 32x16, for tests.
- `mars_geometry`: 400 / 16 tracklets at MARS's 256x128 with photo-like grain
  (JPEGs of 6.2 KB on average; MARS's 1.19 M frames take 6.3 GB zipped, about
  5.3 KB each), for the input-pipeline benchmark (`python -m input_pipeline.pipeline`).
A `SyntheticConfig` with other sizes can be passed as `config=`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import features, synthetic_figures

log = logging.getLogger(__name__)

SEED = 20240611
_SPLIT_IDS = {"train": 0, "test": 1}


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    """Sizes of a synthetic build.

    Attributes:
      image_size: (H, W) of the stored frames.
      num_train / num_test: tracklets per split.
      min_frames / max_frames: tracklet length range (inclusive).
      grain: pixel noise (std, levels of 255) for photo-like JPEGs; 0 draws none.
    """

    image_size: tuple[int, int] = (64, 32)
    num_train: int = 1200
    num_test: int = 400
    min_frames: int = 6
    max_frames: int = 16
    grain: float = 0.0

    def __post_init__(self):
        if self.min_frames < 1 or self.max_frames < self.min_frames:
            raise ValueError(f"synthetic config {self.name!r}: min_frames={self.min_frames}, "
                             f"max_frames={self.max_frames}; need 1 <= min <= max")
        if min(self.image_size) < 8:
            raise ValueError(f"synthetic config {self.name!r}: image_size={self.image_size} "
                             "is below 8 pixels on a side")


class SyntheticPedestrians(tfds.core.GeneratorBasedBuilder):
    """Drawn pedestrians whose looks follow the SYNTHETIC attribute set."""

    ATTRIBUTE_SET = "synthetic"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "Muted (low-saturation) background, blocks and occluders."}
    BUILDER_CONFIGS = [
        SyntheticConfig(name="default", description="1,200/400 tracklets, 64x32"),
        SyntheticConfig(name="large", description="4,800/1,600 tracklets, 64x32",
                        num_train=4800, num_test=1600),
        SyntheticConfig(name="tiny", description="24/8 tracklets, 32x16, for tests",
                        image_size=(32, 16), num_train=24, num_test=8,
                        min_frames=3, max_frames=8),
        SyntheticConfig(name="mars_geometry", description="400/16 tracklets, 256x128 "
                        "(MARS's frames) with photo-like grain, for pipeline benchmarks",
                        image_size=(256, 128), num_train=400, num_test=16, grain=4.0),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("Procedurally drawn pedestrian tracklets. attribute_set: "
                         f"{self.ATTRIBUTE_SET}"),
            features=features.tracklet_features(self.ATTRIBUTE_SET),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(attribute_set=self.ATTRIBUTE_SET),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        config = self.builder_config
        return {"train": self._generate_examples("train", config.num_train),
                "test": self._generate_examples("test", config.num_test)}

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        stats = features.BuildStats(split)
        for index in range(count):
            rng = np.random.default_rng([SEED, _SPLIT_IDS[split], index])
            num_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
            look, frames = synthetic_figures.draw_tracklet(rng, tuple(config.image_size),
                                                           num_frames, config.grain)
            name = f"{split}{index:05d}"
            camera = int(rng.integers(1, 7))
            example = features.make_example(
                name, [(f"{name}/{t}", f) for t, f in enumerate(frames)], look.labels(),
                pid=index, camera=camera, tracklet=index, stats=stats)
            if example is not None:
                yield example
        stats.log_summary()
