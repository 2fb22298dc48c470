"""How every command ends when it does not finish: one line, an exit status, no traceback.

- a `UserError` (bad input): `error: <its first line>` (and the lines after it where
  they say how to fix it: `UserError.how_to_fix_follows`), exit 1;
- Ctrl-C (SIGINT): `interrupted: <what was kept, how to resume or rerun>`, exit 130;
- SIGTERM: `terminated: <the same>`, exit 143 (128 + the signal, as a shell reports it);
- a full disk or quota (`OSError` ENOSPC, EDQUOT): `error: <path>: <why> (<free space
  there>); <what was kept, how to go on>`, exit 1.
Anything else is a bug and keeps its traceback, unless it came after Ctrl-C or SIGTERM
and before that stop reached `run`: then it is how a library's C code let the signal out,
and the stop's line is printed as for the signal itself. dm-tree (under TFDS's
`as_dataset`) turned a Ctrl-C during its mapping check into "AttributeError: 'str' object
has no attribute 'keys'" (a CI run saw that traceback and exit 1). The stop signals' handler
makes sure the stop does reach `run` (below), so no later error is relabelled.

A command's main parses its arguments, then hands its body to `run`. While it
works, the body says what an interruption would leave with `on_stop(...)`, so
the line is true at every moment (e.g. "the 3 cells done are kept"). Training
sets its own SIGTERM handler while it trains (checkpoint, then stop, then `Terminated`);
`run` only answers SIGTERM outside that.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

from vtfpar_jax.errors import UserError

T = TypeVar("T")

RERUN = "nothing was written; rerun the same command"
_stop_message: str | Callable[[], str] = RERUN
# `run`'s body has returned: a stop after it comes when the command's work is done.
_finished = False
# The process ends after a stop (`vtfpar`, `cli.entry`): stop signals stay handled (and
# ignored) after `run`, until it has ended.
_process_ends_after_stop = False

# Library loggers that speak at INFO/DEBUG about their own work (absl: JAX, Orbax, TFDS;
# jax2onnx and onnx_ir: every op converted): WARNING unless --verbose.
_CHATTY = ("absl", "jax2onnx", "onnx_ir", "jax", "orbax", "tensorflow")


def on_stop(message: str | Callable[[], str]) -> None:
    """What a stop now would leave, and how to go on: printed after `interrupted:`.

    A callable is asked at the stop, for a line that depends on what is on disk then.
    """
    global _stop_message
    _stop_message = message


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="library logging (JAX, Orbax, TFDS, jax2onnx) at INFO")


class _DropMessages(logging.Filter):
    """Drops library warnings about the library's own use of its API."""

    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


# TFDS's own decoders read TensorInfo.dtype (tensorflow_datasets/core/decode/base.py) and
# warn of it on every dataset they decode: twice per robustness cell.
_TFDS_INTERNALS = _DropMessages("`TensorInfo.dtype` is deprecated")


