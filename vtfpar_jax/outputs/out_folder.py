"""A command's --out: checked before any work, filled whole, never mixed with another run.

--out must be new, empty, or hold this command's own results for the same model, inputs and
options (its `run.json`, the manifest, says so; a rerun replaces them). Another command's
results are replaced only with --overwrite; a folder without our run.json, and one that is or
holds the current folder, the home folder or what the run reads, never. One run writes to a
--out at a time (a lock beside it). The results are filled in a temporary folder beside it
and swapped in whole, run.json last, so a failed or stopped run leaves the earlier folder as
it was (docs/reliability.md, "Outputs of the commands").

`check_writable_folder` / `check_writable_file` are the path checks alone, for commands that
write in place (robustness resumes cell by cell; export writes one file and its metadata);
`lock` is the one-run-at-a-time lock alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from vtfpar_jax.errors import UserError
from vtfpar_jax.outputs import files, pid_lock, stop_signals

MANIFEST = "run.json"


class OutFolderError(UserError, ValueError):
    """An output path that cannot be used, or that holds something else."""


def _check_can_create(path: str, option: str) -> None:
    existing = os.path.abspath(path)   # the nearest folder or file that exists
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
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


def lock(path: str, option: str = "--out") -> pid_lock.PidLock:
    """Folder `path`'s lock, `.NAME.lock` beside it, taken now; else one `OutFolderError`
    naming the holder. Beside, not inside: the folder itself is swapped whole."""
    target = os.path.abspath(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return pid_lock.PidLock(
        os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock"),
        lambda holder: OutFolderError(f"{option} {path} is in use by {holder}, another run "
                                      f"writing there: one run per {option} at a time"))


def read_manifest(path: str) -> dict[str, Any] | None:
    """The run.json one of our commands wrote in folder `path`; None when there is none, it
    cannot be read, or it lacks the command and identity that ours all hold."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    ours = isinstance(manifest, dict) and {"command", "identity"} <= manifest.keys()
    return manifest if ours else None


class OutFolder(contextlib.AbstractContextManager):
    """--out of one run of `command`; `identity`: the model dir, inputs and options that
    make its results what they are (JSON values; the step comes once the model is loaded).
    `reads`: the model dir, data dir and inputs, which --out may never be nor hold.

    Made before any work: the checks, then the lock (`.NAME.lock` beside --out, one run at
    a time), held until the results are swapped in or the `with` block ends.
    """

    def __init__(self, path: str, command: str, identity: dict[str, Any], overwrite: bool,
                 reads: Sequence[str | None] = ()):
        self.path, self.command, self.overwrite = path, command, overwrite
        self.identity = json.loads(json.dumps(identity))   # as it reads back from run.json
        check_writable_folder(path)
        _check_replaceable(path, [p for p in reads if p])
        self.lock = lock(path)
        try:
            self.previous = self._check_contents()
        except BaseException:
            self.release()
            raise

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Let the next run into --out (done by `filling` and the `with` block's end)."""
        self.lock.release()

    def _check_contents(self) -> dict[str, Any] | None:
        """The run.json of what --out holds; refused unless this run may replace it."""
        entries = sorted(os.listdir(self.path)) if os.path.isdir(self.path) else []
        if not entries:
            return None
        previous = read_manifest(self.path)
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more"
                                          if len(entries) > 3 else "")
        if previous is None:
            raise OutFolderError(
                f"--out {self.path} holds {shown} (files of something else: no {MANIFEST} "
                "of ours); use a new or empty folder (--overwrite replaces only a folder "
                f"holding our {MANIFEST})")
        ours = (previous["command"] == self.command
                and previous["identity"] == self.identity)
        if not ours and not self.overwrite:
            raise OutFolderError(f"--out {self.path} holds {shown} ({previous['command']}'s "
                                 "results for other inputs or options); use a new or empty "
                                 "folder, or --overwrite to replace it whole")
        return previous

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
        (identity, step, `recorded`) written last, when the block succeeds. The lock is
        released at the end, whichever way it ends."""
        try:
            self.check_step(step)
            with files.atomic_folder(self.path, functools.partial(_swap_in, self.path)) as folder:
                yield folder
                files.write_json(os.path.join(folder, MANIFEST),
                                 {"command": self.command, "identity": self.identity,
                                  "step": step, **recorded})
        finally:
            self.release()


def _check_replaceable(path: str, reads: Sequence[str]) -> None:
    """Refuse as --out, with or without --overwrite, a folder that is or holds the current
    folder, the home folder or what the run reads: a rerun with --overwrite would remove it."""
    out = os.path.realpath(path)
    for kept, what in [(os.getcwd(), "the current folder"),
                       (os.path.expanduser("~"), "the home folder"),
                       *((p, f"{p}, which this run reads") for p in reads)]:
        inside = os.path.realpath(kept)
        if inside == out:
            raise OutFolderError(f"--out {path} is {what}; give the results a folder of their "
                                 "own, new or empty")
        if inside.startswith(out.rstrip(os.sep) + os.sep):
            raise OutFolderError(f"--out {path} holds {what}"
                                 + ("" if kept in reads else f" ({inside})")
                                 + "; give the results a folder of their own, new or empty")


def _swap_in(shown: str, temporary: str, target: str) -> None:
    """`temporary` renamed to `target`; what `target` held is moved aside, and put back if
    the new folder cannot be moved in, then removed once the new one is in place. Ctrl-C and
    SIGTERM wait until the renames are done: a stop between them would leave no --out. Then
    the swap reports the results in place (`shown`: --out as given) for a stop's line."""
    replaced = None   # the folder aside holding the old results, once the new ones are in
    try:
        with stop_signals.held():
            if not (os.path.isdir(target) and os.listdir(target)):
                os.rename(temporary, target)   # onto nothing or an empty folder: one step
                stop_signals.results_in_place(shown)
                return
            aside = tempfile.mkdtemp(dir=os.path.dirname(target),
                                     prefix=f".{os.path.basename(target)}.old-")
            previous = os.path.join(aside, "previous")
            try:
                os.rename(target, previous)
            except BaseException:
                os.rmdir(aside)
                raise
            try:
                os.rename(temporary, target)
            except BaseException as failure:
                try:
                    os.rename(previous, target)
                except OSError as e:
                    raise OutFolderError(
                        f"--out {target}: the new results could not be moved in ({failure}), "
                        f"nor the earlier ones put back ({e}); the earlier ones are in "
                        f"{previous}") from failure
                os.rmdir(aside)
                raise
            replaced = aside
            stop_signals.results_in_place(shown)
    finally:   # also when a stop held during the swap is delivered
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
