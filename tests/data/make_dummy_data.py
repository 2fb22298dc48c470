"""Writes tiny manual dirs for the MARS and Duke builders, in both layouts.

    python tests/data/make_dummy_data.py OUT_DIR

or `make_dummy_data(root)` from a test. Four dirs are written under root:
`mars_raw`, `mars_preprocessed`, `duke_raw`, `duke_preprocessed`. The raw
and preprocessed dirs of a dataset hold the SAME tracklets with the SAME
JPEG bytes; the preprocessed labels are written out here from the class
indices with the column order spelled out by hand (not with the builders'
code), so that a test comparing the two layouts checks the builders'
conversion against an independent one.

Nothing here is committed as binary: the tests generate into tmp dirs.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

FRAME_SIZE = (16, 8)   # H, W

# MARS: (split, pid, camera, tracklet, frames, labelled). pid -1 is junk ('00-1'),
# pid 0 a distractor; the unlabelled tracklet has no CSV row.
MARS_TRACKLETS = [
    ("train", 1, 1, 1, 3, True), ("train", 1, 2, 2, 5, True), ("train", 2, 1, 1, 2, True),
    ("train", 3, 4, 1, 2, False),
    ("test", 5, 1, 1, 4, True), ("test", 6, 3, 2, 3, True),
    ("test", -1, 1, 1, 2, False), ("test", 0, 2, 1, 2, False),
]
# Duke: (folder, pid, camera, tracklet, frames, labelled); the query tracklet is
# repeated in the gallery and counts once in test.
DUKE_TRACKLETS = [
    ("train", 1, 1, 1, 3, True), ("train", 1, 2, 2, 4, True), ("train", 2, 5, 1, 2, True),
    ("train", 3, 6, 1, 2, False),
    ("query", 5, 1, 1, 3, True), ("gallery", 5, 1, 1, 3, True), ("gallery", 6, 3, 4, 2, True),
]
MARS_CLASSES = {"action": 5, "angle": 6, "upcolor": 9, "downcolor": 10, "age": 4}
DUKE_CLASSES = {"action": 5, "angle": 6, "downcolor": 8, "topcolor": 9}
MARS_BINARIES = ["up", "down", "bag", "backpack", "hat", "handbag", "hair", "gender", "btype"]
DUKE_BINARIES = ["backpack", "shoulder bag", "handbag", "boots", "gender", "hat", "shoes", "top"]
QUALITY_FLAGS = 7


def _jpeg(rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _one_hot(index: int, size: int) -> list[int]:
    return [int(i == index) for i in range(size)]


def _name(pid: int, camera: int, tracklet: int) -> str:
    return f"{pid:04d}C{camera}T{tracklet:04d}"


def _mars_row(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(Chen CSV attribute cells, 43 labels in MARS order) of one tracklet."""
    c = {k: int(rng.integers(0, n)) for k, n in MARS_CLASSES.items()}
    b = {k: int(rng.integers(0, 2)) for k in MARS_BINARIES}
    cells = ([c["action"], c["angle"]] + [int(rng.integers(0, 2)) for _ in range(QUALITY_FLAGS)]
             + [c["upcolor"], c["downcolor"], c["age"]] + [b[k] for k in MARS_BINARIES])
    labels = ([b[k] for k in MARS_BINARIES] + _one_hot(c["angle"], 6) + _one_hot(c["action"], 5)
              + _one_hot(c["upcolor"], 9) + _one_hot(c["downcolor"], 10) + _one_hot(c["age"], 4))
    return cells, labels


