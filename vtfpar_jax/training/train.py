"""Training: `vtfpar train --config configs/mars.py --workdir DIR`.

One pure `train_step(state, batch, rng)` jitted over a `data` mesh axis: the
batch is sharded, the trainable params and optimiser state are replicated, the
frozen params (all of CLIP by default) are a separate, never-donated argument
that no gradient or optimiser state ever touches. The same code runs on one
CPU, several GPUs or a TPU pod slice (one process per host).

A work dir holds one run: its config.json is written when the run starts and never
rewritten, and rerunning into the same work dir resumes that run. What a restart may change
(how long the run goes, how it is watched), how each change is recorded, and what is refused
before the backbone or data are loaded (unless --allow_config_change) is
vtfpar_jax/state/fingerprint.py's. A restart runs the backbone saved in the work dir's
backbone/ (`run_backbone`), never one drawn or fetched again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import textwrap
import time
from typing import NoReturn

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vtfpar_jax import cli_errors
from vtfpar_jax.errors import ConfigError, UserError
from vtfpar_jax.models import preprocess, rng, vtfpar
from vtfpar_jax.outputs import stop_signals
from vtfpar_jax.outputs.files import atomic_file, atomic_folder
from vtfpar_jax.state import (
    backbone_origin,
    build,
    digests,
    fingerprint,
    model_dir,
    old_names,
    optim,
    sharding,
)
from vtfpar_jax.state.checkpoint import CheckpointStore, NoCheckpointError, abstract
from vtfpar_jax.state.train_state import Frozen, initial_state, step_frozen_params
from vtfpar_jax.training.config_file import check_config_overrides
from vtfpar_jax.training.preemption import Preemption
from vtfpar_jax.training.run_logging import MetricsLogger
from vtfpar_jax.training.train_step import jit_train_step, make_train_step
from vtfpar_jax.training.workdir_lock import lock_workdir

# INFO lines here are the run's own (cli_errors.set_verbosity shows them by default).
log = logging.getLogger(__name__)


class Trainer:
    """Builds everything a run needs from a config and a work dir, then trains."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, allow_change: bool = False):
        from input_pipeline import pipeline

        self.config, self.workdir = config, workdir
        # A restart's changes, refused (unless `allow_change`) before anything is loaded.
        started = fingerprint.started_run(workdir)
        self.changes = fingerprint.restart_changes(workdir, started, config, allow_change)
        self.pipeline = pipeline
        self.builder = model_dir.dataset_builder(config)
        self.attribute_set = pipeline.attribute_set(self.builder)
        self.backbone_cfg, backbone_params = run_backbone(config, workdir, started)
        # The full float32 backbone stays on the host (numpy), for backbone/ and the text
        # features; only the step's trimmed copy (`step_frozen_params`) goes to the devices.
        # A copy: on the CPU backend np.asarray is a view that keeps the device buffer alive.
        backbone_params = jax.tree.map(lambda x: np.array(x, copy=True), backbone_params)
        self.model_cfg = build.model_config(config, self.backbone_cfg,
                                            self.attribute_set.num_attributes,
                                            self.attribute_set.head_groups)
        self.phrases, self.tokens = build.attribute_tokens(config, self.attribute_set)
        try:
            self.steps_per_epoch = pipeline.steps_per_epoch(
                self.builder, config.input.batch_size, jax.process_count())
        except ValueError as e:  # the batch size does not split over the hosts
            raise ConfigError(f"config.input.batch_size: {e}") from None
        if config.input.batch_size % jax.device_count():
            raise ConfigError(f"config.input.batch_size={config.input.batch_size} does not split "
                              f"over {jax.device_count()} devices; choose a multiple of it")
        self.total_steps = config.max_steps or config.num_epochs * self.steps_per_epoch
        try:  # the messages start with the field's name: "pad_pixels=40: ..."
            self.preprocess = preprocess.Preprocess.from_config(config.input)
            self.preprocess.check((self.backbone_cfg.image_size,) * 2)
        except ValueError as e:
            raise ConfigError(f"config.input.{e}") from None
        try:
            self.frame_size = pipeline.frame_size(config.input)
        except ValueError as e:
            raise ConfigError(str(e)) from None

        self.mesh = sharding.make_mesh()
        # The schedule counts optimiser updates: one per `accumulate_steps` batches.
        self.schedule = optim.make_schedule(
            config.optimizer, config.num_epochs,
            max(self.steps_per_epoch // config.optimizer.accumulate_steps, 1))
        self.tx = optim.make_optimizer(config.optimizer, self.schedule)
        variables = vtfpar.init(self.model_cfg, rng.stream(config.seed, "model_init"))
        state, frozen = initial_state(variables, backbone_params, config.frozen_patterns, self.tx)
        self.backbone_frozen = old_names.PARAMS_KEY not in state.trainable
        from vtfpar_jax.backbones import text
        text_features = text.attribute_text_features(
            self.backbone_cfg, backbone_params, self.phrases, self.tokens,
            cache_dir=os.path.join(workdir, "text_cache"))
        self.frozen = sharding.replicate(Frozen(
            params=step_frozen_params(self.model_cfg, frozen),
            text_features=jnp.asarray(text_features),
            positive_ratio=jnp.asarray(pipeline.positive_ratio(self.builder))), self.mesh)
        self.state = sharding.replicate(state, self.mesh)
        self.backbone_params = backbone_params
        self.train_step = jit_train_step(
            make_train_step(self.model_cfg, self.tx, self.schedule, self.backbone_frozen,
                            config.optimizer.accumulate_steps, self.preprocess), self.mesh)
        # The run's key: the step draws its dropout and augmentation streams from it.
        self.rng = rng.run_key(config.seed)

    def count_params(self) -> dict[str, int]:
        size = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))  # noqa: E731
        return {"trainable": size(self.state.trainable), "frozen": size(self.frozen.params),
                "optimizer_state": size(self.state.opt_state)}

    def batches(self, step: int):
        """Training batches from `step` on, epoch after epoch (exactly resumable).

        uint8 frames as decoded: the step resizes, augments and normalises them.
        """
        c = self.config
        epoch, start = divmod(step, self.steps_per_epoch)
        data_seed = rng.data_order_seed(c.seed)
        while True:
            yield from (sharding.global_batch(b, self.mesh) for b in self.pipeline.train_batches(
                self.builder, batch_size=c.input.batch_size, frames=self.model_cfg.frames,
                epoch=epoch, start_batch=start, seed=data_seed, frame_choice=c.input.frame_choice,
                frame_size=self.frame_size, process_index=jax.process_index(),
                process_count=jax.process_count()))
            epoch, start = epoch + 1, 0


