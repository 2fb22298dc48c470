"""Training end to end on the tiny synthetic set (configs/demo.py:smoke).

Multi-device and multi-process runs are the training CLI in subprocesses (the CPU
device count and jax.distributed must be set up before JAX starts).
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from smoke_runs import REPO, SMOKE, smoke_config, subprocess_env

from vtfpar_jax import attributes
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.evaluation import evaluate
from vtfpar_jax.models import clip, vtfpar
from vtfpar_jax.state import build, model_dir, optim, sharding
from vtfpar_jax.state.checkpoint import CheckpointStore, abstract
from vtfpar_jax.state.train_state import initial_state, step_frozen_params
from vtfpar_jax.training import config_file, losses, preemption, train

WORKER = os.path.join(REPO, "tests", "train_worker.py")
# Adam's eps for the cross-device comparisons. With the published 1e-8, leaves whose
# gradient is zero in exact arithmetic (attention key biases, the head biases and the
# last LayerNorm's bias ahead of the logits' BatchNorm) get +-lr updates from the sign
# of rounding noise, which differs with the reduction order: ~2e-3 apart after 3
# steps on 1 vs 8 devices although the losses agree to 1e-6. A larger eps keeps the
# update a smooth function of the gradient, so 1e-5 tests the gradients themselves.
EPS = 1e-3
# Six steps (one epoch of 24 tracklets in batches of 4), no evaluation between epochs;
# hosts synchronise (log, checkpoint) every 2 steps.
MULTI = {"num_epochs": 1, "eval_every_epochs": 0, "log_every_steps": 2,
         "checkpoint_every_steps": 2, "optimizer.eps": EPS}


def cli_args(data_dir, workdir, **overrides):
    return ["--config", SMOKE, "--workdir", str(workdir), f"--config.data_dir={data_dir}",
            *(f"--config.{k}={v}" for k, v in overrides.items())]


def finish(proc, timeout=900, status=0):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"process timed out:\n{out[-4000:]}")
    assert proc.returncode == status, out[-6000:]
    return out


def assert_params_close(a, b, atol):
    assert a and set(a) == set(b)
    worst = max((float(np.max(np.abs(a[k] - b[k]))), k) for k in a)
    assert worst[0] <= atol, f"largest difference {worst[0]:.3g} at {worst[1]}"


@pytest.mark.slow
def test_eight_devices_equal_one_device(data_dir, tmp_path):
    overrides = {"max_steps": 3, "eval_every_epochs": 0, "optimizer.eps": EPS,
                 "input.batch_size": 8, "input.eval_batch_size": 8}
    env = dict(subprocess_env(), XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.Popen([sys.executable, "-m", "vtfpar_jax", "train",
                             *cli_args(data_dir, tmp_path / "eight", **overrides)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = finish(proc)
    assert "8 local / 8 global devices" in out, out[-3000:]
    assert jax.device_count() == 1
    train.train_and_evaluate(smoke_config(data_dir, **overrides), str(tmp_path / "one"))
    step8, p8 = restored(tmp_path / "eight")
    step1, p1 = restored(tmp_path / "one")
    assert step8 == step1 == 3
    assert_params_close(p8, p1, atol=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulated_batches(hosts: int):
    """Trainer.batches as one process feeding the global batches `hosts` hosts assemble:
    host i's rows from train_batches(process_index=i, process_count=hosts), in host order."""
    from vtfpar_jax.models import rng
    from vtfpar_jax.state import sharding

    def batches(trainer, step):
        assert step == 0
        c = trainer.config
        for epoch in itertools.count():
            shares = [trainer.pipeline.train_batches(
                trainer.builder, batch_size=c.input.batch_size, frames=trainer.model_cfg.frames,
                epoch=epoch, seed=rng.data_order_seed(c.seed), frame_choice=c.input.frame_choice,
                frame_size=trainer.frame_size, process_index=i, process_count=hosts)
                for i in range(hosts)]
            for parts in zip(*shares, strict=True):
                batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                yield sharding.global_batch(batch, trainer.mesh)

    return batches


