"""Quiet by default: `vtfpar train`, `evaluate` and `predict`, run as a user runs them (no
TF_CPP_MIN_LOG_LEVEL, no --verbose), print only their own lines: no TensorFlow C++ notice
(oneDNN), no absl, Orbax, TFDS or JAX INFO line, no tf.data cache warning."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from smoke_runs import REPO, SMOKE, subprocess_env

from input_pipeline import tf_notices

# What train logs itself (vtfpar_jax loggers), under absl's handler that `app.run` installs:
# "I1207 12:28:47.089756 139812020063104 train.py:208] no checkpoint in ...".
OWN_LOG = re.compile(r"[IW]\d{4} [\d:.]+ +\d+ (train|run_logging|sharding)\.py:\d+\] ")
SUMMARY = re.compile(r"group \(published, [\d.]+\): acc ")


def _user_env() -> dict[str, str]:
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    return env


def _vtfpar(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vtfpar_jax", *map(str, args)], cwd=REPO,
                          env=_user_env(), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _clip(folder):
    from input_pipeline import synthetic_figures
    folder.mkdir()
    _, jpegs = synthetic_figures.draw_tracklet(np.random.default_rng(0), (128, 64), 6)
    for i, data in enumerate(jpegs):
        (folder / f"{i:03d}.jpg").write_bytes(data)
    return folder


@pytest.mark.slow
def test_train_evaluate_predict_print_only_their_own_lines(data_dir, tmp_path):
    workdir = tmp_path / "run"
    train = _vtfpar("train", "--config", SMOKE, "--workdir", workdir,
                    f"--config.data_dir={data_dir}", "--config.max_steps=2",
                    "--config.log_every_steps=1")
    foreign = [line for line in train.stderr.splitlines() if not OWN_LOG.match(line)]
    assert not foreign, train.stderr[-3000:]
    assert len(re.findall(r"run_logging\.py:\d+\] step \d", train.stderr)) == 2, train.stderr
    assert SUMMARY.search(train.stdout), train.stdout

    evaluate = _vtfpar("evaluate", "--model", workdir, "--data_dir", data_dir,
                       "--out", tmp_path / "eval", "--no-progress")
    assert evaluate.stderr == "", evaluate.stderr[-3000:]
    assert SUMMARY.search(evaluate.stdout), evaluate.stdout

    predict = _vtfpar("predict", "--model", workdir, "--out", tmp_path / "predictions",
                      _clip(tmp_path / "walker"))
    assert predict.stderr == "", predict.stderr[-3000:]
    assert (tmp_path / "predictions" / "walker.json").exists()


@pytest.mark.parametrize("line, notice", [
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
     True),
    ("I0000 00:00:1796646439.002202   27856 port.cc:153] oneDNN custom operations are on.",
     True),
    ("I1207 12:26:40.730112 139921318869888 cpu_feature_guard.cc:227] This TensorFlow binary",
     True),
    ("To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
     "with the appropriate compiler flags.", True),
    ("E0000 00:00:1796671287.789185   18924 cuda_platform.cc:52] failed call to cuInit: "
     "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)", True),
    ("W0000 00:00:1796646528.574313   28670 some_op.cc:912] a warning", False),
    ("E0000 00:00:1796646528.574313   28670 some_op.cc:912] an error", False),
    ("Traceback (most recent call last):", False),
])
def test_only_tensorflow_info_notices_are_dropped(line, notice):
    assert tf_notices.is_notice(line) == notice


def test_tensorflow_imports_and_leaves_the_gpus_without_notices_but_keeps_other_output():
    code = ("import sys\n"
            "from input_pipeline import tf_notices\n"
            "tf_notices.drop_import_notices()\n"
            "import tensorflow_datasets\n"
            "from input_pipeline import tf_devices\n"
            "tf_devices.hide_gpus_from_tensorflow()\n"
            "print('after the import', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_user_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "after the import\n", done.stderr[-3000:]

