"""`UserError`: bad input (a config, a path, a dataset, a busy work dir), not a bug; and the
argparse types that refuse a bad option value.

The CLIs print a `UserError` as one line, `error: <message>`, and exit 1;
anything else keeps its traceback, since it is a bug to report. The message
names the file, key, field or option at fault and says what would fix it.

Subclasses also derive from the built-in type callers already catch (a bad
config field is still a `ValueError`, a missing dataset a `FileNotFoundError`).

A bad option value is refused while the command line is parsed, before any work: the
argparse types below raise `ArgumentTypeError`, which argparse prints as one line naming
the option (`argument --threshold: ...`) under the command's usage, with exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable


class UserError(Exception):
    """Bad input that its message explains; printed without a traceback by the CLIs.

    The CLIs print the message's first line, which says what is wrong. A subclass
    whose further lines say how to fix it (the commands to run) sets
    `how_to_fix_follows`, and the CLIs print those lines too.
    """

    how_to_fix_follows = False


class ConfigError(UserError, ValueError):
    """A config field, argument or override that cannot work."""


def reason(error: BaseException) -> str:
    """'TypeName: first line of its message' for a one-line error, or the type's name alone
    where the message is empty (an empty or truncated file often raises one)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def nearest(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `valid`, or '' when none is close."""
    match = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _checked(value: str, parse: Callable, valid: Callable, expected: str):
    """`parse(value)` where it parses and is `valid`; else the option's one-line refusal."""
    try:
        parsed = parse(value)
    except ValueError:
        parsed = None
    if parsed is None or not valid(parsed):
        raise argparse.ArgumentTypeError(f"{value!r}: expected {expected}")
    return parsed


def positive_int(value: str) -> int:
    """An integer of at least 1 (a count, a stride, a side in pixels)."""
    return _checked(value, int, lambda number: number >= 1, "a positive integer")


def probability(value: str) -> float:
    """A number in [0, 1] (a decision threshold, a score to reach); NaN fails both sides."""
    return _checked(value, float, lambda number: 0.0 <= number <= 1.0, "a number from 0 to 1")


def frame_size(value: str) -> tuple[int, int]:
    """'HxW' (height first, as the shapes are written) -> (height, width), both positive."""
    return _checked(value, lambda text: tuple(int(side) for side in text.lower().split("x")),
                    lambda size: len(size) == 2 and min(size) >= 1,
                    "HEIGHTxWIDTH in pixels, e.g. 1080x1920")
