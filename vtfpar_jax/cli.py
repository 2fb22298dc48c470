"""`vtfpar <command>` (also `python -m vtfpar_jax <command>`): every command of the package.

A command is one entry in COMMANDS: its name, the module whose `main(argv)` runs it, and the
line that `vtfpar --help` shows. Each module parses its own options (`vtfpar COMMAND --help`)
and ends through `cli_errors.run`, which prints bad input as one `error:` line. Modules are
imported only when their command runs, so `vtfpar --help` loads neither JAX nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import threading

from vtfpar_jax import cli_errors
from vtfpar_jax.errors import nearest
from vtfpar_jax.outputs import stop_signals


@dataclasses.dataclass(frozen=True)
class Command:
    module: str     # its `main(argv)` runs the command
    summary: str    # one line in `vtfpar --help`


COMMANDS: dict[str, Command] = {
    "demo": Command("vtfpar_jax.tools.demo",
                    "build the synthetic set, train configs/demo.py and evaluate (make demo)"),
    "train": Command("vtfpar_jax.training.train",
                     "train a model into a work dir from a config file (resumes)"),
    "evaluate": Command("vtfpar_jax.evaluation.evaluate",
                        "evaluate a model dir on a split: group, PAR and Chen metrics"),
    "predict": Command("vtfpar_jax.inference.predict",
                       "attributes of clips: folders of frames or video files"),
    "track": Command("vtfpar_jax.inference.track_attributes",
                     "attributes per person in a street video: detect, track, predict, draw"),
    "detect": Command("vtfpar_jax.inference.detect_frames",
                      "person boxes of one video's frames, as a MOT file"),
    "robustness": Command("vtfpar_jax.experiments.robustness",
                          "metrics under clip corruptions at several severities"),
    "ablate": Command("vtfpar_jax.experiments.ablate",
                      "train and evaluate one config per value of a swept field"),
    "export": Command("vtfpar_jax.tools.export",
                      "a model dir as StableHLO or ONNX, with its preprocessing"),
    "convert": Command("vtfpar_jax.convert.openpar_cli",
                       "a published VTFPAR++ checkpoint into a model dir"),
    "to-openpar": Command("vtfpar_jax.convert.to_openpar_cli",
                          "a model dir into the published PyTorch checkpoint format"),
    "push-to-hub": Command("vtfpar_jax.tools.hub",
                           "a model dir to the Hugging Face Hub, with a model card"),
    "compare-pytorch": Command("vtfpar_jax.tools.compare_pytorch",
                               "run the published PyTorch model and ours side by side"),
    "bench": Command("vtfpar_jax.tools.bench",
                     "step times and memory; deviceless GPU/TPU compiles (--aot)"),
    "street-bench": Command("vtfpar_jax.tools.street_bench",
                            "tracking quality and stage speeds on drawn street videos"),
    "param-count": Command("vtfpar_jax.tools.param_count",
                           "parameter counts per part, against the published model"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return ("usage: vtfpar COMMAND [OPTIONS]   (vtfpar COMMAND --help for its options)\n\n"
            "commands:\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: no command {name!r}{nearest(name, COMMANDS)}; `vtfpar --help` lists "
              "them", file=sys.stderr)
        sys.exit(2)
    from input_pipeline import tf_notices  # light: TensorFlow loads on first use
    tf_notices.drop_import_notices()
    importlib.import_module(COMMANDS[name].module).main(rest)


def entry() -> None:
    """`vtfpar` and `python -m vtfpar_jax`: `main`, and after a stop the process ends at once.

    Stop signals are handled from the start (`outputs.stop_signals`), so a Ctrl-C during the
    imports before a command's `run` is also one `interrupted:` line, not a traceback.

    A stop (Ctrl-C, SIGTERM) can come while tf.data's threads still read a dataset, and
    Python's teardown then crashed under them now and then (SIGSEGV, exit -11, after the
    `interrupted:` line; docs/reliability.md, "Clean stops", has the count). By the time
    the stop's SystemExit gets here, the command's own cleanup has run (files closed,
    checkpoint writes waited for: a second Ctrl-C does not cut that short), so the process leaves
    without the teardown, once the threads that Python's teardown would wait for (Orbax's
    `async_save`: a checkpoint being committed) have ended. In-process callers of `main`
    still get the SystemExit.
    """
    cli_errors.end_process_after_stop()
    with stop_signals.watching_stops(restore=False):
        try:
            main()
            return
        except SystemExit as e:
            if e.code not in cli_errors.STOP_STATUSES:
                raise
            status = e.code
        except stop_signals.STOP_EXCEPTIONS as stop:   # before `run`, or after its body
            try:
                cli_errors.stopped_outside_run(stop)
            except SystemExit as e:
                status = e.code
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