def run_backbone(config: ml_collections.ConfigDict, workdir: str,
                 started: fingerprint.StartedRun | None):
    """(backbone cfg, params) of the run in `workdir`: on a restart, its backbone/ copy as
    `started` (its config.json) records it, so that it resumes on the very weights it started
    with (a random backbone is not drawn again, a hub id not fetched again at a newer revision)."""
    saved = old_names.backbone_folder(workdir)
    if os.path.isdir(saved):
        if started is not None:
            digests.check_backbone(saved, workdir, started.backbone_files)
        return build.load_backbone_folder(saved)
    return build.load_backbone(config, config.seed)


def save_run_files(trainer: Trainer):
    """config.json and the frozen backbone (HF format) beside the checkpoints, by process 0.

    Both are written once, when the run starts, and never rewritten: a restart's
    changes go to config_changes.jsonl (vtfpar_jax.state.fingerprint). Both are written
    whole then renamed (vtfpar_jax.outputs.files), so a run killed while writing them
    leaves nothing half-written for the next one to read. backbone/ comes first:
    config.json records the SHA-256 of its files, which a restart and a load check.
    """
    if jax.process_index() != 0:
        return
    saved = old_names.backbone_folder(trainer.workdir)
    if not os.path.isdir(saved):
        with atomic_folder(saved) as temporary:
            build.save_backbone(trainer.backbone_cfg, trainer.backbone_params, temporary)
    path = os.path.join(trainer.workdir, "config.json")
    if os.path.exists(path):
        return
    identity = fingerprint.run_identity(trainer.config)
    with atomic_file(path) as temporary, open(temporary, "w") as f:
        json.dump({"config": trainer.config.to_dict(),
                   "fingerprint": fingerprint.fingerprint(identity),
                   "random_streams": identity["random_streams"],
                   "splits": identity["splits"],
                   "backbone_origin": backbone_origin.of_config(trainer.config),
                   "backbone_files": digests.of_folder(saved, trainer.workdir),
                   "attribute_set": trainer.attribute_set.name,
                   "phrases": list(trainer.phrases), "tokens": trainer.tokens.tolist(),
                   "positive_ratio": np.asarray(trainer.frozen.positive_ratio).tolist()},
                  f, indent=1, default=list)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_change: bool = False) -> dict:
    """Train (resuming from the work dir's newest good checkpoint) and evaluate.

    A restart's config is checked before anything is built (`Trainer`;
    `allow_config_change` lets any change through, recorded with its step).

    Whatever happens once the lock is taken (a failed start included), the lock,
    the checkpoint writer, the logs and the SIGTERM handler are released on the
    way out, so the next call in the same process finds the work dir free.
    """
    from vtfpar_jax.evaluation import evaluate

    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the work dir {workdir}: {e}") from None
    with contextlib.ExitStack() as cleanup:
        lock = lock_workdir(workdir)
        if lock is not None:
            cleanup.callback(lock.release)
        trainer = Trainer(config, workdir, allow_config_change)
        save_run_files(trainer)
        store = CheckpointStore(workdir, keep=config.keep_checkpoints,
                                keep_every=config.keep_every_steps or None,
                                retries=config.checkpoint_retries)
        cleanup.callback(store.close)
        state = trainer.state
        try:
            state, meta = store.restore(abstract(state, sharding.replicated(trainer.mesh)))
            log.info("resumed at step %d (epoch %d, batch %d)", meta["step"], meta["epoch"],
                     meta["batch"])
        except NoCheckpointError:
            if store.steps():  # checkpoints exist but none loads: never silently start over
                raise
            log.info("no checkpoint in %s: training from scratch", workdir)
        step = int(state.step)
        if trainer.changes and jax.process_index() == 0:
            fingerprint.record_changes(workdir, trainer.changes, step)
            log.warning("config changed from step %d on: %s", step,
                        fingerprint.describe(trainer.changes))
        logger = MetricsLogger(workdir, total_steps=trainer.total_steps, initial_step=step)
        cleanup.callback(logger.close)
        log.info("params: %s", trainer.count_params())
        preemption = Preemption()
        cleanup.callback(preemption.close)
        evaluator = evaluate.Evaluator.from_trainer(trainer)

        def checkpoint(state, force=False):
            epoch, batch = divmod(int(state.step), trainer.steps_per_epoch)
            store.save(int(state.step), state, {"step": int(state.step), "epoch": epoch,
                                                "batch": batch}, force=force)

        batches = trainer.batches(step)
        last_time, last_step = time.time(), step
        # The first non-finite step, kept on the device (no host sync per step); checked
        # before anything is logged or saved, so no checkpoint follows a skipped step.
        first_bad = jnp.asarray(0, jnp.int32)
        while step < trainer.total_steps:
            batch = next(batches)
            state, metrics = trainer.train_step(state, batch, trainer.rng, trainer.frozen)
            step += 1
            first_bad = jnp.where((first_bad == 0) & ~metrics["finite"], step, first_bad)
            log_now = step % config.log_every_steps == 0 or step == trainer.total_steps
            # The loop waits for the devices only at these steps, the same on every host.
            sync_step = log_now or step % config.checkpoint_every_steps == 0
            if sync_step and int(first_bad):
                raise NonFiniteError(
                    f"step {int(first_bad)}: the loss or gradient norm is not finite; the step "
                    f"was not applied and the last good checkpoint is kept")
            if log_now:
                metrics = jax.device_get(metrics)
                elapsed = time.time() - last_time
                rate = (step - last_step) / max(elapsed, 1e-9)
                logger.write(step, {"loss": float(metrics["loss"]),
                                    "learning_rate": float(metrics["lr"]),
                                    "grad_norm": float(metrics["grad_norm"]),
                                    "steps_per_s": rate,
                                    "clips_per_s": rate * config.input.batch_size})
                last_time, last_step = time.time(), step
            if step % config.checkpoint_every_steps == 0:
                checkpoint(state)
            if config.eval_every_epochs and step % (
                    trainer.steps_per_epoch * config.eval_every_epochs) == 0:
                results = evaluator.run(state, "test")
                logger.write(step, {f"eval/{k}": v for k, v in evaluate.headline(results).items()})
            if preemption.agreed(sync_step):
                if int(first_bad):
                    raise NonFiniteError(f"step {int(first_bad)}: not finite; not saved")
                checkpoint(state, force=True)
                store.wait()
                return {"preempted_at": step}
        checkpoint(state, force=True)
        store.wait()
        results = evaluator.run(state, "test", report_dir=os.path.join(workdir, "eval"))
        logger.plot_curves()
        return results


