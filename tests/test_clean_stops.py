"""Every command stops cleanly: a stop signal is never lost, a second one lets cleanup finish,
every command ends through cli_errors.run, and a full disk is one line."""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import json
import os
import signal
import subprocess
import sys
import time
import weakref

import pytest
from smoke_runs import REPO, subprocess_env

from vtfpar_jax import cli, cli_errors
from vtfpar_jax.errors import UserError
from vtfpar_jax.outputs import files, stop_signals


@pytest.fixture
def sigint_raises():
    """SIGINT as a terminal hands it (a suite run in the background starts with it ignored)."""
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, outer)


def _wait_for_the_stop(seconds: float = 10.0) -> None:
    """Python code running until a stop comes: it must come well before `seconds`. If it
    does not, SystemExit: no error that `run` could take for the stop's own."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    raise SystemExit(f"no stop reached the body in {seconds} s")


def _stopped(body, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        cli_errors.run(body)
    return exit_.value.code, capsys.readouterr().err


# --- a stop signal is never lost ---------------------------------------------------------

@pytest.mark.parametrize("signum,status,word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl_c", "sigterm"])
def test_a_stop_that_comes_inside_a_gc_callback_still_stops(
        capsys, sigint_raises, signum, status, word):
    """CPython discards an exception raised in a gc callback (JAX's `_xla_gc_callback`): 11
    of 32 interrupted runs finished as if no Ctrl-C had come."""
    sent = []

    def callback(phase, info):   # a stop signal whose handler runs inside the callback
        if phase == "start" and not sent:
            sent.append(phase)
            os.kill(os.getpid(), signum)

    def body():
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
        _wait_for_the_stop()

    code, err = _stopped(body, capsys)
    assert sent
    assert code == status
    assert err.strip() == f"{word}: nothing was written; rerun the same command"


def test_a_stop_dropped_as_unraisable_is_sent_again_and_not_reported(capsys, sigint_raises):
    """A weakref callback is another place whose exceptions CPython reports and drops."""
    class Thing:
        pass

    def body():
        thing = Thing()
        ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGINT))
        del thing
        assert ref() is None   # the callback ran, and its KeyboardInterrupt was dropped
        _wait_for_the_stop()

    code, err = _stopped(body, capsys)
    assert code == 130
    assert err.strip() == "interrupted: nothing was written; rerun the same command"


def test_a_stop_a_library_swallowed_is_sent_again(capsys, sigint_raises):
    def body():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass   # a library that catches everything
        _wait_for_the_stop()

    code, err = _stopped(body, capsys)
    assert code == 130
    assert err.strip() == "interrupted: nothing was written; rerun the same command"


def test_a_second_ctrl_c_lets_the_cleanup_finish(capsys, sigint_raises):
    """A second Ctrl-C used to cut short Orbax's wait for a checkpoint being written."""
    cleaned = []

    def body():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGINT)   # the impatient user, during the cleanup
            time.sleep(0.2)
            cleaned.append("checkpoint written")

    code, err = _stopped(body, capsys)
    assert code == 130 and cleaned == ["checkpoint written"]
    assert err.strip() == "interrupted: nothing was written; rerun the same command"


def test_an_error_after_a_delivered_stop_is_not_relabelled(capsys, sigint_raises):
    """Only an error on the way out of an undelivered stop is that stop."""
    code, _ = _stopped(lambda: os.kill(os.getpid(), signal.SIGINT), capsys)
    assert code == 130
    assert stop_signals.stop_came() is None

    def fails():
        raise AttributeError("a bug")
    with pytest.raises(AttributeError, match="a bug"):
        cli_errors.run(fails)


def test_the_stop_line_is_asked_at_the_stop(capsys):
    written = []

    def body():
        stop_signals.on_stop(lambda: f"{len(written)} cells are kept")
        written.append("cell")
        raise KeyboardInterrupt
    code, err = _stopped(body, capsys)
    assert code == 130 and err.strip() == "interrupted: 1 cells are kept"


# --- the process after a stop ------------------------------------------------------------

# `python -m vtfpar_jax` whose command starts a non-daemon thread (as Orbax's async_save),
# then ends with `status` as cli_errors.run ends it after a stop.
WRITES_AFTER_STOP = """
import sys, threading, time
from vtfpar_jax import cli

def save():
    time.sleep(0.5)
    open(sys.argv[1], "w").write("complete")

def command():
    threading.Thread(target=save, name="async_save").start()
    sys.exit(130)

cli.main = command
cli.entry()
"""


