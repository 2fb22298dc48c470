"""--out can lose nothing: --overwrite replaces only what a command of ours wrote, never the
current, home, model or data folder; one run per --out at a time; and the swap of the new
results for the old either happens whole or leaves the old ones where they were."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from smoke_runs import REPO, subprocess_env

from vtfpar_jax import cli_errors
from vtfpar_jax.evaluation import evaluate
from vtfpar_jax.inference import predict
from vtfpar_jax.outputs import out_folder, stop_signals
from vtfpar_jax.state import model_dir


def _tree(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), to show that nothing changed."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = open(path, "rb").read()
    return found


def _fill(folder: out_folder.OutFolder, step: int, content: bytes) -> None:
    with folder.filling(step) as temporary, open(os.path.join(temporary, "a.json"), "wb") as f:
        f.write(content)


def _one_error_line(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def project(tmp_path):
    """A user's folder: notes and sources, none of it ours."""
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "src" / "main.py").write_text("print(1)")
    return folder


@pytest.fixture
def model(tmp_path, monkeypatch):
    """A model dir whose config names its data dir; loading it fails the test: every refusal
    here comes before the model loads."""
    folder = tmp_path / "model"
    folder.mkdir()
    data = tmp_path / "tfds"
    (data / "synthetic_pedestrians").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"data_dir": str(data)}}))

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(model_dir, "load", load)
    return folder


# --- --overwrite replaces only what a command of ours wrote -------------------------------

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_evaluate_out_dot_refuses_the_current_folder(project, model, monkeypatch, capsys,
                                                     overwrite):
    monkeypatch.chdir(project)
    before = _tree(project)
    line = _one_error_line(capsys, evaluate.main, ["--model", model, "--out", ".", *overwrite])
    assert line.startswith("error: --out . is the current folder")
    assert _tree(project) == before
    monkeypatch.chdir(project / "src")    # an ancestor of the current folder holds it
    line = _one_error_line(capsys, evaluate.main, ["--model", model, "--out", "..", *overwrite])
    assert line.startswith(f"error: --out .. holds the current folder ({project / 'src'})")
    assert _tree(project) == before