def start_process(data_dir, workdir, port, process_id, syncs, *worker_args):
    env = dict(subprocess_env(), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    return subprocess.Popen([sys.executable, WORKER, "--syncs", str(syncs), *worker_args, "--",
                             *cli_args(data_dir, workdir, **MULTI)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_two_processes(data_dir, workdir, tmp_path, name, *worker_args, status=0):
    """Both processes of one run to their end: (outputs, preemption syncs per process)."""
    port = free_port()
    syncs = [tmp_path / f"{name}_syncs{i}" for i in range(2)]
    procs = [start_process(data_dir, workdir, port, i, syncs[i], *worker_args)
             for i in range(2)]
    try:
        outs = [finish(p, status=status) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs, [int(s.read_text()) for s in syncs]


@pytest.mark.slow
def test_two_processes_preempted_and_resumed_equal_one_process(data_dir, tmp_path,
                                                               monkeypatch):
    """The training CLI as two jax.distributed processes (loopback, gloo) on one work dir:
    SIGTERM on both during step 3, both stop at step 4 (the next sync step) and save once;
    the same command resumes; the result equals one process fed the same global batches."""
    shared = tmp_path / "shared"
    # Exit 143, as after any SIGTERM: a scheduler's restart-on-failure policy reruns it.
    outs, syncs = run_two_processes(data_dir, shared, tmp_path, "first", "--sigterm_at_step", "3",
                                    status=143)
    for out in outs:
        assert "process 0 of 2" in out or "process 1 of 2" in out, out[-3000:]
        assert f"terminated: preempted at step 4, its checkpoint saved in {shared}" in out, \
            out[-3000:]
    # One checkpoint per save step: 2 (scheduled) and 4 (the preemption), written together.
    assert CheckpointStore(str(shared)).steps() == [2, 4]
    # The hosts shared their preemption flags once for the lock, then only at sync steps
    # (2 and 4): 2 all-gathers over 4 steps, none per step.
    assert syncs == [1 + 2, 1 + 2]
    # Process 0 alone writes the run's files; none is left half-written.
    assert not [n for n in os.listdir(shared) if ".tmp-" in n]
    assert [json.loads(line)["step"] for line in open(shared / "metrics.jsonl")] == [2, 4]

    outs, syncs = run_two_processes(data_dir, shared, tmp_path, "resumed")
    for out in outs:
        assert "resumed at step 4" in out, out[-3000:]
        assert "group (published, 0.45): acc" in out, out[-3000:]
    assert syncs == [1 + 1, 1 + 1]            # the lock, then step 6
    assert CheckpointStore(str(shared)).steps()[-1] == 6

    monkeypatch.setattr(train.Trainer, "batches", emulated_batches(2))
    config = smoke_config(data_dir, **MULTI)
    train.train_and_evaluate(config, str(tmp_path / "one"))
    step2, p2 = restored(shared)
    step1, p1 = restored(tmp_path / "one")
    assert step2 == step1 == 6
    assert_params_close(p2, p1, atol=1e-5)


def flat(tree):
    return traverse_util.flatten_dict(jax.tree.map(np.asarray, tree), sep="/")


def without_unread(backbone_params):
    vision = {k: v for k, v in backbone_params["vision"].items()
              if k not in ("post_layernorm", "projection")}
    return {"vision": vision, "logit_scale": backbone_params["logit_scale"]}


@pytest.mark.slow
def test_frozen_params_unchanged_and_without_optimizer_state(data_dir, tmp_path):
    config = smoke_config(data_dir)
    trainer = train.Trainer(config, str(tmp_path / "work"))
    assert set(trainer.state.trainable) == {"model"}
    assert set(trainer.frozen.params) == {"backbone"}
    n_trainable = len(jax.tree.leaves(trainer.state.trainable))
    shaped = [x for x in jax.tree.leaves(trainer.state.opt_state) if x.ndim > 0]
    assert len(shaped) == 2 * n_trainable          # Adam's mu and nu, trainable leaves only
    counts = trainer.count_params()
    assert counts["optimizer_state"] - 2 * counts["trainable"] < 10
    # On the devices: CLIP without its text tower (the text features are computed once)
    # nor the vision post-LN and projection (the smoke map reads blocks 0..4, all of them).
    held = without_unread(trainer.backbone_params)
    assert counts["frozen"] == sum(x.size for x in jax.tree.leaves(held))

    before = flat(trainer.state.trainable)
    state, batches = trainer.state, trainer.batches(0)
    for _ in range(2):
        state, metrics = trainer.train_step(state, next(batches), trainer.rng, trainer.frozen)
        assert bool(metrics["finite"])
    assert int(state.step) == 2
    after = flat(state.trainable)
    assert any(not np.array_equal(after[k], before[k]) for k in before)
    # CLIP: bit-identical to a fresh copy of the initial weights (less what is not read).
    _, fresh = build.load_backbone(config, config.seed)
    fresh = without_unread(fresh)
    frozen_now = flat(trainer.frozen.params["backbone"])
    assert set(frozen_now) == set(flat(fresh))
    for k, v in flat(fresh).items():
        np.testing.assert_array_equal(frozen_now[k], v, err_msg=k)


def test_step_frozen_params_hold_less_and_change_no_bit():
    """The step's frozen CLIP: no text tower, no block past the deepest read, kernels in
    the CLIP compute dtype; logits and gradients bit-identical to the full float32 tree."""
    backbone_cfg = clip.tiny()
    cfg = vtfpar.VTFPARConfig(backbone=backbone_cfg, num_attributes=4, frames=2,
                              spatial_map=((0, 0), (2, 1)), temporal_map=((1, 0),),
                              dtype="bfloat16", backbone_dtype="bfloat16", drop_path_rate=0.0)
    backbone_params = clip.init_params(backbone_cfg, jax.random.PRNGKey(0))
    variables = vtfpar.init(cfg, jax.random.PRNGKey(1))
    tx = optax.adam(1e-3)
    state, full = initial_state(variables, backbone_params, ("backbone/.*",), tx)
    held = step_frozen_params(cfg, full)
    assert set(held["backbone"]) == {"vision", "logit_scale"}
    assert sorted(k for k in held["backbone"]["vision"] if k.startswith("layers_")) == [
        "layers_0", "layers_1"]                    # index 2 = after block 2: blocks 0, 1
    assert "projection" not in held["backbone"]["vision"]
    for path, leaf in flat(held["backbone"]["vision"]).items():
        want = jnp.bfloat16 if path.endswith("kernel") else jnp.float32
        assert leaf.dtype == want, path
    video = jax.random.normal(jax.random.PRNGKey(2), (2, 2, 64, 64, 3))
    text = jax.random.normal(jax.random.PRNGKey(3), (4, backbone_cfg.projection_dim))
    labels = jnp.asarray([[1, 0, 1, 0], [0, 1, 1, 0]], jnp.float32)

    def loss_and_grads(frozen):
        def loss_fn(trainable):
            params = optim.merge(trainable, frozen)
            logits, _ = vtfpar.apply(cfg, {"params": params["model"],
                                           "batch_stats": state.batch_stats},
                                     params["backbone"], video, text, train=True)
            return losses.weighted_bce(logits, labels, jnp.full((4,), 0.4)), logits
        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state.trainable)

    (loss_full, logits_full), grads_full = loss_and_grads(full)
    (loss_held, logits_held), grads_held = loss_and_grads(held)
    np.testing.assert_array_equal(logits_held, logits_full)
    assert float(loss_held) == float(loss_full)
    for k, v in flat(grads_full).items():
        np.testing.assert_array_equal(flat(grads_held)[k], v, err_msg=k)


def restored(workdir):
    """(step, every leaf of the newest checkpoint, the optimiser state included: as training
    restores it, since a model loaded for inference holds none)."""
    loaded = model_dir.load(str(workdir))
    _, backbone_params = build.load_backbone_folder(str(workdir / "backbone"))
    template, _ = model_dir.fresh_state(loaded.config, loaded.model_cfg, backbone_params)
    store = CheckpointStore(str(workdir), async_save=False)
    state, meta = store.restore(abstract(template, sharding.replicated(loaded.mesh)))
    store.close()
    tree = {"trainable": state.trainable, "batch_stats": state.batch_stats,
            "opt_state": state.opt_state}
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return int(meta["step"]), {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted(data_dir, tmp_path):
    overrides = {"num_epochs": 1, "eval_every_epochs": 0, "checkpoint_every_steps": 100}
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    train.train_and_evaluate(smoke_config(data_dir, max_steps=2, **overrides), str(resumed))
    assert CheckpointStore(str(resumed)).steps() == [2]
    results = train.train_and_evaluate(smoke_config(data_dir, **overrides), str(resumed))
    assert "group" in results
    train.train_and_evaluate(smoke_config(data_dir, **overrides), str(straight))
    step_a, a = restored(resumed)
    step_b, b = restored(straight)
    assert step_a == step_b == 6        # 24 tracklets / batch 4
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
    steps = [json.loads(line)["step"] for line in open(resumed / "metrics.jsonl")
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]


def _inject_nan_at(monkeypatch, bad_step):
    original = train.Trainer.batches

    def batches(self, step):
        for i, batch in enumerate(original(self, step), start=step + 1):
            if i == bad_step:   # float frames are model input, used as given
                size = self.backbone_cfg.image_size
                batch = dict(batch, video=jnp.full((*batch["video"].shape[:2], size, size, 3),
                                                   jnp.nan))
            yield batch

    monkeypatch.setattr(train.Trainer, "batches", batches)


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_dir, tmp_path,
                                                                   monkeypatch):
    _inject_nan_at(monkeypatch, 3)
    config = smoke_config(data_dir, num_epochs=1, eval_every_epochs=0,
                          checkpoint_every_steps=1)
    with pytest.raises(FloatingPointError, match=r"step 3\b") as e:
        train.train_and_evaluate(config, str(tmp_path))
    assert "not finite" in str(e.value)
    assert CheckpointStore(str(tmp_path)).steps() == [1, 2]
    step, params = restored(tmp_path)
    assert step == 2
    assert all(np.all(np.isfinite(v)) for v in params.values())


@pytest.mark.slow
def test_nan_between_log_steps_still_stops_the_run(data_dir, tmp_path, monkeypatch):
    _inject_nan_at(monkeypatch, 3)
    config = smoke_config(data_dir, num_epochs=1, eval_every_epochs=0, log_every_steps=2,
                          checkpoint_every_steps=100)
    with pytest.raises(FloatingPointError, match=r"step 3\b"):
        train.train_and_evaluate(config, str(tmp_path))


# ------------------------------------------------------------------ the CLI, end to end


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "vtfpar_jax", "train", *map(str, args)],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def trained_dir(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli_run") / "run"
    r = run_cli("--config", SMOKE, "--workdir", workdir, f"--config.data_dir={data_dir}",
                "--config.num_epochs=1")
    assert r.returncode == 0, r.stderr[-6000:]
    return workdir, r


@pytest.mark.slow
def test_cli_trains_end_to_end(trained_dir):
    workdir, r = trained_dir
    assert "group (published, 0.45): acc" in r.stdout
    for name in ("metrics.jsonl", "training_curves.png", "config.json", "eval/metrics.json",
                 "backbone/model.safetensors"):
        assert (workdir / name).is_file(), name
    assert CheckpointStore(str(workdir)).steps()[-1] == 6
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any("eval/group_f1" in r for r in rows)
    run = json.load(open(workdir / "config.json"))
    assert run["attribute_set"] == "synthetic"
    assert run["config"]["dataset"] == "synthetic_pedestrians/tiny"


BAD_INPUTS = [
    (["--config.model.frames=9"], "frames=9 with the temporal side net"),
    (["--config.model.spatial_map=nine"], "interaction map 'nine'"),
    (["--config.model.spatial_aggregation=median"], "unknown spatial_aggregation 'median'"),
    (["--config.model.temporal_aggregation=median"], "unknown temporal_aggregation 'median'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=["frames", "map", "agg_s", "agg_t"])
def test_cli_bad_model_config_is_a_clear_error(data_dir, tmp_path, args, message):
    r = run_cli("--config", SMOKE, "--workdir", tmp_path / "run",
                f"--config.data_dir={data_dir}", *args)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


@pytest.mark.slow
def test_cli_dataset_not_built_says_how_to_build_it(tmp_path):
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    r = run_cli("--config", SMOKE, "--workdir", tmp_path / "run", f"--config.data_dir={empty}")
    assert r.returncode != 0
    assert "'synthetic_pedestrians/tiny' is not built" in r.stderr, r.stderr[-3000:]
    assert "--prepare_only" in r.stderr and str(empty) in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["is_a_file", "under_a_file"])
def test_cli_unwritable_workdir_is_a_clear_error(data_dir, tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    workdir = blocker if kind == "is_a_file" else blocker / "run"
    r = run_cli("--config", SMOKE, "--workdir", workdir, f"--config.data_dir={data_dir}")
    assert r.returncode != 0
    assert "error:" in r.stderr and str(blocker) in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


# ------------------------------------------------------------- evaluation of a model dir


@pytest.mark.slow
def test_evaluate_main_prints_the_table(trained_dir, capsys):
    workdir, _ = trained_dir
    evaluate.main(["--model", str(workdir)])
    out = capsys.readouterr().out
    assert "group (published, 0.45): acc" in out
    assert len(out.splitlines()) > 5
    assert (workdir / "eval_test" / "metrics.json").is_file()


def test_evaluate_main_without_model_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--model", str(tmp_path)])
    assert e.value.code not in (0, None)
    assert "not a model dir" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_main_without_checkpoint_is_a_clear_error(trained_dir, tmp_path, capsys):
    workdir, _ = trained_dir
    model = tmp_path / "no_checkpoint"
    model.mkdir()
    shutil.copy(workdir / "config.json", model / "config.json")
    shutil.copytree(workdir / "backbone", model / "backbone")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--model", str(model)])
    assert e.value.code not in (0, None)
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_model_attributes_must_match_the_dataset(trained_dir):
    workdir, _ = trained_dir
    loaded = model_dir.load(str(workdir))
    assert loaded.builder().is_prepared()       # its own dataset: fine
    other = dataclasses.replace(loaded, attribute_set=attributes.get("mars"))
    with pytest.raises(ValueError, match="model attributes 'mars' do not match dataset"):
        other.builder()


# ------------------------------------------------------- the run's lifecycle in one process


@pytest.mark.slow
def test_failed_start_frees_the_workdir(data_dir, tmp_path):
    """A start that fails (dataset not built) releases everything: in the same process
    (a notebook kernel), the next run on the same work dir trains."""
    import input_pipeline
    workdir, empty = str(tmp_path / "run"), tmp_path / "empty_tfds"
    empty.mkdir()
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(input_pipeline.DatasetNotBuiltError):
        train.train_and_evaluate(smoke_config(str(empty)), workdir)
    assert signal.getsignal(signal.SIGTERM) is handler
    results = train.train_and_evaluate(
        smoke_config(data_dir, max_steps=1, eval_every_epochs=0), workdir)
    assert "group" in results
    assert CheckpointStore(workdir).steps() == [1]
    assert signal.getsignal(signal.SIGTERM) is handler


@pytest.mark.slow
def test_sigterm_saves_once_stops_and_restores_the_handler(data_dir, tmp_path, monkeypatch):
    original = train.Trainer.batches

    def batches(self, step):
        for i, batch in enumerate(original(self, step), start=step + 1):
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)   # a preemption notice during step 2
            yield batch

    monkeypatch.setattr(train.Trainer, "batches", batches)
    handler = signal.getsignal(signal.SIGTERM)
    config = smoke_config(data_dir, max_steps=4, eval_every_epochs=0, checkpoint_every_steps=100)
    assert train.train_and_evaluate(config, str(tmp_path)) == {"preempted_at": 2}
    assert CheckpointStore(str(tmp_path)).steps() == [2]
    assert signal.getsignal(signal.SIGTERM) is handler


def test_preemption_shares_flags_only_at_sync_steps(monkeypatch):
    """On several processes the flag costs one all-gather per sync step, none between."""
    calls = []
    monkeypatch.setattr(preemption.jax, "process_count", lambda: 2)
    monkeypatch.setattr(preemption, "any_process", lambda flag: calls.append(flag) or flag)
    stop = preemption.Preemption()
    try:
        sync_steps = [s % 5 == 0 for s in range(1, 21)]
        assert not any(stop.agreed(sync) for sync in sync_steps)
        assert calls == [False] * 4
        stop.requested = True
        assert not stop.agreed(False) and calls == [False] * 4
        assert stop.agreed(True) and calls == [False] * 4 + [True]
    finally:
        stop.close()


@pytest.mark.slow
def test_full_clip_stays_on_the_host(data_dir, tmp_path):
    """Only the step's trimmed CLIP is on the device; the full one is numpy on the host."""
    before = {id(x) for x in jax.live_arrays()}
    trainer = train.Trainer(smoke_config(data_dir), str(tmp_path))
    assert all(type(x) is np.ndarray for x in jax.tree.leaves(trainer.backbone_params))
    gc.collect()
    new = [x for x in jax.live_arrays() if id(x) not in before]
    held_ids = {id(x) for x in jax.tree.leaves((trainer.state, trainer.frozen, trainer.rng))}
    # No device array made while building the trainer, outside the state and the step's
    # frozen inputs, is a copy of a CLIP leaf: the full CLIP is not resident. (By value:
    # the side nets' init arrays may outlive their replicated copies, and a tiny CLIP
    # shares their widths.)
    clip_leaves = [x for x in jax.tree.leaves(trainer.backbone_params) if x.nbytes > 1024]
    resident = [x.shape for x in new if id(x) not in held_ids and any(
        leaf.shape == x.shape and np.array_equal(leaf, np.asarray(x)) for leaf in clip_leaves)]
    assert not resident, resident
    text_tower = sum(x.nbytes for x in jax.tree.leaves(trainer.backbone_params["text"]))
    assert text_tower > 1024
    on_device = sum(x.nbytes for x in new)
    stats = jax.devices()[0].memory_stats()     # None on the CPU; measured where available
    if stats:
        assert stats["bytes_in_use"] < on_device + text_tower


def test_config_typo_is_refused_naming_the_nearest_field():
    with pytest.raises(ConfigError, match=r"no field 'optimizer\.lrr'.*'optimizer\.lr'"):
        config_file.load_config_file(SMOKE, **{"optimizer.lrr": 1.0})
    with pytest.raises(ConfigError, match=r"'optimiser\.lr'.*'optimizer\.lr'"):
        config_file.load_config_file(SMOKE, **{"optimiser.lr": 1.0})
    with pytest.raises(ConfigError, match=r"--config\.model\.frame: .* 'model\.frames'"):
        config_file.check_config_overrides(["train", "--config", SMOKE, "--config.model.frame=3"])
    config_file.check_config_overrides(["train", f"--config={SMOKE}", "--config.model.frames=3"])


@pytest.mark.slow
def test_cli_config_typo_is_one_line(tmp_path):
    r = run_cli("--config", SMOKE, "--workdir", tmp_path, "--config.optimizer.lrr=1")
    assert r.returncode == 1
    assert "'optimizer.lrr' (did you mean 'optimizer.lr'?)" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr


def test_real_clip_size_fields_must_match_the_loaded_clip(tmp_path):
    from vtfpar_jax.backbones import hf_clip
    cfg = clip.tiny(image_size=32, patch_size=8)
    hf_clip.save(cfg, clip.init_params(cfg, jax.random.PRNGKey(0)), tmp_path)
    config = config_file.load_config_file(SMOKE)
    config.backbone.source, config.backbone.path = "hf", str(tmp_path)
    config.backbone.image_size, config.backbone.patch_size = 32, 8
    assert build.load_backbone(config, 0)[0] == cfg
    config.backbone.image_size = 224
    with pytest.raises(ConfigError, match="config.backbone.image_size=224.*image_size 32"):
        build.load_backbone(config, 0)
    config.backbone.image_size, config.backbone.patch_size = 32, 16
    with pytest.raises(ConfigError, match="config.backbone.patch_size=16.*patch_size 8"):
        build.load_backbone(config, 0)
