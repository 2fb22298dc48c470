"""One training run per work dir. The lock is an flock on `workdir/.lock`, which the OS
releases when the holder dies, so a killed run never blocks the next one (`outputs.pid_lock`,
as for a command's --out). A multi-host run takes it in process 0 only (`lock_workdir`);
which file systems it protects is in docs/reliability.md.
"""

from __future__ import annotations

import os

import jax

from vtfpar_jax.errors import UserError
from vtfpar_jax.outputs import pid_lock
from vtfpar_jax.training import preemption


class WorkdirBusyError(UserError, RuntimeError):
    """Another run holds the work dir's lock."""


class WorkdirLock(pid_lock.PidLock):
    def __init__(self, workdir: str):
        super().__init__(os.path.join(workdir, ".lock"), lambda holder: WorkdirBusyError(
            f"{workdir} is in use by {holder}: one training process per work dir (the lock "
            "goes away when that process ends)"))


def lock_workdir(workdir: str) -> WorkdirLock | None:
    """The work dir's lock, taken by process 0 for the whole run (None elsewhere).

    One holder per run: the other hosts of a multi-host run write to the same
    shared work dir and must not be refused by process 0's lock. They learn
    whether process 0 got it, so that all stop together when it did not.
    """
    lock, refusal = None, ""
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir)
        except WorkdirBusyError as e:
            refusal = str(e)
    if jax.process_count() > 1 and preemption.any_process(bool(refusal)) and not refusal:
        refusal = f"{workdir} is in use: process 0 could not lock it (see its log)"
    if refusal:
        raise WorkdirBusyError(refusal)
    return lock
