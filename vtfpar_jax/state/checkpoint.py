"""Orbax checkpoints of a training run: asynchronous, keep-N plus every K-th, resumable.

Layout of a work dir:
    config.json          the resolved config (written once, before training)
    backbone/            the frozen backbone in HuggingFace format (safetensors; clip/ in a
                         model dir made before it was called so)
    checkpoints/<step>/  {state: step, trainable params, BN stats, optimiser state;
                          meta: step, epoch, batch in epoch (the data position)}
Restoring walks back from the newest step: a checkpoint that fails to load is
reported by step and left on disk, and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from vtfpar_jax.errors import UserError, reason
from vtfpar_jax.state import old_names

RETRY_WAIT_S = 30.0   # between a failed checkpoint write and its retry


class NoCheckpointError(UserError, FileNotFoundError):
    """A model dir without any loadable checkpoint."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint write failed (e.g. disk full); the complete earlier ones are kept."""


class CheckpointStore:
    """The checkpoints of one work dir."""

    def __init__(self, workdir: str, keep: int = 3, keep_every: int | None = None,
                 async_save: bool = True, retries: int = 0):
        self.retries = retries
        self.unreadable: list[str] = []
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=keep_every, create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> bool:
        """Start writing `step` (asynchronously); a step already on disk is left as it is.

        A failed write (e.g. disk full) is retried `retries` times, `RETRY_WAIT_S`
        apart, then reported; complete earlier checkpoints are never touched.
        """
        for attempt in range(self.retries + 1):
            if step in self.manager.all_steps():
                return False
            try:
                return self.manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=force)
            except OSError as e:  # e.g. ENOSPC; an earlier asynchronous write may surface here
                if attempt == self.retries:
                    raise CheckpointWriteError(
                        e.errno, f"checkpoint at step {step} (or the write still in flight "
                        f"before it) failed in {self.directory}: {e.strerror or e}; the "
                        f"complete checkpoints {self.steps()} are kept") from e
                logging.warning("checkpoint at step %d failed (%s); retry %d of %d in %.0f s",
                                step, e, attempt + 1, self.retries, RETRY_WAIT_S)
                time.sleep(RETRY_WAIT_S)
        raise AssertionError("unreachable")

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, abstract_state: Any, step: int | None = None,
                announce: bool = True, partial: bool = False) -> tuple[Any, dict]:
        """(state, meta) of `step`, or of the newest checkpoint that loads.

        `partial`: `abstract_state` is a dict of some of the saved state's fields (inference
        restores no optimiser state), and only those are read.

        The newer checkpoints that could not be read are left in `self.unreadable`
        ("step N (why)"); `announce` logs them in training's words (resuming), while
        inference says it in its own.
        """
        candidates = [step] if step is not None else self.steps()[::-1]
        if not candidates:
            raise NoCheckpointError(f"{self.directory}: no checkpoint")
        errors = self.unreadable = []
        for s in candidates:
            try:
                # A checkpoint of earlier code holds the backbone's params under 'clip'.
                earlier = old_names.holds_old_params_key(self._saved_tree(s))
                target = (old_names.params(abstract_state, old_names.PARAMS_KEY,
                                           old_names.OLD_PARAMS_KEY)
                          if earlier else abstract_state)
                state = (ocp.args.PyTreeRestore(
                    target, partial_restore=True,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target))
                    if partial else ocp.args.StandardRestore(target))
                restored = self.manager.restore(s, args=ocp.args.Composite(
                    state=state, meta=ocp.args.JsonRestore()))
                if errors and announce:
                    logging.warning("resumed from step %d; newer checkpoint(s) unreadable and "
                                    "left on disk: %s", s, "; ".join(errors))
                state = old_names.params(restored["state"]) if earlier else restored["state"]
                return state, dict(restored["meta"])
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
                errors.append(f"step {s} ({reason(e)[:200]})")
                if announce:
                    logging.warning("checkpoint at step %d is unreadable: %s", s, errors[-1])
        raise NoCheckpointError(f"{self.directory}: no readable checkpoint: {'; '.join(errors)}")

    def _saved_tree(self, step: int) -> Any:
        """The tree checkpoint `step` holds, as nested dicts of array metadata.

        Read by the item's handler: a `PyTreeCheckpointer` also looks for a step's metadata
        file in the item's folder and logs an absl WARNING on every load that it is not
        there. `epath` is Orbax's own path type (a gs:// work dir too)."""
        from etils import epath
        return ocp.PyTreeCheckpointHandler().metadata(
            epath.Path(self.directory) / str(step) / "state").tree

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()


def abstract(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """ShapeDtypeStructs to restore onto (with the target sharding)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
