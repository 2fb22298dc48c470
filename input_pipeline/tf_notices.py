"""TensorFlow's import without its C++ INFO notices on the terminal.

`import tensorflow` (2.21) writes, from C++ straight to file descriptor 2, twice:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796646439.002202   27856 port.cc:153] oneDNN custom operations are on. ...

TF_CPP_MIN_LOG_LEVEL does not silence these, and nothing in them is for the user to act
on. `drop_import_notices()` makes the first import of `tensorflow`, wherever it happens
(TFDS, our builders, the pipeline), run with descriptor 2 sent to a file; once imported,
everything it wrote is passed on to stderr except C++ INFO lines and that preamble, so a
warning or error printed during the import still shows.

`without_notices()` does the same around TensorFlow's first device query
(input_pipeline/tf_devices.py), where the full `tensorflow` wheel on a machine with no GPU
driver also reports, as an error line, `failed call to cuInit`: TensorFlow is kept off the
GPUs there in any case (JAX owns them and reports its own device errors).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# glog's INFO lines (I<mmdd> <time> <thread> <file>:<line>] ...; before absl::InitializeLog
# the date is 0000 and the time in seconds since 1970) and what goes with them.
_NOTICE = re.compile(r"I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                     r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                     r"|To enable the following instructions: .* rebuild TensorFlow"
                     r"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit")


def is_notice(line: str) -> bool:
    return _NOTICE.match(line) is not None


@contextlib.contextmanager
def without_notices():
    """Descriptor 2 into a file while the body runs; then its lines, less the notices."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(keepends=True)
                                     if not is_notice(line)))
            sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as Python would, and runs its module under
    `without_notices`; then steps out of the way."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quiet_exec_module(module):
                with without_notices():
                    exec_module(module)
            spec.loader.exec_module = quiet_exec_module
        return spec


def drop_import_notices() -> None:
    """The first `import tensorflow` from now on prints no C++ INFO notices (a no-op once
    TensorFlow is imported or when already asked)."""
    if "tensorflow" in sys.modules or any(isinstance(finder, _QuietTensorFlowImport)
                                          for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())