def test_predict_never_replaces_the_home_folder_or_a_folder_of_the_users(tmp_path, model,
                                                                         monkeypatch, capsys):
    home = tmp_path / "home"
    (home / "thesis" / ".git").mkdir(parents=True)
    (home / "thesis" / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (home / "thesis" / "thesis.tex").write_text(r"\documentclass{book}")
    (home / "clip").mkdir()
    monkeypatch.setenv("HOME", str(home))
    before = _tree(home)
    clip = home / "clip"
    line = _one_error_line(capsys, predict.main, ["--model", model, clip, "--out",
                                                  os.path.expanduser("~/thesis"),
                                                  "--overwrite"])
    assert f"--out {home / 'thesis'} holds .git, thesis.tex (files of something else" in line
    assert "--overwrite replaces only a folder holding our run.json" in line
    line = _one_error_line(capsys, predict.main, ["--model", model, clip, "--out",
                                                  os.path.expanduser("~"), "--overwrite"])
    assert line.startswith(f"error: --out {home} is the home folder")
    assert _tree(home) == before


def test_evaluate_refuses_its_data_dir_given_or_trained_with(tmp_path, model, capsys):
    data = tmp_path / "tfds"
    before = _tree(data)
    line = _one_error_line(capsys, evaluate.main, ["--model", model, "--data_dir", data,
                                                   "--out", data, "--overwrite"])
    assert line == (f"error: --out {data} is {data}, which this run reads; give the results a "
                    "folder of their own, new or empty")
    # Without --data_dir, the data dir the model was trained with is read, and kept.
    line = _one_error_line(capsys, evaluate.main, ["--model", model, "--out", tmp_path,
                                                   "--overwrite"])
    assert f"--out {tmp_path} holds {model}, which this run reads" in line
    assert _tree(data) == before


def test_model_dir_and_inputs_are_refused_even_when_empty(tmp_path):
    empty_input = tmp_path / "frames"
    empty_input.mkdir()
    with pytest.raises(out_folder.OutFolderError, match="is .*frames, which this run reads"):
        out_folder.OutFolder(str(empty_input), "predict", {}, False, reads=[str(empty_input)])
    assert os.listdir(tmp_path) == ["frames"]   # not even a lock file


def test_an_error_while_filling_names_the_file_under_out_and_leaves_nothing(tmp_path):
    """A full disk while the results are written: the error names OUT/a.png, not the file in
    the temporary folder that is removed, and nothing is left beside OUT."""
    import errno
    out = tmp_path / "out"
    with pytest.raises(OSError) as raised:
        with out_folder.OutFolder(str(out), "predict", {}, False).filling(1) as temporary:
            raise OSError(errno.ENOSPC, "No space left on device",
                          os.path.join(temporary, "a.png"))
    assert raised.value.filename == os.path.join(str(out), "a.png")
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_another_commands_results_but_not_a_foreign_run_json(tmp_path):
    out = tmp_path / "out"
    _fill(out_folder.OutFolder(str(out), "evaluate", {"split": "test"}, False), 5, b"old")
    with pytest.raises(out_folder.OutFolderError, match="evaluate's results for other inputs"):
        out_folder.OutFolder(str(out), "predict", {}, False)
    _fill(out_folder.OutFolder(str(out), "predict", {}, True), 7, b"new")
    assert _tree(out)["a.json"] == b"new"
    # A run.json that is not one of ours (no command and identity) is somebody else's file.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"runs": [1, 2]}')
    with pytest.raises(out_folder.OutFolderError, match=r"holds run.json \(files of something"):
        out_folder.OutFolder(str(foreign), "predict", {}, True)
    assert _tree(foreign) == {"run.json": b'{"runs": [1, 2]}'}


def test_export_overwrite_replaces_only_an_artefact_export_wrote(tmp_path, model, capsys):
    from vtfpar_jax.tools import export
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("chapter 1")
    line = _one_error_line(capsys, export.main, ["--model", model, "--format", "stablehlo",
                                                 "--out", thesis, "--overwrite"])
    assert line == (f"error: --out {thesis}: {thesis}.json does not say that vtfpar export "
                    "wrote it; --overwrite replaces only an artefact of ours: use another path")
    assert thesis.read_text() == "chapter 1"
    # An artefact with export's metadata beside it is replaced: the model is then loaded.
    (tmp_path / "thesis.tex.json").write_text(json.dumps({"format_version": 1,
                                                          "format": "stablehlo"}))
    with pytest.raises(AssertionError, match="the model was loaded"):
        export.main(["--model", str(model), "--format", "stablehlo", "--out", str(thesis),
                     "--overwrite"])


# --- one run per --out --------------------------------------------------------------------

HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from vtfpar_jax.outputs import out_folder
out = out_folder.OutFolder({out!r}, "predict", {{}}, False)
print("locked", flush=True)
time.sleep(600)
"""


def test_second_run_into_one_out_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    out = str(tmp_path / "out")
    first = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=REPO, out=out)],
                             env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        with pytest.raises(out_folder.OutFolderError,
                           match=f"--out {out} is in use by pid {first.pid}, another run "
                           "writing there: one run per --out at a time"):
            out_folder.OutFolder(out, "predict", {}, False)
    finally:
        first.kill()       # -9: no clean-up runs; the OS drops its lock
        first.wait(timeout=30)
    with out_folder.OutFolder(out, "predict", {}, False) as taken_over:
        _fill(taken_over, 1, b"1")
    assert sorted(_tree(out)) == ["a.json", "run.json"]


def test_the_lock_is_released_however_the_run_ends(tmp_path):
    out = str(tmp_path / "out")
    with out_folder.OutFolder(out, "predict", {}, False):
        with pytest.raises(out_folder.OutFolderError, match=f"in use by pid {os.getpid()}"):
            out_folder.OutFolder(out, "predict", {}, False)
    _fill(out_folder.OutFolder(out, "predict", {"inputs": ["x"]}, False), 1, b"1")
    with pytest.raises(out_folder.OutFolderError, match="results for other inputs"):
        out_folder.OutFolder(out, "predict", {"inputs": ["y"]}, False)   # refused: released
    with pytest.raises(out_folder.OutFolderError, match="holds results of step 1"), \
            out_folder.OutFolder(out, "predict", {"inputs": ["x"]}, False).filling(2):
        pass
    with out_folder.OutFolder(out, "predict", {"inputs": ["x"]}, False):
        pass
    assert sorted(os.listdir(tmp_path)) == ["out"]    # no lock file left beside it


# --- the swap -----------------------------------------------------------------------------

class Injected(OSError):
    pass


def _failing_renames(monkeypatch, failing: set[int]):
    """os.rename failing on its calls numbered in `failing` (1: the old folder aside, 2: the
    new one in, 3: the old one back)."""
    original, calls = os.rename, []

    def rename(source, destination):
        calls.append((source, destination))
        if len(calls) in failing:
            raise Injected(f"rename {len(calls)} failed")
        return original(source, destination)
    monkeypatch.setattr(os, "rename", rename)
    return calls


def _old_run(tmp_path) -> tuple[str, dict]:
    out = str(tmp_path / "out")
    _fill(out_folder.OutFolder(out, "predict", {}, False), 5, b"old")
    return out, _tree(out)


@pytest.mark.parametrize("failing", [{1}, {2}], ids=["aside", "in"])
def test_a_failed_rename_in_the_swap_leaves_the_old_results(tmp_path, monkeypatch, failing):
    out, before = _old_run(tmp_path)
    calls = _failing_renames(monkeypatch, failing)
    with pytest.raises(Injected):
        _fill(out_folder.OutFolder(out, "predict", {}, False), 5, b"new")
    assert _tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]       # no temporary, aside or lock left
    assert len(calls) == max(failing) + (1 if failing == {2} else 0)   # 2: then put back


def test_a_failed_folder_for_the_old_results_leaves_them(tmp_path, monkeypatch):
    out, before = _old_run(tmp_path)
    original = out_folder.tempfile.mkdtemp

    def mkdtemp(**kwargs):
        if ".old-" in kwargs["prefix"]:
            raise Injected("no room aside")
        return original(**kwargs)
    monkeypatch.setattr(out_folder.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(Injected):
        _fill(out_folder.OutFolder(out, "predict", {}, False), 5, b"new")
    assert _tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_when_the_old_results_cannot_be_put_back_the_error_says_where_they_are(
        tmp_path, monkeypatch):
    out, before = _old_run(tmp_path)
    _failing_renames(monkeypatch, {2, 3})
    with pytest.raises(out_folder.OutFolderError,
                       match=r"could not be moved in \(rename 2 failed\), nor the earlier ones "
                       r"put back \(rename 3 failed\); the earlier ones are in (\S+)") as e:
        _fill(out_folder.OutFolder(out, "predict", {}, False), 5, b"new")
    kept = str(e.value).rsplit(" ", 1)[1]
    assert _tree(kept) == before


def _stop_between_the_renames(monkeypatch, out: str, signum: int) -> None:
    original = os.rename

    def rename(source, destination):   # the stop comes between the two renames
        result = original(source, destination)
        if not os.path.exists(out):
            signal.raise_signal(signum)
        return result
    monkeypatch.setattr(os, "rename", rename)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_stop_during_the_swap_waits_until_the_new_results_are_in(tmp_path, monkeypatch,
                                                                   signum):
    out, _ = _old_run(tmp_path)
    _stop_between_the_renames(monkeypatch, out, signum)

    class Stopped(Exception):
        pass

    def stop(number, frame):
        assert os.path.isdir(out), "the stop was delivered with no --out in place"
        raise Stopped(number)
    previous = signal.signal(signum, stop)
    try:
        with pytest.raises(Stopped):
            _fill(out_folder.OutFolder(out, "predict", {}, True), 6, b"new")
    finally:
        signal.signal(signum, previous)
    assert _tree(out)["a.json"] == b"new"
    assert out_folder.read_manifest(out)["step"] == 6
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("signum,word", [(signal.SIGINT, "interrupted"),
                                         (signal.SIGTERM, "terminated")], ids=["ctrl_c", "sigterm"])
def test_a_stop_held_during_the_swap_says_the_results_are_in(tmp_path, monkeypatch, capsys,
                                                              signum, word):
    """The stop line is the one of a stop after the swap, not 'nothing was written'."""
    out, _ = _old_run(tmp_path)
    _stop_between_the_renames(monkeypatch, out, signum)

    def predict_into_out():
        stop_signals.on_stop(f"nothing was written to {out}; rerun the same command")
        _fill(out_folder.OutFolder(out, "predict", {}, True), 6, b"new")
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)   # as from a terminal
    try:
        with pytest.raises(SystemExit) as exit_:
            cli_errors.run(predict_into_out)
    finally:
        signal.signal(signal.SIGINT, outer)
    assert exit_.value.code == 128 + signum
    assert capsys.readouterr().err.strip() == f"{word}: the results are complete in {out}"
    assert _tree(out)["a.json"] == b"new"


def test_held_signals_put_the_handlers_back(monkeypatch):
    before = {number: signal.getsignal(number) for number in stop_signals.STOP_SIGNALS}
    with stop_signals.held():
        assert all(signal.getsignal(number) is not handler
                   for number, handler in before.items())
    assert {number: signal.getsignal(number) for number in stop_signals.STOP_SIGNALS} == before
