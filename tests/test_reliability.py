"""Reliability: what a run does when its checkpoints, its work dir or its inputs go wrong.

Each test holds one guarantee of docs/reliability.md. Runs use configs/demo.py:smoke
on synthetic_pedestrians/tiny (built once per session), a few steps each.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import random
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from smoke_runs import REPO, SMOKE, smoke_config, subprocess_env

from vtfpar_jax.state import checkpoint, model_dir, sharding
from vtfpar_jax.state.checkpoint import CheckpointStore, NoCheckpointError, abstract
from vtfpar_jax.training import train
from vtfpar_jax.training.workdir_lock import WorkdirLock

# Short runs: no evaluation between epochs, a checkpoint after every step.
SHORT = {"eval_every_epochs": 0, "checkpoint_every_steps": 1}


def cli(workdir, data_dir, *extra):
    return [sys.executable, "-m", "vtfpar_jax", "train", "--config", SMOKE, "--workdir",
            str(workdir), f"--config.data_dir={data_dir}", *extra]


def params_of(workdir, step=None):
    """(step, {path: array}) of the trainable params and BN stats of a checkpoint."""
    loaded = model_dir.load(str(workdir), step)
    return loaded.step, params_in(loaded)


def params_in(loaded):
    tree = {"trainable": loaded.state.trainable, "batch_stats": loaded.state.batch_stats}
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def assert_same(a, b, atol=1e-6):
    assert a and set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


def corrupt(workdir, step):
    """Truncate every file of a checkpoint's state to half its size (a torn write)."""
    state_dir = os.path.join(workdir, "checkpoints", str(step), "state")
    files = [os.path.join(r, f) for r, _, fs in os.walk(state_dir) for f in fs]
    assert files, state_dir
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


@pytest.fixture(scope="module")
def three_checkpoints(data_dir, tmp_path_factory):
    """A work dir after 3 steps with checkpoints 1, 2, 3 (copied per test by `workdir3`)."""
    d = tmp_path_factory.mktemp("three") / "run"
    train.train_and_evaluate(smoke_config(data_dir, max_steps=3, **SHORT), str(d))
    assert CheckpointStore(str(d)).steps() == [1, 2, 3]
    return d


@pytest.fixture
def workdir3(three_checkpoints, tmp_path):
    import shutil
    d = tmp_path / "run"
    shutil.copytree(three_checkpoints, d)
    return d


# ------------------------------------------------- 1. a corrupted checkpoint is skipped


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_previous(workdir3, three_checkpoints,
                                                          caplog, capsys):
    _, good2 = params_of(three_checkpoints, 2)
    corrupt(workdir3, 3)
    loaded = model_dir.load_announced(str(workdir3))
    assert loaded.step == 2
    assert_same(params_in(loaded), good2, atol=0)
    assert len(loaded.unreadable_newer) == 1 and loaded.unreadable_newer[0].startswith("step 3")
    assert (f"warning: using step 2 of {workdir3}: the newer checkpoint(s) cannot be read "
            "(step 3 (") in capsys.readouterr().err
    # Training, resuming, says it in its own words (the loaded model holds no optimiser
    # state: the same fields are read as inference reads them).
    store = CheckpointStore(str(workdir3), async_save=False)
    fields = {"step": loaded.state.step, "trainable": loaded.state.trainable,
              "batch_stats": loaded.state.batch_stats}
    with caplog.at_level(logging.WARNING):
        store.restore(abstract(fields, sharding.replicated(loaded.mesh)), partial=True)
    store.close()
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "resumed from step 2" in warnings and "step 3" in warnings, warnings
    # The bad checkpoint is left for a person to inspect.
    assert os.path.isdir(os.path.join(workdir3, "checkpoints", "3", "state"))


@pytest.mark.slow
def test_deleted_files_in_latest_checkpoint_fall_back(workdir3):
    # Every file goes: a model dir is loaded without the optimiser state (a partial restore),
    # so a checkpoint that lost only the Adam state's files is still read, rightly.
    state_dir = os.path.join(workdir3, "checkpoints", "3", "state")
    for root, _, names in os.walk(state_dir):
        for name in names:
            os.remove(os.path.join(root, name))
    loaded = model_dir.load(str(workdir3))
    assert loaded.step == 2 and loaded.unreadable_newer[0].startswith("step 3")
    assert os.path.isdir(state_dir)


@pytest.mark.slow
def test_predict_says_which_step_it_used_when_the_newest_is_unreadable(workdir3, tmp_path,
                                                                       capsys):
    import json

    from PIL import Image

    from vtfpar_jax.inference import predict
    corrupt(workdir3, 3)
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 32), (40 * i, 90, 200)).save(clip / f"{i}.png")
    predict.main(["--model", str(workdir3), "--out", str(tmp_path / "out"), str(clip)])
    err = capsys.readouterr().err
    assert f"warning: using step 2 of {workdir3}: the newer checkpoint(s) cannot be read " \
        "(step 3 (" in err, err
    assert json.loads((tmp_path / "out" / "clip.json").read_text())["step"] == 2
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["step"] == 2 and run["unreadable_newer_checkpoints"][0].startswith("step 3")


