"""SIGTERM (a preemption notice) during training: checkpoint, then stop, on every host at the
same step."""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np


class Preemption:
    """SIGTERM (a preemption notice) asks the loop to checkpoint and stop.

    The handler only sets a flag: no host sync on any step. One process reads
    its flag after every step. Several processes must stop at the same step, so
    they share their flags only at `sync_step`s (log and checkpoint steps, where
    the loop waits for the devices anyway): one small all-gather there, none on
    the steps between. `close()` puts the previous SIGTERM handler back.
    """

    def __init__(self):
        self.requested = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        else:  # signal handlers can only be set from the main thread
            logging.warning("training outside the main thread: SIGTERM will not checkpoint")

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint and stopping")
        self.requested = True

    def agreed(self, sync_step: bool) -> bool:
        """Whether every process stops now (True on all of them, or on none)."""
        if jax.process_count() == 1:
            return self.requested
        return sync_step and any_process(self.requested)

    def close(self):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is True on any (a collective: all must call it)."""
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