def test_the_process_ends_only_once_a_non_daemon_writer_has(tmp_path):
    path = tmp_path / "checkpoint"
    ended = subprocess.run([sys.executable, "-c", WRITES_AFTER_STOP, str(path)], cwd=REPO,
                           env=subprocess_env(), capture_output=True, text=True)
    assert ended.returncode == 130, ended.stderr
    assert path.read_text() == "complete"


# A Ctrl-C while a command's modules are still imported, before its `run` has started.
CTRL_C_WHILE_IMPORTING = (
    "import os, signal, sys; from vtfpar_jax import cli; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "cli.main = lambda: os.kill(os.getpid(), signal.SIGINT) or __import__('time').sleep(30); "
    "cli.entry()")


def test_a_ctrl_c_before_the_command_runs_is_one_line():
    """One run died during an import, before the handler was installed: a traceback, -2."""
    ended = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING], cwd=REPO,
                           env=subprocess_env(), capture_output=True, text=True)
    assert ended.returncode == 130, ended.stderr
    assert ended.stderr.strip() == "interrupted: nothing was written; rerun the same command"


# --- every command ends through cli_errors.run ----------------------------------------------

# The fewest arguments each command's parser accepts; a new command needs its line here.
ARGUMENTS = {
    "demo": [],
    "train": ["--config", os.path.join(REPO, "configs/demo.py:smoke"), "--workdir", "W"],
    "evaluate": ["--model", "M"],
    "predict": ["--model", "M", "clip.mp4"],
    "track": ["--model", "M", "street.mp4"],
    "detect": ["street.mp4", "--frames", "1"],
    "robustness": ["--model", "M"],
    "ablate": ["--config", os.path.join(REPO, "configs/demo.py:smoke"), "--sweep", "seed=0,1",
               "--workdir", "W"],
    "export": ["--model", "M", "--format", "onnx", "--out", "O"],
    "convert": ["--checkpoint", "C", "--clip", "ViT-B-16.pt", "--dataset", "mars",
                "--out", "O"],
    "to-openpar": ["--model", "M", "--out", "O.pth"],
    "push-to-hub": ["M", "--local", "L"],
    "compare-pytorch": ["--openpar", "OpenPAR"],
    "bench": [],
    "street-bench": [],
    "param-count": [],
}


def _raise_user_error():
    raise UserError("bad input\nthe details")


def _sigint():
    os.kill(os.getpid(), signal.SIGINT)
    _wait_for_the_stop()


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for_the_stop()


def _disk_full():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "OUT/results.json")


ENDINGS = {"user_error": (_raise_user_error, 1, "error: bad input"),
           "ctrl_c": (_sigint, 130, "interrupted: nothing was written; rerun the same command"),
           "sigterm": (_sigterm, 143, "terminated: nothing was written; rerun the same command"),
           "disk_full": (_disk_full, 1, "error: OUT/results.json: No space left on device")}


def test_every_command_is_listed_here():
    assert sorted(ARGUMENTS) == sorted(cli.COMMANDS)


def endings(name: str) -> dict[str, tuple[int, str]]:
    """{ending: (exit status, stderr)} of `vtfpar NAME`, its body swapped for each ending."""
    seen = {}
    real_run = cli_errors.run

    def run_each_ending(body, verbose=False):
        assert callable(body)
        for ending, (ends, _, _) in ENDINGS.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    real_run(ends, verbose)
                except SystemExit as e:
                    seen[ending] = (e.code, err.getvalue().strip())

    cli_errors.run = run_each_ending
    try:
        with contextlib.suppress(SystemExit):   # absl's app.run exits after its main
            cli.main([name, *ARGUMENTS[name]])
    finally:
        cli_errors.run = real_run
    return seen


