"""Writing to a work dir that other hosts, or the next run, may read: whole files or none.

Every host reads the text cache, a restarted run reads config.json and backbone/, and
kill -9 may stop a write halfway. So each file (or folder) is written under a temporary name
unique across hosts (`tempfile`), then renamed onto its real name: atomic on POSIX file
systems (local disks, NFS, Lustre); on a bucket mount (GCS FUSE) a copy then a delete, but of
an object written whole. Either way a reader never sees half a file. The result gets the
modes an ordinary `open` / `mkdir` would give (`tempfile` alone gives 0600 / 0700), so that
a serving account or a colleague can read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator


def umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_default_mode(path: str) -> None:
    """`path` (a file, or a folder and everything under it) as if made by open / mkdir."""
    mask = umask()
    if not os.path.isdir(path):
        os.chmod(path, 0o666 & ~mask)
        return
    for root, _, names in os.walk(path):   # `path` first, then each folder under it
        os.chmod(root, 0o777 & ~mask)
        for name in names:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), 0o666 & ~mask)


@contextlib.contextmanager
def named_as(path: str, temporary: str) -> Iterator[None]:
    """An OSError inside names `path`: a write's own error (a full disk: ENOSPC) names no
    file, and one naming the temporary would send the reader to a name that is gone."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = path
        elif str(e.filename).startswith(temporary):   # inside a folder being filled
            e.filename = path + str(e.filename)[len(temporary):]
        raise


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """A temporary path beside `path` to write; renamed onto `path` if the block succeeds.

    The temporary name ends in `path`'s extension, so writers that pick a format
    by it (PIL, matplotlib) pick the right one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-",
                                     suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        with named_as(path, temporary):
            yield temporary
            give_default_mode(temporary)
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


@contextlib.contextmanager
def atomic_folder(path: str, move_in: Callable[[str, str], None] | None = None
                  ) -> Iterator[str]:
    """A temporary folder beside `path` to fill; if the block succeeds, renamed to `path`, or
    given to `move_in(temporary, absolute path)` (--out's swap: vtfpar_jax.outputs.out_folder).

    If `path` appeared meanwhile (another writer finished first), the rename keeps it and
    the temporary folder is removed: both hold the same content.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        with named_as(path, temporary):
            yield temporary
            give_default_mode(temporary)
        if move_in is not None:
            move_in(temporary, os.path.abspath(path))
            return
        try:
            os.rename(temporary, path)
        except OSError:
            if not os.path.isdir(path):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_json(path: str, value, indent: int = 2) -> None:
    """`value` as indented JSON at `path`, whole or not at all."""
    write_text(path, json.dumps(value, indent=indent) + "\n")


def write_text(path: str, text: str) -> None:
    """`text` at `path`, whole or not at all."""
    with atomic_file(path) as temporary, open(temporary, "w") as f:
        f.write(text)


def save_figure(figure, path: str, **savefig) -> None:
    """A matplotlib figure (or a PIL image: anything with `savefig` or `save`) at `path`,
    whole or not at all."""
    with atomic_file(path) as temporary:
        (figure.savefig if hasattr(figure, "savefig") else figure.save)(temporary, **savefig)


def read_to_resume(path: str, error: type[Exception], elsewhere: str) -> dict:
    """The JSON a resumable command left at `path` ({} if none); `error` if it cannot be read.

    Whether it was made by the same run is the caller's check
    (`fingerprint.check_same_run`). What another run wrote is never overwritten: the
    message says to use `elsewhere` (e.g. another --out) or to move the file away.
    """
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise error(f"{path}: cannot read it to resume ({e}); move it away or use another "
                    f"{elsewhere}") from None
