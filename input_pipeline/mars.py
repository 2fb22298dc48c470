"""`mars_attribute`: MARS tracklets with Chen et al.'s 43 attribute labels (manual download).

Labels follow `vtfpar_jax.attributes.MARS` (docs/published-model.md §10). Splits:
`train` (8,298 labelled tracklets of bbox_train) and `test` (8,062 labelled
tracklets of bbox_test); junk and distractor tracklets (pid 0 / -1) and any
tracklet without a CSV row are left out and counted in the build log.
"""

from __future__ import annotations

import collections
import logging
import re
from pathlib import Path

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from input_pipeline import label_csv, manual_builder
from input_pipeline.manual_builder import Tracklet

log = logging.getLogger(__name__)

D = label_csv.DROPPED
MARS_CSV = label_csv.ChenLayout(
    attribute_set="mars",
    columns=(("action", 5), ("angle", 6), ("occlusion", D), ("cut", D), ("multi-person", D),
             ("back-dominant", D), ("target-change", D), ("target-miss", D),
             ("wrong-target", D), ("upcolor", 9), ("downcolor", 10), ("age", 4), ("up", 2),
             ("down", 2), ("bag", 2), ("backpack", 2), ("hat", 2), ("handbag", 2), ("hair", 2),
             ("gender", 2), ("btype", 2)),
    label_order=("up", "down", "bag", "backpack", "hat", "handbag", "hair", "gender", "btype",
                 "angle", "action", "upcolor", "downcolor", "age"),
)
# e.g. 0001C1T0001F001.jpg; junk frames of the test set have pid '00-1'.
_FRAME_NAME = re.compile(r"^(\d{4}|00-1)C(\d+)T(\d+)F(\d+)\.jpe?g$", re.IGNORECASE)
_JUNK_PIDS = (0, -1)

_INSTRUCTIONS = """\
MARS (Zheng et al., ECCV 2016, http://zheng-lab.cecs.anu.edu.au/Project/project_mars.html)
with Chen et al.'s attribute annotation ("A Temporal Attention Model for Video-Based
Pedestrian Attribute Recognition", https://github.com/yuange250/MARS-Attribute). Place ONE of
two layouts in the manual dir (default ~/tensorflow_datasets/downloads/manual/, or
DownloadConfig(manual_dir=...)):

Raw (as released):
  bbox_train/<pid>/<pid>C<cam>T<tracklet>F<frame>.jpg     e.g. bbox_train/0001/0001C1T0001F001.jpg
  bbox_test/<pid>/...
  info/train_name.txt, info/test_name.txt   frame file names, one a line (MARS-evaluation)
  info/tracks_train_info.mat, info/tracks_test_info.mat   N x 4: start, end (1-based rows
      of the name list), pid, camera; when missing, tracklets come from the file names
  info/query_IDX.mat                        optional, not used (test = all labelled tracklets)
  mars_attributes.csv                       Chen et al.: id, camera, tracklet, then action,
      angle, occlusion, cut, multi-person, back-dominant, target-change, target-miss,
      wrong-target, upcolor, downcolor, age, up, down, bag, backpack, hat, handbag, hair,
      gender, btype (class indices from 0; header row optional)

Preprocessed (the VTFPAR++ code's release):
  attributes.csv              tracklet name (e.g. 0001C1T0001), then 43 0/1 columns in the
                              MARS order of vtfpar_jax/attributes.py (header row optional)
  train_tracklets.txt         tracklet names of the train split, one a line
  test_tracklets.txt          tracklet names of the test split
  frames/<tracklet name>/*.jpg
"""


def _pid(text: str) -> int:
    return -1 if text == "00-1" else int(text)


def _parse_frame(name: str) -> tuple[int, int, int] | None:
    match = _FRAME_NAME.match(name)
    if match is None:
        return None
    pid, camera, tracklet, _ = match.groups()
    return _pid(pid), int(camera), int(tracklet)


