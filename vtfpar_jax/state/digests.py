"""SHA-256 digests of the files a model reads: recorded when they are written, checked where
they are read. A model dir's config.json records its backbone/ (`backbone_files`), a Hub
layout's records all its files (`hub.files`); a byte changed in either later would move the
probabilities with no warning."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from vtfpar_jax.errors import UserError


class DigestError(UserError, ValueError):
    """A file that is missing, extra or changed since its digest was recorded; the message
    names it."""


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(folder: str, relative_to: str) -> list[str]:
    """The path relative to `relative_to` of every file under `folder`."""
    return [os.path.relpath(os.path.join(root, name), relative_to)
            for root, _, names in os.walk(folder) for name in names]


def of_folder(folder: str, relative_to: str) -> dict[str, str]:
    """{path relative to `relative_to`: SHA-256} of every file under `folder`."""
    return {name: sha256(os.path.join(relative_to, name))
            for name in files_under(folder, relative_to)}


def check_folder(folder: str, relative_to: str, recorded: dict[str, str], record: str,
                 error: type[Exception] = DigestError, extra_allowed: bool = False,
                 differs: Callable[[str], str] | None = None) -> None:
    """Every file under `folder` is one that `recorded` ({path relative to `relative_to`:
    SHA-256}, from the file `record`) lists, with that digest, and none it lists is missing.
    With `extra_allowed` (a Hub snapshot may hold files the record does not list), only the
    listed files are checked; `differs(path)` is the message of a missing or changed one."""
    found = set() if extra_allowed else set(files_under(folder, relative_to))
    for name in sorted(found | set(recorded)):
        path = os.path.join(relative_to, name)
        if name not in recorded:
            raise error(f"{path}: not listed in {record}; the folder was changed after it "
                        "was written")
        if not os.path.isfile(path) or sha256(path) != recorded[name]:
            raise error(differs(path) if differs else
                        f"{path}: missing or differs from the SHA-256 that {record} records")


def check_backbone(folder: str, model: str, recorded: dict[str, str] | None) -> None:
    """Model dir `model`'s backbone `folder` against `recorded`, the digests its config.json
    records (`backbone_files`, as the caller read it); a model dir made before they were
    recorded has none (None) to check."""
    if recorded is not None:
        check_folder(folder, model, recorded, os.path.join(model, "config.json"))