def _duke_row(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(Chen CSV attribute cells, 36 labels in DUKE order) of one tracklet."""
    c = {k: int(rng.integers(0, n)) for k, n in DUKE_CLASSES.items()}
    b = {k: int(rng.integers(0, 2)) for k in DUKE_BINARIES}
    cells = ([c["action"], c["angle"]] + [int(rng.integers(0, 2)) for _ in range(QUALITY_FLAGS)]
             + [b[k] for k in DUKE_BINARIES] + [c["downcolor"], c["topcolor"]])
    labels = ([b[k] for k in DUKE_BINARIES] + _one_hot(c["angle"], 6) + _one_hot(c["action"], 5)
              + _one_hot(c["topcolor"], 9) + _one_hot(c["downcolor"], 8))
    return cells, labels


def _write_csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def _write_preprocessed(root: Path, frames: dict[str, list[bytes]], labels: dict[str, list[int]],
                        splits: dict[str, list[str]]) -> None:
    root.mkdir(parents=True)
    # No header here, a header in the raw CSVs: both forms get exercised.
    _write_csv(root / "attributes.csv", None, [[name, *labels[name]] for name in labels])
    for split, names in splits.items():
        (root / f"{split}_tracklets.txt").write_text("".join(f"{n}\n" for n in names))
    for name in labels:
        folder = root / "frames" / name
        folder.mkdir(parents=True)
        for t, data in enumerate(frames[name], start=1):
            (folder / f"{name}F{t:03d}.jpg").write_bytes(data)


def _mars(root: Path, rng: np.random.Generator) -> dict:
    raw = root / "mars_raw"
    (raw / "info").mkdir(parents=True)
    frames, labels, splits, rows = {}, {}, {"train": [], "test": []}, []
    names = {"train": [], "test": []}
    tracks = {"train": [], "test": []}
    for split, pid, camera, tracklet, count, labelled in MARS_TRACKLETS:
        pid_text = "00-1" if pid == -1 else f"{pid:04d}"
        folder = raw / f"bbox_{split}" / pid_text
        folder.mkdir(parents=True, exist_ok=True)
        data = [_jpeg(rng) for _ in range(count)]
        start = len(names[split]) + 1
        for t, jpeg in enumerate(data, start=1):
            file_name = f"{pid_text}C{camera}T{tracklet:04d}F{t:03d}.jpg"
            (folder / file_name).write_bytes(jpeg)
            names[split].append(file_name)
        tracks[split].append([start, start + count - 1, pid, camera])
        if labelled:
            cells, vector = _mars_row(rng)
            rows.append([pid, camera, tracklet, *cells])
            name = _name(pid, camera, tracklet)
            frames[name], labels[name] = data, vector
            splits[split].append(name)
    for split in ("train", "test"):
        (raw / "info" / f"{split}_name.txt").write_text("".join(f"{n}\n" for n in names[split]))
        scipy.io.savemat(raw / "info" / f"tracks_{split}_info.mat",
                         {f"track_{split}_info": np.array(tracks[split], np.float64)})
    scipy.io.savemat(raw / "info" / "query_IDX.mat", {"query_IDX": np.array([[1]])})
    header = (["id", "camera", "tracklet", "action", "angle"]
              + [f"flag{i}" for i in range(QUALITY_FLAGS)]
              + ["upcolor", "downcolor", "age"] + MARS_BINARIES)
    _write_csv(raw / "mars_attributes.csv", header, rows)
    _write_preprocessed(root / "mars_preprocessed", frames, labels, splits)
    return {"raw": raw, "preprocessed": root / "mars_preprocessed", "labels": labels,
            "splits": splits, "frames": frames}


def _duke(root: Path, rng: np.random.Generator) -> dict:
    raw = root / "duke_raw"
    frames, labels, splits, rows = {}, {}, {"train": [], "test": []}, []
    for folder_name, pid, camera, tracklet, count, labelled in DUKE_TRACKLETS:
        name = _name(pid, camera, tracklet)
        folder = raw / folder_name / f"{pid:04d}" / f"{tracklet:04d}"
        folder.mkdir(parents=True)
        data = frames.get(name) or [_jpeg(rng) for _ in range(count)]
        for t, jpeg in enumerate(data, start=1):
            (folder / f"{pid:04d}_C{camera}_F{t:04d}_X{t:05d}.jpg").write_bytes(jpeg)
        split = "train" if folder_name == "train" else "test"
        if labelled and name not in labels:
            cells, vector = _duke_row(rng)
            rows.append([pid, camera, tracklet, *cells])
            frames[name], labels[name] = data, vector
            splits[split].append(name)
    _write_csv(raw / "duke_attributes.csv",
               ["id", "cam_id", "tracklet_id", "action", "angle"]
               + [f"flag{i}" for i in range(QUALITY_FLAGS)] + DUKE_BINARIES
               + ["downcolor", "topcolor"], rows)
    _write_preprocessed(root / "duke_preprocessed", frames, labels, splits)
    return {"raw": raw, "preprocessed": root / "duke_preprocessed", "labels": labels,
            "splits": splits, "frames": frames}


def make_dummy_data(root: str | Path) -> dict[str, dict]:
    """Writes the four manual dirs under `root`; returns what a test needs to check them.

    Returns:
      {'mars': info, 'duke': info}, info = {'raw': Path, 'preprocessed': Path,
      'labels': {tracklet name: list of 0/1}, 'splits': {split: [names]},
      'frames': {tracklet name: [JPEG bytes]}}.
    """
    root = Path(root)
    rng = np.random.default_rng(0)
    return {"mars": _mars(root, rng), "duke": _duke(root, rng)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_dummy_data.py OUT_DIR")
    written = make_dummy_data(sys.argv[1])
    for dataset, info in written.items():
        sys.stdout.write(f"{dataset}: {info['raw']} and {info['preprocessed']}, "
                         f"{len(info['labels'])} labelled tracklets\n")