@pytest.mark.slow
def test_no_readable_checkpoint_is_a_clear_error(workdir3, data_dir):
    for s in (1, 2, 3):
        corrupt(workdir3, s)
    with pytest.raises(FileNotFoundError, match="no checkpoint to load") as e:
        model_dir.load(str(workdir3))
    assert all(f"step {s}" in str(e.value) for s in (1, 2, 3)), str(e.value)
    # Training refuses too, rather than silently starting over beside the bad checkpoints.
    with pytest.raises(NoCheckpointError, match="no readable checkpoint"):
        train.train_and_evaluate(smoke_config(data_dir, max_steps=4, **SHORT), str(workdir3))
    assert CheckpointStore(str(workdir3)).steps() == [1, 2, 3]


# ------------------------------------------------------ 2. one process per work dir


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from vtfpar_jax.training.workdir_lock import WorkdirLock
lock = WorkdirLock({workdir!r})
print("locked", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def killed_lock_holder(workdir):
    """A child process holding the work dir's lock; killed (-9) when the block ends.

    kill -9: no clean-up code runs, yet the OS drops the flock with the process.
    """
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=REPO, workdir=str(workdir))],
                            env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_second_lock_in_same_workdir_refuses(tmp_path):
    first = WorkdirLock(str(tmp_path))
    try:
        with pytest.raises(RuntimeError, match=f"in use by pid {os.getpid()}"):
            WorkdirLock(str(tmp_path))
    finally:
        first.release()
    WorkdirLock(str(tmp_path)).release()     # released: free again


