"""What the MARS and DukeMTMC-VID attribute builders share.

Both read a manual dir in one of two layouts, detected automatically:
- raw: the dataset as released plus Chen et al.'s attribute CSV (the
  subclass knows its folders: `_raw_tracklets`);
- preprocessed: the layout of the published VTFPAR++ code's release,
  identical for both datasets:

      <manual_dir>/attributes.csv       tracklet name, then A 0/1 columns
                                         (header row optional)
      <manual_dir>/train_tracklets.txt  one tracklet name a line
      <manual_dir>/test_tracklets.txt
      <manual_dir>/frames/<tracklet name>/*.jpg   frames, in file-name order

  Tracklet names are '<pid>C<camera>T<tracklet>' (e.g. '0001C1T0003'; an
  underscore before C and T is accepted), which is where the ids come from.

The raw layout wins when its markers are present. Frames are stored as the
bytes read from disk (not re-encoded); unreadable frames are skipped, see
`input_pipeline.features`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import features, label_csv
from vtfpar_jax import attributes

log = logging.getLogger(__name__)

PREPROCESSED_FILES = ("attributes.csv", "train_tracklets.txt", "test_tracklets.txt", "frames")
SPLITS = ("train", "test")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that orders 'F2' before 'F10' (frame numbers are not always padded)."""
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def list_jpegs(folder: Path) -> list[Path]:
    """The .jpg/.jpeg files of a folder, in natural name order."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")),
                  key=lambda p: natural_key(p.name))


@dataclasses.dataclass
class Tracklet:
    """One tracklet to write: ids, its labels (A,) and its frame files in temporal order."""

    name: str
    pid: int
    camera: int
    tracklet: int
    labels: np.ndarray
    frames: list[Path]


def missing_error(what: str, items: Iterable[str], hint: str = "") -> FileNotFoundError:
    items = list(items)
    shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
    return FileNotFoundError(f"{len(items)} {what}: {shown}{hint}")


class ManualTrackletBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the manual-download builders; subclasses set the class attributes."""

    ATTRIBUTE_SET: str = ""
    # Paths (relative to the manual dir) whose presence means the raw layout.
    RAW_MARKERS: tuple[str, ...] = ()
    DESCRIPTION: str = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"{self.DESCRIPTION} attribute_set: {self.ATTRIBUTE_SET}",
            features=features.tracklet_features(self.ATTRIBUTE_SET),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(attribute_set=self.ATTRIBUTE_SET),
        )

    def _manual_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        try:
            return Path(os.fspath(dl_manager.manual_dir))
        except AssertionError as error:
            # tfds raises a bare AssertionError; a missing path is a FileNotFoundError.
            raise FileNotFoundError(f"{self.name}: {error}") from None

    def layout(self, root: Path) -> str:
        """'raw' or 'preprocessed', or a FileNotFoundError saying what is missing."""
        if all((root / m).exists() for m in self.RAW_MARKERS):
            return "raw"
        if all((root / m).exists() for m in PREPROCESSED_FILES):
            return "preprocessed"
        raw_missing = [m for m in self.RAW_MARKERS if not (root / m).exists()]
        pre_missing = [m for m in PREPROCESSED_FILES if not (root / m).exists()]
        raise FileNotFoundError(
            f"{self.name}: manual dir {root} holds neither layout (raw lacks "
            f"{', '.join(raw_missing)}; preprocessed lacks {', '.join(pre_missing)}).\n"
            f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self._manual_root(dl_manager)
        layout = self.layout(root)
        log.info("%s: reading the %s layout in %s", self.name, layout, root)
        by_split = (self._raw_tracklets(root) if layout == "raw"
                    else self._preprocessed_tracklets(root))
        return {split: self._generate_examples(split, by_split[split]) for split in SPLITS}

    def _raw_tracklets(self, root: Path) -> dict[str, list[Tracklet]]:
        raise NotImplementedError(f"{type(self).__name__} must read its raw layout")

    def _preprocessed_tracklets(self, root: Path) -> dict[str, list[Tracklet]]:
        num_attributes = attributes.get(self.ATTRIBUTE_SET).num_attributes
        csv_path = root / "attributes.csv"
        labels = label_csv.read_preprocessed_csv(csv_path, num_attributes)
        out = {}
        for split in SPLITS:
            list_path = root / f"{split}_tracklets.txt"
            names = [n.strip() for n in list_path.read_text().splitlines() if n.strip()]
            tracklets, unlabelled, no_folder = [], [], []
            for line, name in enumerate(names, start=1):
                ids = label_csv.parse_tracklet_name(name)
                if ids is None:
                    raise ValueError(f"{list_path}: line {line}: tracklet name {name!r} is not "
                                     "'<pid>C<camera>T<tracklet>' (e.g. 0001C1T0003)")
                if name not in labels:
                    unlabelled.append(name)
                    continue
                folder = root / "frames" / name
                if not folder.is_dir():
                    no_folder.append(name)
                    continue
                frames = list_jpegs(folder)
                if not frames:
                    no_folder.append(f"{name} (empty)")
                    continue
                tracklets.append(Tracklet(name, *ids, labels[name], frames))
            if no_folder:
                raise missing_error(f"tracklets of {list_path} have no image folder under "
                                    f"{root / 'frames'}", no_folder)
            if unlabelled:
                raise missing_error(f"tracklets of {list_path} have no row in {csv_path}",
                                    unlabelled)
            out[split] = tracklets
        return out

    def _generate_examples(self, split: str,
                           tracklets: list[Tracklet]) -> Iterator[tuple[str, dict]]:
        stats = features.BuildStats(split)
        for t in tracklets:
            frames = []
            for path in t.frames:
                try:
                    frames.append((str(path), path.read_bytes()))
                except OSError as error:   # an unreadable file counts as a bad frame
                    log.warning("tracklet %s: cannot read %s: %s", t.name, path, error)
                    frames.append((str(path), b""))
            example = features.make_example(t.name, frames, t.labels, t.pid, t.camera,
                                            t.tracklet, stats)
            if example is not None:
                yield example
        stats.log_summary()