def set_verbosity(verbose: bool) -> None:
    """Our own messages always; the libraries' INFO/DEBUG lines only with --verbose."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s:%(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    logging.getLogger("vtfpar_jax").setLevel(logging.INFO)   # ours: a run's steps, its resume
    for name in _CHATTY:
        logging.getLogger(name).setLevel(level)
    # TensorFlow's deprecation notices about its own internals (map_fn's dtype) are not
    # the user's to act on.
    logging.getLogger("tensorflow").setLevel(level if verbose else logging.ERROR)
    absl_logger = logging.getLogger("absl")
    if verbose:
        absl_logger.removeFilter(_TFDS_INTERNALS)
    else:
        absl_logger.addFilter(_TFDS_INTERNALS)   # once: a filter is added only if absent
    try:   # absl keeps its own verbosity beside the logging module's
        from absl import logging as absl_logging
        absl_logging.set_verbosity("info" if verbose else "warning")
    except ImportError:
        pass


def fail(message: str) -> NoReturn:
    """Bad input found by a command itself: the same one line as a `UserError`."""
    raise UserError(message)


def run(body: Callable[[], T], verbose: bool = False) -> T:
    """`body()`, ending as the module docstring says when it does not finish."""
    global _finished
    _reset_stops(keep_pending=_process_ends_after_stop)
    _finished = False
    on_stop(RERUN)
    set_verbosity(verbose)
    with watching_stops(restore=not _process_ends_after_stop):
        try:
            result = body()
        except STOP_EXCEPTIONS as e:
            _exit_stopped(signal.SIGINT if isinstance(e, KeyboardInterrupt) else signal.SIGTERM)
        except Exception as e:
            came = stop_came()
            if came is not None:   # a library's own error for the stop (see the docstring)
                _exit_stopped(came)
            if isinstance(e, UserError):
                message = str(e) or type(e).__name__
                _exit(1, f"error: {message if e.how_to_fix_follows else message.splitlines()[0]}")
            if isinstance(e, OSError) and e.errno in NO_SPACE:
                _exit(1, no_space_line(e))
            raise
        _finished = True
        _reset_stops()   # a stop that came as the body returned: the work is done
        return result


def end_process_after_stop() -> None:
    """This process ends after a stop (`cli.entry`): stop signals stay handled after `run`,
    and ignored once a stop has reached its end."""
    global _process_ends_after_stop
    _process_ends_after_stop = True


def stopped_outside_run(stop: BaseException) -> NoReturn:
    """A stop that came before `run` started or after its body returned: its line and status."""
    _stop_delivered()
    signum = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM
    on_stop("the command had finished; its results are complete" if _finished else RERUN)
    _exit_stopped(signum)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space_line(e: OSError) -> str:
    """A full disk or quota: where, how much is free there, and what the stop keeps."""
    where = f"{e.filename}: " if e.filename else ""
    return f"error: {where}{e.strerror} ({_free_space(e.filename)}); {_stop_line()}"


def _free_space(path: str | None) -> str:
    if not path:
        return "the file is not known"
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"free space on {folder} unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if free < 1000 or unit == "GB":
            break
        free /= 1000
    return f"{free:.0f} {unit} free on {folder}" if unit == "bytes" else \
        f"{free:.1f} {unit} free on {folder}"


_STOP_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
STOP_STATUSES = frozenset(128 + signum for signum in _STOP_WORDS)   # 130, 143


def _stop_line() -> str:
    return _stop_message() if callable(_stop_message) else _stop_message


def _exit_stopped(signum: signal.Signals) -> NoReturn:
    _stop_delivered()
    _exit(128 + signum, f"{_STOP_WORDS[signum]}: {_stop_line()}", mid_line=True)


def _exit(status: int, line: str, mid_line: bool = False) -> NoReturn:
    """Print `line` alone on stderr and exit. `mid_line`: a signal may have come while a
    progress bar was drawn without its newline, so start a new line unless a bar that
    was still open has just cleared or ended its own (then from its first column: a
    nested bar leaves the cursor where its text ended)."""
    ended = _end_progress_bars()
    sys.stdout.flush()
    fresh = "\r" if ended else "\n" if mid_line and "tqdm" in sys.modules else ""
    print(fresh + line, file=sys.stderr, flush=True)
    sys.exit(status)


def _end_progress_bars() -> bool:
    """Close the tqdm bars still open (each clears or ends its line); whether there were any."""
    tqdm = sys.modules.get("tqdm")
    bars = list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()))
    for bar in bars:
        bar.close()
    return bool(bars)


# --- stop signals ----------------------------------------------------------------------
# Ctrl-C (SIGINT) and SIGTERM reach the command, wherever the main thread is when they come.
#
# Python runs a signal's handler in the main thread at the next bytecode it executes, and a
# stop handler raises there (KeyboardInterrupt, `Terminated`). Where that bytecode belongs to a
# garbage-collection callback, a `__del__` or a weakref callback, CPython reports the exception
# as unraisable ("Exception ignored in: ...") and goes on: the stop is lost. JAX registers a gc
# callback (`jax/_src/lib/__init__.py`: `_xla_gc_callback`), and the first Python code to run
# after a long XLA call is often that callback, so a third of interrupted evaluate, predict and
# robustness runs used to finish as if no Ctrl-C had come.
#
# So the handler:
# - raises only where the exception propagates harmlessly; inside a gc callback, a `__del__`
#   or an import (an extension module's initialisation turns it into an ImportError or an
#   abort) it records the stop and does not raise;
# - ignores a stop signal while a stop is already unwinding the command (its `finally` blocks
#   and `with` exits: a checkpoint write being waited for, an atomic rename), so a second
#   Ctrl-C lets that cleanup finish;
# - ignores every stop signal once the stop has reached the command's end (`_stop_delivered`).
# A stop that came and has not reached the end is sent again to the main thread, soon and then
# about every second, by a short-lived daemon thread, until it does: the stop recorded in a gc
# callback, one raised where it was then dropped anyway (the unraisable hook sees it and keeps
# quiet about it), one that a library caught and swallowed.

# The first resend comes soon (a gc callback ends within microseconds); then about every
# second while the stop has still not reached the command's end.
FIRST_RESEND_S = 0.1
RESEND_EVERY_S = 1.0


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, like KeyboardInterrupt by SIGINT."""


STOP_EXCEPTIONS = (KeyboardInterrupt, Terminated)
_RAISES = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}

# A stop signal that came and has not reached the command's end (None: none did).
_came: signal.Signals | None = None
# The stop reached the command's end: nothing is raised any more.
_delivered = False
# How many `watching_stops` blocks are open (the CLI's whole process holds one, `run` another).
_watchers = 0
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


def _reset_stops(keep_pending: bool = False) -> None:
    """A new command starts: no stop has come, or (`keep_pending`) only the one that came
    before it and has not reached its end (held during an import), which is sent again."""
    global _came, _delivered, _generation
    with _lock:
        _came = _came if keep_pending and not _delivered else None
        _delivered = False
        _generation += 1
    if _came is not None:
        _resend_until_delivered()


def _stop_delivered() -> None:
    """The stop has reached the command's end: send nothing more, raise nothing more."""
    global _came, _delivered
    with _lock:
        _came, _delivered = None, True


def stop_unwinding() -> bool:
    """Whether a stop exception is being handled now (a `finally`, an `except`, a `with` exit
    on its way out)."""
    return isinstance(sys.exception(), STOP_EXCEPTIONS)


def _handle(signum, frame) -> None:
    global _came
    signum = signal.Signals(signum)
    if _delivered or stop_unwinding():
        return
    _came = signum
    _resend_until_delivered()
    if not _drops_exceptions(frame):
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
        signum = (signal.SIGINT if isinstance(unraisable.exc_value, KeyboardInterrupt)
                  else signal.SIGTERM)
        _came = _came or signum
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