# train's absl flags are defined once a process (tests/test_docs.py may have done it).
IN_A_FRESH_PROCESS = ("import json, sys; sys.path.insert(0, 'tests'); "
                      "from test_clean_stops import endings; "
                      "print(json.dumps(endings(sys.argv[1])))")


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_ends_through_run(name, sigint_raises):
    """Each command's main, with its own body swapped for one that ends each way."""
    if name == "train":
        done = subprocess.run([sys.executable, "-c", IN_A_FRESH_PROCESS, name], cwd=REPO,
                              env=subprocess_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = {k: tuple(v) for k, v in json.loads(done.stdout.splitlines()[-1]).items()}
    else:
        seen = endings(name)
    for ending, (_, status, line) in ENDINGS.items():
        assert ending in seen, f"vtfpar {name} does not end through cli_errors.run"
        code, err = seen[ending]
        assert code == status, (ending, err)
        assert len(err.splitlines()) == 1 and err.startswith(line), (ending, err)


# --- a full disk --------------------------------------------------------------------------

def test_a_full_disk_is_one_line_naming_the_file_and_the_free_space(tmp_path, monkeypatch,
                                                                     capsys):
    """Injected: a write that fails ENOSPC halfway leaves the earlier file as it was."""
    path = tmp_path / "out" / "results.json"
    files.write_json(str(path), {"earlier": True})
    earlier = path.read_bytes()
    real_open = open

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            self.file.write(text[:3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "open", lambda name, mode="r": FullDisk(real_open(name, mode)),
                        raising=False)

    def body():
        stop_signals.on_stop(f"the earlier results are kept in {path.parent}")
        files.write_json(str(path), {"earlier": False})

    code, err = _stopped(body, capsys)
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {path}: No space left on device (")
    assert f"free on {path.parent})" in line
    assert line.endswith(f"; the earlier results are kept in {path.parent}")
    assert path.read_bytes() == earlier
    assert os.listdir(path.parent) == ["results.json"]


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
def test_no_space_names_the_nearest_existing_folder(tmp_path, number):
    e = OSError(number, os.strerror(number), str(tmp_path / "not" / "yet" / "made.json"))
    line = cli_errors.no_space_line(e)
    assert line.startswith(f"error: {tmp_path}/not/yet/made.json: {os.strerror(number)} (")
    assert f"free on {tmp_path})" in line


# --- stop lines name only what exists ----------------------------------------------------

def test_robustness_stop_line_says_when_no_cell_had_finished(tmp_path):
    from vtfpar_jax.experiments import robustness
    path = tmp_path / "never_made" / "robustness.json"
    assert robustness.cells_kept(str(path)) == (
        "no cell had finished; nothing was written; rerun the same command")
    files.write_json(str(path), {"cells": {"clean": {}, "blur@1": {}}})
    assert robustness.cells_kept(str(path)).startswith(f"the 2 cell(s) finished are kept in {path}")


def test_ablate_stop_line_names_the_finished_points_only(tmp_path):
    from vtfpar_jax.experiments import ablate
    assert ablate.points_kept(str(tmp_path)).startswith("no point had finished; rerun")
    files.write_json(str(tmp_path / "ablation.json"),
                     {"points": {"seed=0": {"results": {"group_f1": 0.5}}, "seed=1": {}}})
    line = ablate.points_kept(str(tmp_path), training="seed=1")
    assert line.startswith(f"the 1 finished point(s) are kept in {tmp_path}/ablation.json")
    assert line.endswith("(point seed=1 resumes from its checkpoint)")


def test_a_preempted_training_run_exits_143_in_one_line(tmp_path, capsys):
    """Exit 0 after a preemption made SLURM, Kubernetes or a TPU VM loop think it finished."""
    from vtfpar_jax.training import train
    code, err = _stopped(lambda: train.preempted(3, str(tmp_path)), capsys)
    assert code == 143
    assert err.strip() == (f"terminated: preempted at step 3, its checkpoint saved in {tmp_path}; "
                           "rerun the same command to resume")


def test_the_training_stop_line_lists_the_complete_checkpoints(tmp_path):
    from vtfpar_jax.training import train
    assert train.checkpoints_kept(str(tmp_path)).startswith("no checkpoint had been written")
    for name in ("2", "4", "6.orbax-checkpoint-tmp-1"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert train.checkpoints_kept(str(tmp_path)).startswith(
        f"the checkpoints of steps 2, 4 are kept in {tmp_path}")


# A Ctrl-C while a command's module is imported (held until the import ends: an extension's
# initialisation turned it into an ImportError or an abort), then the command's `run`.
CTRL_C_IN_AN_IMPORT = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from vtfpar_jax import cli, cli_errors
signal.signal(signal.SIGINT, signal.default_int_handler)

def command():
    import interrupted_while_imported   # its module code sends SIGINT
    print("imported", file=sys.stderr)
    cli_errors.run(lambda: time.sleep(30) or print("finished", file=sys.stderr))

cli.main = command
cli.entry()
"""


def test_a_ctrl_c_during_an_import_stops_the_command_after_it(tmp_path):
    (tmp_path / "interrupted_while_imported.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.3)\n")
    ended = subprocess.run([sys.executable, "-c", CTRL_C_IN_AN_IMPORT, str(tmp_path)],
                           cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert ended.returncode == 130, ended.stderr
    assert ended.stderr.splitlines() == [
        "imported", "interrupted: nothing was written; rerun the same command"]
