"""One process at a time on a folder: an flock on a lock file that names its holder's pid.

The OS drops an flock when its holder dies, even by kill -9, so a lock left by a dead
process is taken over by the next run without anyone removing it. The holder writes
`pid N` into the file, so a refused run can say who holds it.

The file is removed on release, so that a finished run leaves nothing beside its output.
Removing a lock file races with a run that opened it just before: that run would lock the
removed file while a third locks a new one. So a run that got the flock checks that the
path still names the file it locked, and else tries again on the new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable


class PidLock(contextlib.AbstractContextManager):
    """The lock at `path`, taken now; else `busy(holder)` is raised (holder: 'pid N')."""

    def __init__(self, path: str, busy: Callable[[str], Exception]):
        self.path = path
        while True:
            file = open(path, "a+")  # noqa: SIM115 - held for the holder's lifetime
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "another process"
                file.close()
                raise busy(holder) from None
            if _same_file(file, path):
                break
            file.close()   # released and removed meanwhile: lock the file now at `path`
        file.truncate(0)
        file.write(f"pid {os.getpid()}")
        file.flush()
        self.file = file

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Remove the file and drop the lock; a second call does nothing."""
        if self.file.closed:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)   # before the unlock, so no one locks a file about to go
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _same_file(file, path: str) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(file.fileno()))
    except FileNotFoundError:
        return False