class NonFiniteError(UserError, FloatingPointError):
    """A step's loss or gradient norm is not finite: the run stops, its checkpoints kept."""


def untrained_results(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The same evaluation on the freshly initialised model, for contrast."""
    from vtfpar_jax.evaluation import evaluate
    trainer = Trainer(config, workdir)
    return evaluate.Evaluator.from_trainer(trainer).run(trainer.state, "test")


def checkpoints_kept(workdir: str) -> str:
    """What a stop leaves in `workdir`, asked once its cleanup has run (an asynchronous
    checkpoint write has ended): the complete checkpoints, or none."""
    # Orbax's own list of its complete checkpoints: one in flight has a suffix.
    steps = sorted(ocp.utils.checkpoint_steps(os.path.join(workdir, "checkpoints")))
    if not steps:
        return f"no checkpoint had been written in {workdir}; rerun the same command to start"
    return (f"the checkpoints of steps {', '.join(map(str, steps))} are kept in {workdir}; "
            "rerun the same command to resume from the newest")


def preempted(step: int, workdir: str) -> NoReturn:
    """End a preempted run as `terminated:`, exit 143: a scheduler's restart-on-failure
    policy (SLURM --requeue, Kubernetes, a TPU VM's restart loop) then reruns it, and
    `vtfpar train && vtfpar evaluate` does not go on with an unfinished model."""
    stop_signals.on_stop(f"preempted at step {step}, its checkpoint saved in {workdir}; rerun "
                       "the same command to resume")
    raise stop_signals.Terminated()


def _usage(flag_values) -> str:
    """What `vtfpar train --help` prints: the flags a run needs and the override form (absl's
    own --help lists only the flags of the `__main__` module, none of these)."""
    rows = [("--config FILE[:ARG]", flag_values["config"].help),
            ("--config.FIELD=VALUE", "set one field of the config, e.g. "
             "--config.optimizer.lr=3e-4 --config.num_epochs=2 (a field the file does not "
             "have is refused, naming the nearest)"),
            ("--workdir DIR", flag_values["workdir"].help),
            ("--allow_config_change", flag_values["allow_config_change"].help),
            ("--verbose", flag_values["verbose"].help),
            ("--helpfull", "every flag, absl's own included")]
    width = max(len(form) for form, _ in rows)
    wrap = textwrap.TextWrapper(width=92, subsequent_indent=" " * (width + 4))
    return ("usage: vtfpar train --config FILE[:ARG] --workdir DIR [--config.FIELD=VALUE ...]\n"
            "                    [--allow_config_change] [--verbose]\n\n"
            "Train a model into a work dir from a config file; the same command resumes it.\n\n"
            + "\n".join(wrap.fill(f"  {form:<{width}}  {text}") for form, text in rows))


_HELP = ("-h", "-?", "-help", "--help", "--helpshort")


def main(argv=None):
    from absl import app, flags
    from ml_collections import config_flags

    flags_ = flags.FLAGS
    config_flags.DEFINE_config_file(
        "config", None, "a configs/<name>.py file, with the argument of its get_config after "
        "':' (e.g. configs/demo.py:smoke)")
    flags.DEFINE_string("workdir", None, "the run's folder: config, checkpoints, logs, the "
                        "backbone's copy; a new one, or the same one to resume")
    flags.DEFINE_bool("allow_config_change", False,
                      "restart a work dir with a config that differs in more than the run's "
                      "length, data dir and log/eval/checkpoint cadence (recorded in "
                      "config_changes.jsonl)")
    flags.DEFINE_bool("verbose", False, "library logging (JAX, Orbax, TFDS) at INFO")

    def train(_):
        sharding.initialize_distributed()
        # SIGTERM while training checkpoints then stops (Preemption); Ctrl-C keeps the
        # checkpoints already written.
        stop_signals.on_stop(lambda: checkpoints_kept(flags_.workdir))
        results = train_and_evaluate(flags_.config, flags_.workdir,
                                     flags_.allow_config_change)
        if "preempted_at" in results:
            preempted(results["preempted_at"], flags_.workdir)
        from vtfpar_jax.evaluation import evaluate
        print(evaluate.summary_line(results))

    def run(_):
        cli_errors.run(lambda: train(_), verbose=flags_.verbose)

    def usage_error(message: str):
        print(f"error: {message}\n\n{_usage(flags_)}", file=sys.stderr)
        sys.exit(2)

    def parse_flags(argv):
        options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
        if any(arg in _HELP for arg in options):
            print(_usage(flags_))
            sys.exit(0)
        try:  # absl's own error for a --config.<field> typo is a KeyError traceback
            check_config_overrides(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        try:
            rest = flags_(argv)
        except flags.Error as e:
            usage_error(str(e).splitlines()[0])
        missing = [f"--{name}" for name in ("config", "workdir") if flags_[name].value is None]
        if missing:
            usage_error(f"{' and '.join(missing)} must be given")
        if rest[1:]:
            usage_error(f"unexpected argument {rest[1]!r}")
        return rest

    args = sys.argv[1:] if argv is None else list(argv)
    app.run(run, ["vtfpar train", *args], flags_parser=parse_flags)   # absl: argv[0] names us
