"""Reading attribute CSVs: Chen et al.'s class-index files and the preprocessed 0/1 files.

Chen et al. ("A Temporal Attention Model for Video-Based Pedestrian
Attribute Recognition") label each tracklet, keyed by (pid, camera, tracklet),
with one class index (from 0) per attribute. `ChenLayout` says which CSV
column is which and how the columns make the label vector of an attribute set
of `vtfpar_jax.attributes`: binary columns are copied, multi-class columns
become one-hot groups, quality flags are dropped.

Every error names the file, the 1-based line and the column, because these
files are edited by hand and a bad cell should be found in seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re

import numpy as np

from vtfpar_jax import attributes

DROPPED = 0   # `classes` of a column that is read but not used (quality flags)
_TRACKLET_NAME = re.compile(r"^(-?\d+)_?C(\d+)_?T(\d+)$")


def tracklet_name(pid: int, camera: int, tracklet: int) -> str:
    """The name used for a tracklet in every layout, e.g. '0001C1T0003'."""
    return f"{pid:04d}C{camera}T{tracklet:04d}"


def parse_tracklet_name(name: str) -> tuple[int, int, int] | None:
    """(pid, camera, tracklet) from a name like '0001C1T0003' or '0001_C1_T0003'."""
    match = _TRACKLET_NAME.match(name)
    return None if match is None else tuple(int(g) for g in match.groups())


@dataclasses.dataclass(frozen=True)
class ChenLayout:
    """Columns of one of Chen et al.'s CSVs and how they map to an attribute set.

    Attributes:
      attribute_set: name in `vtfpar_jax.attributes`.
      columns: (name, classes) after the three id columns, in file order;
        classes 2 = a binary copied as is, > 2 = a one-hot group, DROPPED = unused.
      label_order: column names in the order of the label vector.
    """

    attribute_set: str
    columns: tuple[tuple[str, int], ...]
    label_order: tuple[str, ...]

    def __post_init__(self):
        classes = dict(self.columns)
        target = attributes.get(self.attribute_set)
        sizes = [classes[name] if classes[name] > 2 else 1 for name in self.label_order]
        if sizes != [len(g.columns) for g in target.groups]:
            raise ValueError(f"CSV layout for {self.attribute_set!r} gives group sizes {sizes}, "
                             f"the attribute set has {[len(g.columns) for g in target.groups]}")

    @property
    def num_columns(self) -> int:
        return 3 + len(self.columns)

    def labels(self, values: list[int]) -> np.ndarray:
        """(A,) uint8 label vector from the attribute cells (file order, validated)."""
        by_name = dict(zip((name for name, _ in self.columns), values, strict=True))
        classes = dict(self.columns)
        parts = []
        for name in self.label_order:
            if classes[name] > 2:
                parts.append(np.eye(classes[name], dtype=np.uint8)[by_name[name]])
            else:
                parts.append(np.array([by_name[name]], np.uint8))
        return np.concatenate(parts)


def _rows(path: str | os.PathLike) -> list[tuple[int, list[str]]]:
    """(line number, cells) of a CSV, without blank lines and without a header row.

    A first row whose first cell is not a number is taken as a header.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"attribute CSV {path} does not exist")
    rows = _csv_rows(path)
    if rows and not _is_number(rows[0][1][0]):
        rows = rows[1:]
    return rows


def _csv_rows(path: str | os.PathLike) -> list[tuple[int, list[str]]]:
    """(line number, stripped cells) of the non-blank rows of a UTF-8 CSV.

    'utf-8-sig' drops a byte-order mark, which would otherwise glue itself to
    the first cell and turn a data row into a "header".
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not UTF-8 text (byte {data[e.start]:#x}); "
                         "save the CSV as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    return [(n, [c.strip() for c in row]) for n, row in enumerate(reader, start=1)
            if any(c.strip() for c in row)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _integer(path, line: int, column: int, header: str, cell: str) -> int:
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or not value.is_integer():
        raise ValueError(f"{path}: line {line}, column {column} ({header}): {cell!r} is not "
                         "an integer")
    return int(value)


def read_chen_csv(path: str | os.PathLike,
                  layout: ChenLayout) -> dict[tuple[int, int, int], np.ndarray]:
    """{(pid, camera, tracklet): (A,) uint8 labels} from one of Chen et al.'s CSVs."""
    headers = ["id", "camera", "tracklet"] + [name for name, _ in layout.columns]
    labels = {}
    for line, cells in _rows(path):
        if len(cells) != layout.num_columns:
            raise ValueError(f"{path}: line {line} has {len(cells)} columns, expected "
                             f"{layout.num_columns} (id, camera, tracklet, "
                             f"{', '.join(headers[3:])})")
        values = [_integer(path, line, c + 1, headers[c], cell) for c, cell in enumerate(cells)]
        for c, (name, classes) in enumerate(layout.columns, start=3):
            if classes != DROPPED and not 0 <= values[c] < classes:
                raise ValueError(f"{path}: line {line}, column {c + 1} ({name}): class index "
                                 f"{values[c]} is out of range [0, {classes})")
        key = tuple(values[:3])
        if key in labels:
            raise ValueError(f"{path}: line {line}: tracklet (id, camera, tracklet) = {key} "
                             "appears twice")
        labels[key] = layout.labels(values[3:])
    return labels


def read_preprocessed_csv(path: str | os.PathLike, num_attributes: int) -> dict[str, np.ndarray]:
    """{tracklet name: (A,) uint8} from a CSV of a tracklet name then A 0/1 columns."""
    labels = {}
    rows = _csv_rows(path)
    # A header row is recognised by a non-0/1 cell where the first label goes.
    if rows and len(rows[0][1]) > 1 and rows[0][1][1] not in ("0", "1"):
        rows = rows[1:]
    for line, cells in rows:
        if len(cells) != num_attributes + 1:
            raise ValueError(f"{path}: line {line} has {len(cells)} columns, expected "
                             f"{num_attributes + 1} (tracklet name, then {num_attributes} "
                             "0/1 labels)")
        values = []
        for column, cell in enumerate(cells[1:], start=2):
            if cell not in ("0", "1"):
                raise ValueError(f"{path}: line {line}, column {column}: {cell!r} is not 0 or 1")
            values.append(int(cell))
        if cells[0] in labels:
            raise ValueError(f"{path}: line {line}: tracklet {cells[0]!r} appears twice")
        labels[cells[0]] = np.array(values, np.uint8)
    return labels
