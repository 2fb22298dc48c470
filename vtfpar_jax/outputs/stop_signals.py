"""Ctrl-C (SIGINT) and SIGTERM: raised only where they can stop the command, held elsewhere.

Python runs a signal's handler in the main thread at the next bytecode. Where that belongs
to a gc callback (JAX's `_xla_gc_callback`), a `__del__` or a weakref callback, CPython drops
the exception the handler raises and the stop is lost (how often, measured:
docs/reliability.md, "Clean stops"). So one handler, `_handle`:
- records the stop without raising where an exception is lost or does harm (those callbacks,
  an import) and inside a `held()` block (steps that must finish together: the --out swap).
  The stop is acted on at the end of the `held()` block and, inside `watching_stops` (which
  `cli_errors.run` opens), by a short-lived daemon thread that sends the signal again, soon
  and then about every second, until the stop reaches the command's end; that thread also
  catches a stop dropped anyway or swallowed by a library;
- ignores a stop signal while a stop unwinds the command (a second Ctrl-C lets its cleanup
  finish), and every one once the stop has reached the command's end (`delivered`).

What a stop leaves, and how to go on, is kept here too (`on_stop`); `cli_errors` prints it
after `interrupted:` or `terminated:`.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The first resend comes soon (a gc callback ends within microseconds); then about every
# second while the stop has still not reached the command's end.
FIRST_RESEND_S = 0.1
RESEND_EVERY_S = 1.0

RERUN = "nothing was written; rerun the same command"
_stop_message: str | Callable[[], str] = RERUN


def on_stop(message: str | Callable[[], str]) -> None:
    """What a stop now would leave, and how to go on: printed after `interrupted:`.

    A callable is asked at the stop, for a line that depends on what is on disk then.
    """
    global _stop_message
    _stop_message = message


def results_in_place(folder: str) -> None:
    """A command's results are now complete in `folder` (the --out swap says so): a stop
    from here on says that."""
    on_stop(f"the results are complete in {folder}")


def stop_line() -> str:
    """What a stop leaves, as `on_stop` last said it."""
    return _stop_message() if callable(_stop_message) else _stop_message


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, like KeyboardInterrupt by SIGINT."""


STOP_EXCEPTIONS = (KeyboardInterrupt, Terminated)
_RAISES = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}


def signal_of(stop: BaseException) -> signal.Signals:
    """The signal a stop exception stands for."""
    return signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM


# A stop signal that came and has not reached the command's end (None: none did).
_came: signal.Signals | None = None
# The stop reached the command's end: nothing is raised any more.
_delivered = False
# How many `watching_stops` blocks are open (the CLI's whole process holds one, `run` another).
_watchers = 0
# How many `held` blocks are open: a stop is recorded, not raised, until the last ends.
_holding = 0
# Held while the resender decides to send and sends, and while a stop is marked delivered,
# so that nothing is sent after that.
_lock = threading.Lock()
# Each command (each `reset`) is a new generation; a resender serves its own only.
_generation = 0
_resender: threading.Thread | None = None
_resender_generation = -1


def stop_came() -> signal.Signals | None:
    """The stop signal that came and has not reached the command's end, if one did."""
    return _came


def reset(keep_pending: bool = False) -> None:
    """A new command starts: no stop has come, or (`keep_pending`) only the one that came
    before it and has not reached its end (held during an import), which is sent again."""
    global _came, _delivered, _generation
    with _lock:
        _came = _came if keep_pending and not _delivered else None
        _delivered = False
        _generation += 1
    if _came is not None:
        _resend_until_delivered()


def delivered() -> None:
    """The stop has reached the command's end: send nothing more, raise nothing more."""
    global _came, _delivered
    with _lock:
        _came, _delivered = None, True


def _handle(signum, frame) -> None:
    global _came
    signum = signal.Signals(signum)
    # A stop exception being handled now: a `finally`, an `except`, a `with` exit unwinding.
    if _delivered or isinstance(sys.exception(), STOP_EXCEPTIONS):
        return
    _came = signum
    _resend_until_delivered()
    if not (_holding or _drops_exceptions(frame)):
        raise _RAISES[signum]()


