"""`vtfpar street-bench`: its options checked before a street is drawn, and every
--person_px run with --model."""

from __future__ import annotations

import pytest

from vtfpar_jax.tools import street_bench, street_scene


def _refused(argv, capsys) -> str:
    """The one error line of street-bench's `main(argv)`, which must exit 2 (argparse's)."""
    with pytest.raises(SystemExit) as e:
        street_bench.main(argv)
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("args, fragment", [
    (["--size", "7x9"], "even sides, e.g. 8x10"),
    (["--size", "241x321"], "even sides, e.g. 242x322"),
    (["--size", "240"], "HEIGHTxWIDTH"),
    (["--size", "100x100"], "needs at least 128x192"),
    (["--person_px", "48", "1000"], "1000 px tall"),
    (["--frames", "0"], "--frames"),
    (["--detect_every", "1", "0"], "--detect_every"),
    (["--person_px", "0"], "--person_px"),
    (["--people_per_lane", "0"], "--people_per_lane"),
    (["--score_threshold", "2"], "--score_threshold"),
])
def test_bad_values_are_refused_before_drawing(args, fragment, capsys, monkeypatch):
    def no_drawing(*args, **kwargs):
        raise AssertionError("a scene was drawn before the options were checked")
    monkeypatch.setattr(street_scene, "walking_scene", no_drawing)
    line = _refused(args, capsys)
    assert fragment in line, line


@pytest.mark.slow
def test_with_a_model_every_person_size_runs(demo_model, capsys):
    """Each size's track run gets its own output folder (the second size's run once found
    the first one's folder and was refused)."""
    rows = street_bench.main(["--size", "240x320", "--person_px", "48", "64", "--frames", "4",
                              "--detect_every", "2", "--model", str(demo_model["model"])])
    assert [(row["person_px"], row["detect_every"]) for row in rows] == [(48, 2), (64, 2)]
    out = capsys.readouterr().out
    assert out.count("track(s): ") == 2, out[-3000:]
