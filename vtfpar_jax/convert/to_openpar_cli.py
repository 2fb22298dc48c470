"""Export a model dir to the published VTFPAR++ checkpoint format ({'epoch', 'model_state_dict'}).

    vtfpar to-openpar --model runs/mars --out mars.pth [--step N]

The file loads into the published `TransformerClassifier` with a strict
`load_state_dict`; build that model with the command-line options printed
(and written to `<out>.json`), and give it OpenAI's `ViT-B-16.pt`, which holds
the text tower. Needs torch (the `torch` extra). A model the published code
cannot compute is refused with one error naming the config option.
"""

from __future__ import annotations

import argparse
import os

from vtfpar_jax import cli_errors
from vtfpar_jax.convert import to_openpar
from vtfpar_jax.convert.openpar_cli import OutputExistsError
from vtfpar_jax.outputs import files, stop_signals
from vtfpar_jax.state import model_dir


def command_line(options: dict) -> str:
    """The published train.py flags for `options` (store_true flags only when set)."""
    return " ".join(f"--{name}" if isinstance(value, bool) else f"--{name} {value}"
                    for name, value in options.items() if value is not False)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vtfpar to-openpar", description=__doc__.splitlines()[0])
    cli_errors.add_model_options(parser)
    parser.add_argument("--out", required=True, help="the .pth file to write (must be new)")
    return cli_errors.parse_and_run(parser, argv, _to_openpar)


def _to_openpar(args) -> None:
    if os.path.exists(args.out):
        raise OutputExistsError(f"{args.out} exists; choose a new --out")
    sidecar = args.out + ".json"
    stop_signals.on_stop(lambda: f"{args.out} is written, {sidecar} is not; move {args.out} away "
                       "and rerun the same command" if os.path.exists(args.out)
                       else stop_signals.RERUN)
    written = to_openpar.write_checkpoint(model_dir.load(args.model, args.step), args.model,
                                          args.out)
    flags = command_line(written["openpar_options"])
    files.write_json(sidecar, {**written, "command_line": flags}, indent=1)
    print(f"wrote {args.out} (step {written['step']}); build the published model "
          f"({written['published_model']}) with: {flags}")