def _drops_exceptions(frame) -> bool:
    """Whether `frame` runs inside code where an exception is lost or does harm: a gc
    callback or a `__del__`, whose exceptions CPython reports and discards (a weakref
    callback is caught by the unraisable hook instead), or an import. A KeyboardInterrupt
    inside an extension module's initialisation (jaxlib's MLIR, numpy) became an
    ImportError traceback, or an abort (exit -6) (docs/reliability.md, "Clean stops")."""
    callbacks = {getattr(getattr(c, "__func__", c), "__code__", None) for c in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if (code in callbacks or code.co_name == "__del__"
                or code.co_filename.startswith("<frozen importlib._bootstrap")):
            return True
        frame = frame.f_back
    return False


def _resend_until_delivered() -> None:
    global _resender, _resender_generation
    if (_resender is not None and _resender.is_alive()
            and _resender_generation == _generation):
        return
    _resender_generation = _generation
    _resender = threading.Thread(target=_resend, args=(_generation,),
                                 name="vtfpar-stop-resender", daemon=True)
    _resender.start()


def _resend(generation: int) -> None:
    wait = FIRST_RESEND_S
    while True:
        time.sleep(wait)
        wait = RESEND_EVERY_S
        with _lock:
            if _came is None or _delivered or not _watchers or _generation != generation:
                return
            signal.pthread_kill(threading.main_thread().ident, _came)


def _unraisable(unraisable, previous=None) -> None:
    """A stop raised where CPython dropped it: already being sent again; say nothing of it."""
    global _came
    if isinstance(unraisable.exc_value, STOP_EXCEPTIONS) and not _delivered:
        _came = _came or signal_of(unraisable.exc_value)
        _resend_until_delivered()
        return
    (previous or sys.__unraisablehook__)(unraisable)


@contextlib.contextmanager
def watching_stops(restore: bool = True) -> Iterator[None]:
    """Stop signals handled as the module docstring says, inside the block.

    SIGINT is handled only where it raises KeyboardInterrupt now (a background job starts
    with it ignored, and it stays ignored). `restore=False`: the handlers stay after the
    block (the process ends after it, and a late signal is ignored, not raised).
    """
    global _watchers
    previous_term = signal.signal(signal.SIGTERM, _handle)
    previous_int = signal.getsignal(signal.SIGINT)
    watch_int = previous_int in (signal.default_int_handler, _handle)
    if watch_int:
        signal.signal(signal.SIGINT, _handle)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: _unraisable(unraisable, previous_hook)
    _watchers += 1
    try:
        yield
    finally:
        with _lock:
            _watchers -= 1
        if restore:
            sys.unraisablehook = previous_hook
            signal.signal(signal.SIGTERM, previous_term)
            if watch_int:
                signal.signal(signal.SIGINT, previous_int)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """SIGINT and SIGTERM held off for steps that must finish together (a folder swap): a
    stop inside the block is recorded by `_handle` and acted on once the block is over, by
    the handler in place before it, as if it had come just after. The steps either all run
    or, if one fails, the block's own recovery runs, never half of them.

    Main thread only: Python runs signal handlers there alone, so in another thread they
    already wait for it."""
    global _holding
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _watchers:   # no command is watching: what an earlier one left says nothing now
        reset()
    # A handler installed from C (getsignal gives None) cannot be put back from Python: that
    # signal is left as it is.
    previous = {number: handler for number in STOP_SIGNALS
                if (handler := signal.getsignal(number)) not in (None, _handle)}
    for number in previous:
        signal.signal(number, _handle)
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        for number, handler in previous.items():
            signal.signal(number, handler)
        came = _came
        if came is not None and not _holding:
            if signal.getsignal(came) is not _handle:
                reset()   # the stop is the previous handler's from here on
            signal.raise_signal(came)
