"""`UserError`: bad input (a config, a path, a dataset, a busy work dir), not a bug.

The CLIs print a `UserError` as one line, `error: <message>`, and exit 1;
anything else keeps its traceback, since it is a bug to report. The message
names the file, key, field or option at fault and says what would fix it.

Subclasses also derive from the built-in type callers already catch (a bad
config field is still a `ValueError`, a missing dataset a `FileNotFoundError`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input that its message explains; printed without a traceback by the CLIs.

    The CLIs print the message's first line, which says what is wrong. A subclass
    whose further lines say how to fix it (the commands to run) sets
    `how_to_fix_follows`, and the CLIs print those lines too.
    """

    how_to_fix_follows = False


class ConfigError(UserError, ValueError):
    """A config field, argument or override that cannot work."""


def nearest(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `valid`, or '' when none is close."""
    match = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