def _load_tracks(path: Path) -> np.ndarray:
    """(N, 4) int array of a tracks_*_info.mat: start, end (1-based), pid, camera."""
    arrays = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    if len(arrays) != 1:
        raise ValueError(f"{path}: expected one matrix, found {sorted(arrays)}")
    tracks = np.asarray(next(iter(arrays.values())))
    if tracks.ndim != 2 or tracks.shape[1] < 4:
        raise ValueError(f"{path}: expected an N x 4 matrix (start, end, pid, camera), "
                         f"found shape {tracks.shape}")
    return tracks[:, :4].astype(np.int64)


class MarsAttribute(manual_builder.ManualTrackletBuilder):
    """MARS video pedestrian attributes (43 labels per tracklet)."""

    ATTRIBUTE_SET = "mars"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    RAW_MARKERS = ("bbox_train", "bbox_test", "mars_attributes.csv")
    DESCRIPTION = "MARS tracklets with Chen et al.'s attribute labels."

    def _split_frames(self, root: Path, split: str) -> list[list[str]]:
        """Frame file names of each tracklet of a split, in frame order."""
        info = root / "info"
        list_path = info / f"{split}_name.txt"
        if list_path.exists():
            names = [n.strip() for n in list_path.read_text().splitlines() if n.strip()]
        else:
            names = sorted((p.name for p in (root / f"bbox_{split}").glob("*/*")
                            if _parse_frame(p.name)), key=manual_builder.natural_key)
        tracks_path = info / f"tracks_{split}_info.mat"
        if not tracks_path.exists():
            log.info("%s missing: grouping %d frames by file name", tracks_path, len(names))
            groups = collections.defaultdict(list)
            for line, name in enumerate(names, start=1):
                if _parse_frame(name) is None:
                    raise ValueError(f"{list_path}: line {line}: {name!r} is not a MARS frame "
                                     "name like 0001C1T0001F001.jpg")
                groups[name[:name.rindex("F")]].append(name)
            return [sorted(g, key=manual_builder.natural_key) for g in groups.values()]
        out = []
        for row, (start, end, _, _) in enumerate(_load_tracks(tracks_path), start=1):
            if not 1 <= start <= end <= len(names):
                raise ValueError(f"{tracks_path}: row {row}: frames {start}..{end} are outside "
                                 f"the {len(names)} names of {list_path}")
            out.append(names[start - 1:end])
        return out

    def _raw_tracklets(self, root: Path) -> dict[str, list[Tracklet]]:
        csv_path = root / "mars_attributes.csv"
        labels = label_csv.read_chen_csv(csv_path, MARS_CSV)
        out, seen = {}, set()
        for split in manual_builder.SPLITS:
            left_out = collections.Counter()
            tracklets, missing = [], []
            for frame_names in self._split_frames(root, split):
                ids = _parse_frame(frame_names[0])
                if ids is None:
                    raise ValueError(f"{split}: frame name {frame_names[0]!r} is not a MARS "
                                     "frame name like 0001C1T0001F001.jpg")
                if ids[0] in _JUNK_PIDS:
                    left_out["junk or distractor (pid 0/-1)"] += 1
                    continue
                if ids not in labels:
                    left_out[f"no row in {csv_path.name}"] += 1
                    continue
                folder = root / f"bbox_{split}" / frame_names[0][:4]
                if not folder.is_dir():
                    missing.append(str(folder))
                    continue
                seen.add(ids)
                tracklets.append(Tracklet(label_csv.tracklet_name(*ids), *ids, labels[ids],
                                          [folder / n for n in frame_names]))
            if missing:
                raise manual_builder.missing_error("image folders do not exist",
                                                   sorted(set(missing)))
            for reason, count in sorted(left_out.items()):
                log.info("%s split %s: %d tracklets left out: %s", self.name, split, count,
                         reason)
            out[split] = tracklets
        unseen = [f"id={p} camera={c} tracklet={t}" for p, c, t in labels if (p, c, t) not in seen]
        if unseen:
            raise manual_builder.missing_error(
                f"tracklets of {csv_path} have no images in bbox_train or bbox_test", unseen)
        return out
