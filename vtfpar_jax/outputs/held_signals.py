"""Ctrl-C and SIGTERM held off for a few steps that must finish together (a folder swap).

A stop signal that arrives inside the block is recorded and delivered to the handler that
was in place once the block is over, as if it had come just after: the steps either all run
or, if one fails, the block's own recovery runs, never half of them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """SIGINT and SIGTERM delivered only when the block ends (main thread only: Python runs
    signal handlers there alone, so in another thread they already wait for it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    # A handler installed from C (getsignal gives None) cannot be put back from Python: that
    # signal is left as it is.
    previous = {number: handler for number in STOP_SIGNALS
                if (handler := signal.getsignal(number)) is not None}
    for number in previous:
        signal.signal(number, lambda number, frame: arrived.append(number))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(arrived):
            signal.raise_signal(number)