@pytest.mark.slow
def test_second_training_process_refuses_and_lock_dies_with_holder(data_dir, tmp_path):
    with killed_lock_holder(tmp_path) as holder:
        r = subprocess.run(cli(tmp_path, data_dir, "--config.max_steps=1"), cwd=REPO,
                           env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode != 0
        assert f"is in use by pid {holder.pid}" in r.stderr, r.stderr[-3000:]
        assert "one training process per work dir" in r.stderr
        assert "Traceback" not in r.stderr
        assert not os.path.exists(tmp_path / "checkpoints")
    WorkdirLock(str(tmp_path)).release()


def test_lock_does_not_outlive_killed_holder(tmp_path):
    with killed_lock_holder(tmp_path) as holder:
        with pytest.raises(RuntimeError, match=f"pid {holder.pid}"):
            WorkdirLock(str(tmp_path))
    lock = WorkdirLock(str(tmp_path))
    assert open(tmp_path / ".lock").read() == f"pid {os.getpid()}"
    lock.release()


# ------------------------------------------------ 3. a failed checkpoint write (disk full)


@pytest.mark.slow
def test_disk_full_while_checkpointing_stops_cleanly(data_dir, tmp_path, monkeypatch):
    original = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    workdir = tmp_path / "run"
    with pytest.raises(OSError, match=r"step 3\b") as e:
        train.train_and_evaluate(smoke_config(data_dir, max_steps=5, **SHORT), str(workdir))
    assert e.value.errno == errno.ENOSPC
    assert "No space left on device" in str(e.value)
    monkeypatch.undo()
    # The run stopped there: the earlier checkpoints are complete and load, no later ones.
    assert CheckpointStore(str(workdir)).steps() == [1, 2]
    step, params = params_of(workdir)
    assert step == 2 and all(np.all(np.isfinite(v)) for v in params.values())
    assert not [n for n in os.listdir(workdir / "checkpoints") if "tmp" in n]
    WorkdirLock(str(workdir)).release()     # and the work dir is free again


# ------------------------------------------------------ 4. kill -9 at random moments


def wait_for_checkpoint(workdir, step, proc, deadline_s=600):
    """Until checkpoint `step` is complete on disk (Orbax renames it from a temporary
    name when done); fails the test if the run ends or the deadline passes first."""
    start, path = time.monotonic(), os.path.join(workdir, "checkpoints", str(step))
    while not os.path.isdir(path):
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before checkpoint {step}")
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"no checkpoint {step} in {workdir} after {deadline_s} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_and_restart_equals_uninterrupted(data_dir, tmp_path):
    steps = 8
    args = (f"--config.max_steps={steps}", "--config.eval_every_epochs=0",
            "--config.checkpoint_every_steps=1")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    r = subprocess.run(cli(straight, data_dir, *args), cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

    rng = random.Random(1234)
    kills = []
    # One kill: each training process costs a start-up and a compile in the suite's budget.
    for target in sorted(rng.sample(range(1, steps), 1)):
        proc = subprocess.Popen(cli(killed, data_dir, *args), cwd=REPO, env=subprocess_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_checkpoint(killed, target, proc)
            # Then a seeded moment later: somewhere in the next step or checkpoint write.
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.kill()                          # SIGKILL: no handler, no clean-up
            proc.wait()
        ckpts = killed / "checkpoints"
        kills.append((target, sorted(os.listdir(ckpts)) if ckpts.exists() else []))
    r = subprocess.run(cli(killed, data_dir, *args), cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at step" in r.stderr, (kills, r.stderr[-3000:])
    step_a, a = params_of(straight)
    step_b, b = params_of(killed)
    assert step_a == step_b == steps
    assert_same(b, a, atol=1e-6)


# ------------------------------------------------------------- 6. foreign weights


class _RunsCode:
    """Unpickling this object calls open(marker, 'w'): a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _plant(path, payload):
    torch = pytest.importorskip("torch")
    torch.save(payload, path)


def test_published_checkpoint_that_runs_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from vtfpar_jax.backbones.weights import WeightImportError
    from vtfpar_jax.convert import openpar

    marker, path = tmp_path / "marker", tmp_path / "ckpt.pth"
    _plant(path, {"epoch": 3, "model_state_dict": {"bn.weight": torch.ones(2),
                                                    "payload": _RunsCode(str(marker))}})
    with pytest.raises(WeightImportError) as e:
        openpar.read_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and "refused" in message and "run code" in message, message
    assert not marker.exists(), "unpickling ran code"
    # The same file unpickled without the guard does run it (the test's payload is real).
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_clip_file_that_runs_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from vtfpar_jax.backbones import openai_clip
    from vtfpar_jax.backbones.weights import WeightImportError

    marker, path = tmp_path / "marker", tmp_path / "ViT-B-16.pt"
    _plant(path, {"visual.conv1.weight": torch.zeros(8, 3, 4, 4),
                  "payload": _RunsCode(str(marker))})
    with pytest.raises(WeightImportError) as e:
        openai_clip.load(path)
    message = str(e.value)
    assert str(path) in message and "refused" in message and "run code" in message, message
    assert not marker.exists(), "unpickling ran code"


def test_hf_folder_prefers_safetensors_over_pickle(tmp_path):
    from vtfpar_jax.backbones import hf_clip
    from vtfpar_jax.models import clip

    cfg = clip.ClipConfig(vision=clip.TowerConfig(64, 1, 1, 128),
                          text=clip.TowerConfig(64, 1, 1, 128), image_size=16, patch_size=8,
                          vocab_size=100, projection_dim=16)
    params = clip.init_params(cfg, jax.random.key(0))
    hf_clip.save(cfg, params, tmp_path)
    # A pytorch_model.bin beside it that runs code when unpickled (and is no state dict).
    marker = tmp_path / "marker"
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump(_RunsCode(str(marker)), f)
    loaded_cfg, loaded = hf_clip.load(tmp_path)
    assert loaded_cfg == cfg
    assert not marker.exists(), "the .bin was unpickled"
    for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------- the finite guard of train_step (no bad update)


@pytest.mark.slow
def test_non_finite_step_leaves_the_state_unchanged(data_dir, tmp_path):
    trainer = train.Trainer(smoke_config(data_dir), str(tmp_path))
    batch = next(trainer.batches(0))
    before = jax.tree.map(np.asarray, trainer.state)
    size = trainer.backbone_cfg.image_size   # float frames are model input, used as given
    bad = dict(batch, video=np.full((*batch["video"].shape[:2], size, size, 3), np.nan,
                                    np.float32))
    state, metrics = trainer.train_step(trainer.state, bad, trainer.rng, trainer.frozen)
    assert not bool(metrics["finite"])
    after = jax.tree.map(np.asarray, state)
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(x, y)     # step, params, BN stats, Adam moments
    state, metrics = trainer.train_step(state, batch, trainer.rng, trainer.frozen)
    assert bool(metrics["finite"]) and int(state.step) == 1


def test_checkpoint_write_is_retried_as_configured(tmp_path, monkeypatch):
    """With retries, a write that fails once (disk full) is tried again and lands."""
    original = ocp.CheckpointManager.save
    failures = []

    def save(self, step, *args, **kwargs):
        if not failures:
            failures.append(step)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(checkpoint, "RETRY_WAIT_S", 0)
    store = CheckpointStore(str(tmp_path), async_save=False, retries=1)
    state = {"w": np.arange(3, dtype=np.float32)}
    assert store.save(1, state, {"step": 1})
    store.wait()
    assert failures == [1] and store.steps() == [1]
    restored, meta = store.restore(jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
    np.testing.assert_array_equal(restored["w"], state["w"])
    store.close()
    no_retry = CheckpointStore(str(tmp_path / "other"), async_save=False)
    failures.clear()
    with pytest.raises(OSError, match=r"step 5\b"):
        no_retry.save(5, state, {"step": 5})
    no_retry.close()
