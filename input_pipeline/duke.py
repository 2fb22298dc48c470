"""`dukemtmc_vid_attribute`: DukeMTMC-VideoReID with Chen et al.'s 36 attribute labels.

Labels follow `vtfpar_jax.attributes.DUKE` (docs/published-model.md §10; note the
label vector puts top colour before bottom colour, Chen et al.'s CSV has
them the other way round). Splits: `train` (2,196 tracklets) and `test`
(2,636: query plus gallery, a query tracklet that is also in the gallery is
kept once). Manual download.
"""

from __future__ import annotations

import collections
import logging
import re
from pathlib import Path

import tensorflow_datasets as tfds

from input_pipeline import label_csv, manual_builder
from input_pipeline.manual_builder import Tracklet

log = logging.getLogger(__name__)

D = label_csv.DROPPED
DUKE_CSV = label_csv.ChenLayout(
    attribute_set="duke",
    columns=(("action", 5), ("angle", 6), ("occlusion", D), ("cut", D), ("multi-person", D),
             ("back-dominant", D), ("target-change", D), ("target-miss", D),
             ("wrong-target", D), ("backpack", 2), ("shoulder bag", 2), ("handbag", 2),
             ("boots", 2), ("gender", 2), ("hat", 2), ("shoes", 2), ("top", 2),
             ("downcolor", 8), ("topcolor", 9)),
    label_order=("backpack", "shoulder bag", "handbag", "boots", "gender", "hat", "shoes",
                 "top", "angle", "action", "topcolor", "downcolor"),
)
# e.g. 0001_C2_F0001_X00001.jpg
_FRAME_NAME = re.compile(r"^(\d+)_C(\d+)_F(\d+)", re.IGNORECASE)
# Test = query then gallery; the first copy of a tracklet wins.
_SPLIT_FOLDERS = {"train": ("train",), "test": ("query", "gallery")}

_INSTRUCTIONS = """\
DukeMTMC-VideoReID (Wu et al., CVPR 2018, https://github.com/Yu-Wu/DukeMTMC-VideoReID) with
Chen et al.'s attribute annotation ("A Temporal Attention Model for Video-Based Pedestrian
Attribute Recognition", https://github.com/yuange250/MARS-Attribute). Place ONE of two layouts
in the manual dir (default ~/tensorflow_datasets/downloads/manual/, or
DownloadConfig(manual_dir=...)):

Raw (as released):
  train/<pid>/<tracklet>/<pid>_C<cam>_F<frame>_X<...>.jpg
      e.g. train/0001/0001/0001_C2_F0001_X00001.jpg
  query/<pid>/<tracklet>/...
  gallery/<pid>/<tracklet>/...
  duke_attributes.csv       Chen et al.: id, cam_id, tracklet_id, then action, angle,
      occlusion, cut, multi-person, back-dominant, target-change, target-miss, wrong-target,
      backpack, shoulder bag, handbag, boots, gender, hat, shoes, top, downcolor, topcolor
      (class indices from 0; header row optional)

Preprocessed (the VTFPAR++ code's release):
  attributes.csv            tracklet name (<pid>C<cam>T<tracklet>, e.g. 0001C2T0001), then 36
                            0/1 columns in the DUKE order of vtfpar_jax/attributes.py
                            (header row optional)
  train_tracklets.txt       tracklet names of the train split, one a line
  test_tracklets.txt        tracklet names of the test split
  frames/<tracklet name>/*.jpg
"""


class DukemtmcVidAttribute(manual_builder.ManualTrackletBuilder):
    """DukeMTMC-VideoReID video pedestrian attributes (36 labels per tracklet)."""

    ATTRIBUTE_SET = "duke"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    RAW_MARKERS = ("train", "query", "gallery", "duke_attributes.csv")
    DESCRIPTION = "DukeMTMC-VideoReID tracklets with Chen et al.'s attribute labels."

    def _raw_tracklets(self, root: Path) -> dict[str, list[Tracklet]]:
        csv_path = root / "duke_attributes.csv"
        labels = label_csv.read_chen_csv(csv_path, DUKE_CSV)
        out, seen, empty = {}, set(), []
        for split, folders in _SPLIT_FOLDERS.items():
            tracklets, left_out = [], collections.Counter()
            for folder_name in folders:
                for pid_dir in sorted(p for p in (root / folder_name).iterdir() if p.is_dir()):
                    for track_dir in sorted(p for p in pid_dir.iterdir() if p.is_dir()):
                        frames = manual_builder.list_jpegs(track_dir)
                        if not frames:
                            empty.append(str(track_dir))
                            continue
                        match = _FRAME_NAME.match(frames[0].name)
                        if match is None or not track_dir.name.isdigit():
                            raise ValueError(f"{frames[0]}: not a DukeMTMC-VideoReID frame "
                                             "<pid>/<tracklet>/<pid>_C<cam>_F<frame>_X<n>.jpg")
                        ids = (int(match.group(1)), int(match.group(2)), int(track_dir.name))
                        if ids in seen:   # a query tracklet also in the gallery
                            continue
                        if ids not in labels:
                            left_out[f"no row in {csv_path.name}"] += 1
                            continue
                        seen.add(ids)
                        tracklets.append(Tracklet(label_csv.tracklet_name(*ids), *ids,
                                                  labels[ids], frames))
            for reason, count in sorted(left_out.items()):
                log.info("%s split %s: %d tracklets left out: %s", self.name, split, count,
                         reason)
            out[split] = tracklets
        if empty:
            raise manual_builder.missing_error("tracklet folders hold no JPEG", empty)
        unseen = [f"id={p} cam_id={c} tracklet_id={t}" for p, c, t in labels
                  if (p, c, t) not in seen]
        if unseen:
            raise manual_builder.missing_error(
                f"tracklets of {csv_path} have no images in train, query or gallery", unseen)
        return out
