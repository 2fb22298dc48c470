"""A command's --out: checked before any work, filled whole, never mixed with another run.

--out must be a new or empty folder, or one holding this command's own results
for the same model, inputs and options (its `run.json` says so; a rerun
replaces them). Anything else is refused, naming what is there, unless
--overwrite is given. The results are written into a temporary folder beside
--out and swapped in when complete, with `run.json` (the manifest: command,
model dir, checkpoint step, inputs, options) written last: a folder with a
run.json holds one whole run, and a failed or interrupted run leaves the
earlier folder as it was.

`check_writable_folder` / `check_writable_file` are the path checks alone, for
commands that write in place (robustness resumes cell by cell; export writes
one file and its metadata).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from vtfpar_jax.errors import UserError
from vtfpar_jax.outputs import files

MANIFEST = "run.json"


class OutFolderError(UserError, ValueError):
    """An output path that cannot be used, or that holds something else."""


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _check_can_create(path: str, option: str) -> None:
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise OutFolderError(f"{option} {path}: {existing} is a file, so nothing can be made "
                             "under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutFolderError(f"{option} {path}: {existing} is read-only for this user")


def check_writable_folder(path: str, option: str = "--out") -> None:
    """One `OutFolderError` unless `path` is, or can be made as, a folder we can write."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutFolderError(f"{option} {path}: a file; expected a folder")
    _check_can_create(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)),
                      option)


def check_writable_file(path: str, option: str = "--out", overwrite: bool = False) -> None:
    """One `OutFolderError` unless a file can be written at `path` without losing one."""
    if os.path.isdir(path):
        raise OutFolderError(f"{option} {path}: a folder; expected a file path")
    if os.path.exists(path) and not overwrite:
        raise OutFolderError(f"{option} {path}: exists; use another path, or --overwrite to "
                             "replace it")
    _check_can_create(os.path.dirname(os.path.abspath(path)), option)


def read_manifest(path: str) -> dict[str, Any] | None:
    """The run.json in folder `path`, or None when there is none or it cannot be read."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


class OutFolder:
    """--out of one run of `command`; `identity`: the model dir, inputs and options that
    make its results what they are (JSON values; the step comes once the model is loaded)."""

    def __init__(self, path: str, command: str, identity: dict[str, Any], overwrite: bool,
                 keep: Sequence[str] = ()):
        self.path, self.command, self.overwrite = path, command, overwrite
        self.identity = json.loads(json.dumps(identity))   # as it reads back from run.json
        check_writable_folder(path)
        entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
        self.previous = read_manifest(path) if entries else None
        ours = (self.previous is not None and self.previous.get("command") == command
                and self.previous.get("identity") == self.identity)
        if entries and not ours and not overwrite:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more"
                                              if len(entries) > 3 else "")
            what = (f"{self.previous.get('command')}'s results for other inputs or options"
                    if self.previous else "files of something else")
            raise OutFolderError(f"--out {path} holds {shown} ({what}); use a new or empty "
                                 "folder, or --overwrite to replace it whole")
        if entries:   # it will be replaced: it must not hold what the run reads
            out = os.path.realpath(path)
            for kept in keep:
                inside = os.path.realpath(kept)
                if inside == out or inside.startswith(out + os.sep):
                    raise OutFolderError(f"--out {path} holds {kept}, which this run reads; "
                                         "use another --out")

    def check_step(self, step: int) -> None:
        """Refuse (unless --overwrite) to replace results of another checkpoint step."""
        before = (self.previous or {}).get("step")
        if before is not None and before != step and not self.overwrite \
                and self.previous.get("command") == self.command:
            raise OutFolderError(f"--out {self.path} holds results of step {before}; this run "
                                 f"uses step {step}. Use another --out, --step {before} to "
                                 "redo those, or --overwrite to replace them")

    @contextlib.contextmanager
    def filling(self, step: int, **recorded: Any) -> Iterator[str]:
        """A temporary folder to write the results in; swapped in as --out, with run.json
        (identity, step, `recorded`) written last, when the block succeeds."""
        self.check_step(step)
        target = os.path.abspath(self.path)
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(target)}.tmp-")
        try:
            yield temporary
            files.write_json(os.path.join(temporary, MANIFEST),
                             {"command": self.command, "identity": self.identity,
                              "step": step, **recorded})
            files.give_default_mode(temporary)
            _swap_in(temporary, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)


def _swap_in(temporary: str, target: str) -> None:
    """`temporary` renamed to `target`; what `target` held is removed once it is in place."""
    old = None
    if os.path.isdir(target):
        if os.listdir(target):
            old = tempfile.mkdtemp(dir=os.path.dirname(target),
                                   prefix=f".{os.path.basename(target)}.old-")
            os.rename(target, os.path.join(old, "previous"))
        else:
            os.rmdir(target)
    os.rename(temporary, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
