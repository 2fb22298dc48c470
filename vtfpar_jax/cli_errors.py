"""How every command ends when it does not finish: one line, an exit status, no traceback.

- a `UserError` (bad input): `error: <its first line>` (and the lines after it where
  they say how to fix it: `UserError.how_to_fix_follows`), exit 1;
- Ctrl-C (SIGINT): `interrupted: <what was kept, how to resume or rerun>`, exit 130;
- SIGTERM: `terminated: <the same>`, exit 143 (128 + the signal, as a shell reports it);
- a full disk or quota (`OSError` ENOSPC, EDQUOT): `error: <path>: <why> (<free space
  there>); <what was kept, how to go on>`, exit 1.
Anything else is a bug and keeps its traceback, unless it came after Ctrl-C or SIGTERM
and before that stop reached `run`: then it is how a library's C code let the signal out
(dm-tree's, docs/reliability.md "Clean stops"), and the stop's line is printed as for the
signal itself. `outputs/stop_signals.py` makes sure the stop does reach `run`, so no later
error is relabelled.

A command's main parses its arguments (the options several share: `add_model_options`,
`add_dataset_options`, `add_out_options`), then hands its body to `run`. While it works,
the body says what an interruption would leave with `stop_signals.on_stop(...)`, so the
line is true at every moment (e.g. "the 3 cells done are kept"). Training
sets its own SIGTERM handler while it trains (checkpoint, then stop, then `Terminated`);
`run` only answers SIGTERM outside that.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from vtfpar_jax.errors import UserError
from vtfpar_jax.outputs import stop_signals

T = TypeVar("T")

# `run`'s body has returned: a stop after it comes when the command's work is done.
_finished = False
# The process ends after a stop (`vtfpar`, `cli.entry`): stop signals stay handled (and
# ignored) after `run`, until it has ended.
_process_ends_after_stop = False

# Library loggers that speak at INFO/DEBUG about their own work (absl: JAX, Orbax, TFDS;
# jax2onnx and onnx_ir: every op converted): WARNING unless --verbose.
_CHATTY = ("absl", "jax2onnx", "onnx_ir", "jax", "orbax", "tensorflow")


def parse_and_run(parser: argparse.ArgumentParser, argv: list[str] | None,
                  body: Callable[[argparse.Namespace], T]) -> T:
    """`argv` parsed by `parser` with --verbose added, then `run` of `body(args)`."""
    parser.add_argument("--verbose", action="store_true",
                        help="library logging (JAX, Orbax, TFDS, jax2onnx) at INFO")
    args = parser.parse_args(argv)
    return run(lambda: body(args), args.verbose)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, the model dir a command reads, and --step, its checkpoint."""
    parser.add_argument("--model", required=True, help="a training work dir or converted model")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step (default: the newest that loads)")


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """--split and --data_dir: the TFDS split a command evaluates the model on."""
    parser.add_argument("--split", default="test", help="the TFDS split (default %(default)s)")
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data dir (default: the one the model was trained with)")


def add_out_options(parser: argparse.ArgumentParser, holds: str, default: str | None,
                    shown: str = "%(default)s") -> None:
    """--out, a folder for `outputs.out_folder.OutFolder`, and --overwrite."""
    parser.add_argument("--out", default=default,
                        help=f"output folder, new or empty, or holding this command's {holds} "
                        f"(default {shown})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what --out holds, whole, if a command of ours wrote it")


def _tfds_internals(record: logging.LogRecord) -> bool:
    """Drops TFDS's warning about its own use of its API: its decoders read TensorInfo.dtype
    (tensorflow_datasets/core/decode/base.py) and warn of it on every dataset they decode,
    twice per robustness cell."""
    return "`TensorInfo.dtype` is deprecated" not in record.getMessage()


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
        absl_logger.removeFilter(_tfds_internals)
    else:
        absl_logger.addFilter(_tfds_internals)   # once: a filter is added only if absent
    # absl keeps its own verbosity beside the logging module's
    from absl import logging as absl_logging
    absl_logging.set_verbosity("info" if verbose else "warning")


def fail(message: str) -> NoReturn:
    """Bad input found by a command itself: the same one line as a `UserError`."""
    raise UserError(message)


def run(body: Callable[[], T], verbose: bool = False) -> T:
    """`body()`, ending as the module docstring says when it does not finish."""
    global _finished
    stop_signals.reset(keep_pending=_process_ends_after_stop)
    _finished = False
    stop_signals.on_stop(stop_signals.RERUN)
    set_verbosity(verbose)
    with stop_signals.watching_stops(restore=not _process_ends_after_stop):
        try:
            result = body()
        except stop_signals.STOP_EXCEPTIONS as e:
            _exit_stopped(stop_signals.signal_of(e))
        except Exception as e:
            came = stop_signals.stop_came()
            if came is not None:   # a library's own error for the stop (see the docstring)
                _exit_stopped(came)
            if isinstance(e, UserError):
                message = str(e) or type(e).__name__
                _exit(1, f"error: {message if e.how_to_fix_follows else message.splitlines()[0]}")
            if isinstance(e, OSError) and e.errno in NO_SPACE:
                _exit(1, no_space_line(e))
            raise
        _finished = True
        stop_signals.reset()   # a stop that came as the body returned: the work is done
        return result


def end_process_after_stop() -> None:
    """This process ends after a stop (`cli.entry`): stop signals stay handled after `run`,
    and ignored once a stop has reached its end."""
    global _process_ends_after_stop
    _process_ends_after_stop = True


def stopped_outside_run(stop: BaseException) -> NoReturn:
    """A stop that came before `run` started or after its body returned: its line and status."""
    stop_signals.delivered()
    stop_signals.on_stop("the command had finished; its results are complete" if _finished
                         else stop_signals.RERUN)
    _exit_stopped(stop_signals.signal_of(stop))


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space_line(e: OSError) -> str:
    """A full disk or quota: where, how much is free there, and what the stop keeps."""
    where = f"{e.filename}: " if e.filename else ""
    return f"error: {where}{e.strerror} ({_free_space(e.filename)}); {stop_signals.stop_line()}"


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


def _exit_stopped(signum: signal.Signals) -> NoReturn:
    stop_signals.delivered()
    _exit(128 + signum, f"{_STOP_WORDS[signum]}: {stop_signals.stop_line()}", mid_line=True)


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
