"""How every command ends when it does not finish: one line, an exit status, no traceback.

- a `UserError` (bad input): `error: <its first line>` (and the lines after it where
  they say how to fix it: `UserError.how_to_fix_follows`), exit 1;
- Ctrl-C (SIGINT): `interrupted: <what was kept, how to resume or rerun>`, exit 130;
- SIGTERM: `terminated: <the same>`, exit 143 (128 + the signal, as a shell reports it).
Anything else is a bug and keeps its traceback, unless it came after Ctrl-C or SIGTERM:
then it is how a library's C code let the signal out (see `_stopped_by`), and the stop's
line is printed as for the signal itself.

A command's main parses its arguments, then hands its body to `run`. While it
works, the body says what an interruption would leave with `on_stop(...)`, so
the line is true at every moment (e.g. "the 3 cells done are kept"). Training
sets its own SIGTERM handler while it trains (checkpoint, then stop); `run`
only answers SIGTERM outside that.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from vtfpar_jax.errors import UserError

T = TypeVar("T")

RERUN = "nothing was written; rerun the same command"
_stop_message = RERUN
# The stop signal that came during `run`'s body, if one did.
_stopped_by: signal.Signals | None = None

# Library loggers that speak at INFO/DEBUG about their own work (absl: JAX, Orbax, TFDS;
# jax2onnx and onnx_ir: every op converted): WARNING unless --verbose.
_CHATTY = ("absl", "jax2onnx", "onnx_ir", "jax", "orbax", "tensorflow")


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, like KeyboardInterrupt by SIGINT."""


def _terminate(signum, frame) -> NoReturn:
    global _stopped_by
    _stopped_by = signal.SIGTERM
    raise Terminated()


def _interrupt(signum, frame) -> NoReturn:
    """Python's own SIGINT handler, remembering that it ran.

    The handler raises inside whatever Python code runs next, and that may be a callback
    of a C extension which reads any error as an answer. dm-tree (under TFDS's
    `as_dataset`) does: a Ctrl-C during its mapping check became "AttributeError: 'str'
    object has no attribute 'keys'", a traceback and exit 1 instead of `interrupted:`.
    """
    global _stopped_by
    _stopped_by = signal.SIGINT
    raise KeyboardInterrupt


def on_stop(message: str) -> None:
    """What a stop now would leave, and how to go on: printed after `interrupted:`."""
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
    global _stopped_by
    _stopped_by = None
    on_stop(RERUN)
    set_verbosity(verbose)
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    # An ignored SIGINT (a background job) stays ignored.
    watch_int = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if watch_int:
        signal.signal(signal.SIGINT, _interrupt)
    try:
        return body()
    except KeyboardInterrupt:
        _exit_stopped(signal.SIGINT)
    except Terminated:
        _exit_stopped(signal.SIGTERM)
    except Exception as e:
        if _stopped_by is not None:
            _exit_stopped(_stopped_by)
        if isinstance(e, UserError):
            message = str(e) or type(e).__name__
            _exit(1, f"error: {message if e.how_to_fix_follows else message.splitlines()[0]}")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if watch_int:
            signal.signal(signal.SIGINT, signal.default_int_handler)


_STOP_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
STOP_STATUSES = frozenset(128 + signum for signum in _STOP_WORDS)   # 130, 143


def _exit_stopped(signum: signal.Signals) -> NoReturn:
    _exit(128 + signum, f"{_STOP_WORDS[signum]}: {_stop_message}", mid_line=True)


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
