"""Property-based tests of the attribute CSV and frame-list parsers (MARS, DukeMTMC-VID).

Whatever a hand-edited file holds (malformed rows, missing or extra columns, odd
encodings, a BOM, nothing at all), a parser either returns labels or raises a
ValueError whose message names the file and the line: never another exception type,
never a silently dropped row.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from input_pipeline import duke, label_csv, mars

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
LAYOUTS = {"mars": mars.MARS_CSV, "duke": duke.DUKE_CSV}


def write(data: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix=".csv")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def call(parse, data: bytes):
    """parse(path) on a file holding `data`: the result, or the ValueError it raised."""
    path = write(data)
    try:
        return path, parse(path)
    except ValueError as e:   # any other type fails the test
        return path, e
    finally:
        os.remove(path)


def assert_clear(path, error):
    message = str(error)
    assert path in message, f"the error does not name the file: {message!r}"
    assert "line" in message, f"the error does not name the line: {message!r}"


# ------------------------------------------------------------------ generators


def valid_row(layout, draw) -> list[str]:
    cells = [str(draw(st.integers(-1, 9999))), str(draw(st.integers(1, 8))),
             str(draw(st.integers(0, 9999)))]
    cells += [str(draw(st.integers(0, max(c, 2) - 1))) for _, c in layout.columns]
    return cells


@st.composite
def chen_files(draw, layout):
    """(bytes, expected labels or None): a valid CSV, possibly broken by one mutation."""
    rows, seen = [], set()
    for _ in range(draw(st.integers(0, 5))):
        row = valid_row(layout, draw)
        key = tuple(int(c) for c in row[:3])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    expected = {tuple(int(c) for c in r[:3]): layout.labels([int(c) for c in r[3:]])
                for r in rows}
    mutation = draw(st.sampled_from(["none", "drop_cell", "extra_cell", "junk_cell",
                                     "float_cell", "blank_lines"]))
    if rows and mutation != "none":
        i = draw(st.integers(0, len(rows) - 1))
        j = draw(st.integers(0, len(rows[i]) - 1))
        if mutation == "drop_cell":
            del rows[i][j]
        elif mutation == "extra_cell":
            rows[i].insert(j, str(draw(st.integers(0, 1))))
        elif mutation == "junk_cell":
            rows[i][j] = draw(st.text(st.characters(blacklist_categories=["Cs"],
                                                    blacklist_characters="\x00,\"\r\n"),
                                      max_size=6))
        elif mutation == "float_cell":
            rows[i][j] = draw(st.sampled_from(["0.5", "nan", "inf", "-inf", "1e400", "1.0"]))
        expected = None if mutation != "blank_lines" else expected
    header = draw(st.booleans())
    lines = ([",".join(["id", "camera", "tracklet"] + [n for n, _ in layout.columns])]
             if header else [])
    for r in rows:
        lines.append(",".join(r))
        if mutation == "blank_lines":
            lines.append(",,")
    text = "\n".join(lines) + ("\n" if draw(st.booleans()) else "")
    return text.encode(), expected


# ------------------------------------------------------------------ Chen CSVs


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@SETTINGS
@given(data=st.data())
def test_chen_csv_parses_or_names_line(name, data):
    layout = LAYOUTS[name]
    content, expected = data.draw(chen_files(layout))
    path, result = call(lambda p: label_csv.read_chen_csv(p, layout), content)
    if isinstance(result, ValueError):
        assert expected is None, f"a valid file was refused: {result}"
        assert_clear(path, result)
    else:
        if expected is not None:
            assert set(result) == set(expected)
            for k, v in expected.items():
                np.testing.assert_array_equal(result[k], v)
        for v in result.values():
            assert v.dtype == np.uint8 and set(np.unique(v)) <= {0, 1}


@SETTINGS
@given(content=st.binary(max_size=300))
def test_chen_csv_arbitrary_bytes_never_crash_otherwise(content):
    path, result = call(lambda p: label_csv.read_chen_csv(p, mars.MARS_CSV), content)
    if isinstance(result, ValueError) and not isinstance(result, UnicodeDecodeError):
        assert_clear(path, result)


def test_empty_files_give_no_labels():
    assert call(lambda p: label_csv.read_chen_csv(p, mars.MARS_CSV), b"")[1] == {}
    assert call(lambda p: label_csv.read_preprocessed_csv(p, 3), b"")[1] == {}
    assert call(lambda p: label_csv.read_chen_csv(p, mars.MARS_CSV), b"\n\n , \n")[1] == {}


def test_latin1_bytes_name_the_file():
    row = "id,camera,tracklet,caf\xe9\n".encode("latin-1")
    path, result = call(lambda p: label_csv.read_chen_csv(p, mars.MARS_CSV), row)
    assert isinstance(result, ValueError)
    assert_clear(path, result)


def test_bom_does_not_drop_the_first_row():
    layout = mars.MARS_CSV
    row = ",".join(["1", "2", "3"] + ["0"] * len(layout.columns))
    path, result = call(lambda p: label_csv.read_chen_csv(p, layout),
                        b"\xef\xbb\xbf" + row.encode() + b"\n")
    assert not isinstance(result, Exception), result
    assert set(result) == {(1, 2, 3)}


def test_bom_before_a_header_is_harmless():
    layout = mars.MARS_CSV
    header = ",".join(["id", "camera", "tracklet"] + [n for n, _ in layout.columns])
    row = ",".join(["1", "2", "3"] + ["0"] * len(layout.columns))
    _, result = call(lambda p: label_csv.read_chen_csv(p, layout),
                     b"\xef\xbb\xbf" + f"{header}\n{row}\n".encode())
    assert set(result) == {(1, 2, 3)}


# ------------------------------------------------------------- preprocessed 0/1 CSVs


@st.composite
def preprocessed_files(draw):
    n = draw(st.integers(1, 5))
    names = draw(st.lists(st.from_regex(r"\A[0-9]{4}C[1-8]T[0-9]{4}\Z"), max_size=5,
                          unique=True))
    rows = [[name] + [draw(st.sampled_from("01")) for _ in range(n)] for name in names]
    expected = {r[0]: np.array([int(c) for c in r[1:]], np.uint8) for r in rows}
    mutation = draw(st.sampled_from(["none", "drop_cell", "extra_cell", "junk_cell"]))
    if rows and mutation != "none":
        i = draw(st.integers(0, len(rows) - 1))
        j = draw(st.integers(1, n))
        if mutation == "drop_cell":
            del rows[i][j]
        elif mutation == "extra_cell":
            rows[i].insert(j, draw(st.sampled_from("01")))
        else:
            rows[i][j] = draw(st.sampled_from(["2", "-1", "x", "", "0.0", "1 1", "yes"]))
        expected = None
    header = ["name"] + [f"a{k}" for k in range(n)] if draw(st.booleans()) else None
    lines = [",".join(r) for r in ([header] if header else []) + rows]
    return n, "\n".join(lines).encode(), expected


@SETTINGS
@given(case=preprocessed_files())
def test_preprocessed_csv_parses_or_names_line(case):
    n, content, expected = case
    path, result = call(lambda p: label_csv.read_preprocessed_csv(p, n), content)
    if isinstance(result, ValueError):
        assert expected is None, f"a valid file was refused: {result}"
        assert_clear(path, result)
    elif expected is not None:
        assert set(result) == set(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(result[k], v)


@SETTINGS
@given(content=st.binary(max_size=300), n=st.integers(1, 4))
def test_preprocessed_csv_arbitrary_bytes_never_crash_otherwise(content, n):
    path, result = call(lambda p: label_csv.read_preprocessed_csv(p, n), content)
    if isinstance(result, ValueError) and not isinstance(result, UnicodeDecodeError):
        assert_clear(path, result)


# ------------------------------------------------------------- names and frame lists


@SETTINGS
@given(name=st.text(max_size=20) | st.from_regex(r"\A-?[0-9]{1,5}_?C[0-9]{1,2}_?T[0-9]{1,5}\Z"))
def test_tracklet_names_parse_or_give_none(name):
    parsed = label_csv.parse_tracklet_name(name)
    if parsed is not None:
        pid, camera, tracklet = parsed
        assert label_csv.parse_tracklet_name(label_csv.tracklet_name(pid, camera, tracklet)) \
            == (pid, camera, tracklet)


@SETTINGS
@given(names=st.lists(st.from_regex(r"\A[0-9]{4}C[1-6]T[0-9]{4}F[0-9]{3}\.jpg\Z")
                      | st.text(st.characters(blacklist_categories=["Cs"],
                                              blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e"
                                              "\x85\u2028\u2029"), max_size=12),
                      max_size=6))
def test_mars_frame_list_groups_or_names_line(names):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "info").mkdir()
        (root / "info" / "train_name.txt").write_text("\n".join(names), encoding="utf-8")
        try:
            groups = mars.MarsAttribute._split_frames(None, root, "train")
        except ValueError as e:
            assert "train_name.txt" in str(e) and "line" in str(e), str(e)
            assert any(n.strip() and mars._parse_frame(n.strip()) is None for n in names)
            return
    listed = sorted(n.strip() for n in names if n.strip())
    assert sorted(f for g in groups for f in g) == listed
    for g in groups:
        assert len({f[:f.rindex("F")] for f in g}) == 1
