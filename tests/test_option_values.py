"""Bad option values are refused by argparse before any work: one `error:` line naming the
option, exit status 2 (vtfpar_jax.errors' argparse types and the commands that use it)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from smoke_runs import REPO, subprocess_env

from vtfpar_jax import errors


@pytest.mark.parametrize("text, value", [("1", 1), ("30", 30)])
def test_positive_int_accepts(text, value):
    assert errors.positive_int(text) == value


@pytest.mark.parametrize("text, value", [("0", 0.0), ("0.45", 0.45), ("1", 1.0)])
def test_probability_accepts(text, value):
    assert errors.probability(text) == value


@pytest.mark.parametrize("text, size", [("1080x1920", (1080, 1920)), ("7X9", (7, 9))])
def test_frame_size_is_height_then_width(text, size):
    assert errors.frame_size(text) == size


@pytest.mark.parametrize("check, texts, says", [
    (errors.positive_int, ["0", "-3", "2.5", "x", ""], "positive integer"),
    (errors.probability, ["2", "-1", "1.0001", "nan", "inf", "half"], "from 0 to 1"),
    (errors.frame_size, ["1080", "0x320", "240x-2", "axb", "240x320x3", ""], "HEIGHTxWIDTH"),
], ids=["positive_int", "probability", "frame_size"])
def test_bad_values_are_refused_naming_what_is_expected(check, texts, says):
    for text in texts:
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            check(text)


def _refused(main, argv, capsys) -> str:
    """The one error line of `main(argv)`, which must exit 2 (argparse's status)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("value", ["2", "-1"])
def test_predict_threshold_outside_0_1_is_refused(value, tmp_path, capsys):
    from vtfpar_jax.inference import predict
    # A model and an input that do not exist: the option is refused before they are read.
    line = _refused(predict.main, ["--model", str(tmp_path / "model"), "--threshold", value,
                                   "--out", str(tmp_path / "out"), str(tmp_path / "clip.mp4")],
                    capsys)
    assert "--threshold" in line and value in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--threshold", "--score_threshold"])
def test_track_thresholds_outside_0_1_are_refused(flag, tmp_path, capsys):
    from vtfpar_jax.inference import track_attributes
    line = _refused(track_attributes.main, [str(tmp_path / "street.mp4"), "--model",
                                            str(tmp_path / "model"), flag, "1.5"], capsys)
    assert flag in line


@pytest.mark.parametrize("flag, value", [("--score_threshold", "1.5"), ("--min_person_px", "0")])
def test_detect_checks_its_detector_options_as_track_does(flag, value, tmp_path, capsys):
    from vtfpar_jax.inference import detect_frames
    line = _refused(detect_frames.main, [str(tmp_path / "street.mp4"), "--frames", "1", flag,
                                         value, "--out", str(tmp_path / "out")], capsys)
    assert flag in line and value in line
    assert not (tmp_path / "out").exists()


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vtfpar_jax", "train", *args], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, missing", [([], "--config and --workdir"),
                                           (["--workdir", "runs/x"], "--config")])
def test_train_without_config_or_workdir_is_one_line_and_usage(args, missing):
    done = _train(*args)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == f"error: {missing} must be given", done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert any(line.startswith("usage: vtfpar train --config") for line in lines)


def test_train_help_lists_what_a_run_needs():
    done = _train("--help")
    assert done.returncode == 0, done.stderr[-3000:]
    for form in ("--config FILE[:ARG]", "--config.FIELD=VALUE", "--workdir DIR",
                 "--allow_config_change", "--verbose"):
        assert form in done.stdout, done.stdout
