"""A model dir exported for serving outside this package: StableHLO (jax.export) or ONNX.

    vtfpar export --model DIR --format stablehlo --out model.stablehlo
    vtfpar export --model DIR --format onnx --out model.onnx [--batch 8]

Both artefacts compute the evaluation-mode logits from the input video, resized and
normalised, with the weights and the attribute text features as constants; `<out>.json`
(`metadata`, also in an ONNX file's `metadata_props` under 'vtfpar') says what a caller
feeds it and how to read its output (docs/inference.md, "Export"). The StableHLO file is
`Exported.serialize()`'s bytes as they are, so
`jax.export.deserialize(open(path, 'rb').read())` reads it with no wrapper.

Attention is exported as XLA's (model.attention='xla'): 'auto' may choose cuDNN
kernels, which neither a CPU-lowered artefact nor ONNX can hold.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax import cli_errors
from vtfpar_jax.errors import UserError
from vtfpar_jax.evaluation import decisions
from vtfpar_jax.inference import video
from vtfpar_jax.models import group_head, vtfpar
from vtfpar_jax.models.normalization import NORMALIZATIONS
from vtfpar_jax.outputs import files, out_folder
from vtfpar_jax.state import model_dir

FORMATS = ("stablehlo", "onnx")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")   # jax.export's lowering platforms
ONNX_OPSET = 23
INPUT_NAME, OUTPUT_NAME = "video", "logits"
OUTPUT_MEANINGS = {
    "attribute": "logits, one per attribute; sigmoid gives each attribute's probability",
    "group": "logits of each group's classes, the groups one after another (groups[i].logits "
             "is group i's span); the softmax within a group gives its probabilities; a "
             "binary attribute's group has the classes (absent, present)",
}


class ExportError(UserError, ValueError):
    """An export that cannot be made; the message names the option or the op at fault."""


@dataclasses.dataclass(frozen=True)
class Exportable:
    """The logits function with its constants, and what a caller must know to use it."""

    logits: Callable[[jax.Array], jax.Array]
    input_shape: tuple[int | str, ...]     # batch first: an int, or 'B' when dynamic
    metadata: dict[str, Any]


def exportable(loaded: model_dir.LoadedModel, batch: int | None, model: str = "") -> Exportable:
    """`loaded`'s evaluation-mode logits as a function of the video alone.

    batch None: a symbolic batch dimension. The weights and text features are
    numpy constants closed over, so the exported program carries them.
    """
    cfg = dataclasses.replace(loaded.model_cfg, attention="xla")
    variables = jax.device_get(loaded.variables())
    text_features = np.asarray(jax.device_get(loaded.frozen.text_features), np.float32)
    model_vars = {k: v for k, v in variables.items() if k != "backbone"}

    def logits(video: jax.Array) -> jax.Array:
        out, _ = vtfpar.apply(cfg, model_vars, variables["backbone"], video,
                              jnp.asarray(text_features))
        return out.astype(jnp.float32)

    size = cfg.backbone.image_size
    shape = ("B" if batch is None else batch, cfg.frames, size, size, 3)
    threshold = decisions.default_threshold(cfg.head)
    normalization = loaded.normalization
    mean, std = NORMALIZATIONS[normalization]
    attribute_set = loaded.attribute_set
    metadata = {
        "format_version": 1,
        "model": model,
        "step": loaded.step,
        "unreadable_newer_checkpoints": loaded.unreadable_newer,
        "input": {"name": INPUT_NAME, "shape": list(shape),
                  "dtype": "float32", "layout": "BTHWC (batch, frames, height, width, RGB)",
                  "frames": cfg.frames, "image_size": [size, size],
                  "normalization": {"name": normalization, "mean": list(mean),
                                    "std": list(std),
                                    "formula": "(pixel / 255 - mean) / std, RGB"}},
        "preprocessing": video.preprocessing(cfg.frames, (size, size), normalization),
        "output": {"name": OUTPUT_NAME, "shape": [shape[0], cfg.num_logits],
                   "meaning": OUTPUT_MEANINGS[cfg.head]},
        "head": cfg.head,
        "attribute_set": attribute_set.name,
        "attributes": list(attribute_set.columns),
        "groups": _groups(cfg, attribute_set),
        "threshold": threshold,
        "decision_rules": decisions.decision_rules(cfg.head, threshold),
    }
    return Exportable(logits, shape, metadata)


def _groups(cfg: vtfpar.VTFPARConfig, attribute_set) -> list[dict[str, Any]]:
    """Each group's name and columns; with the group head, also its span [start, end) of
    the logits."""
    groups = [{"name": g.name, "columns": list(g.columns), "binary": g.is_binary}
              for g in attribute_set.groups]
    if cfg.head == "group":
        ends = np.cumsum(group_head.class_counts(cfg.group_columns)).tolist()
        for group, start, end in zip(groups, [0, *ends[:-1]], ends, strict=True):
            group["logits"] = [start, end]
    return groups


def to_stablehlo(target: Exportable, platforms: tuple[str, ...] = ("cpu",)) -> bytes:
    """`jax.export` of the logits, serialised (StableHLO with its calling convention)."""
    batch = target.input_shape[0]
    dims = jax.export.symbolic_shape("B") if isinstance(batch, str) else (batch,)
    spec = jax.ShapeDtypeStruct((*dims, *target.input_shape[1:]), jnp.float32)
    exported = jax.export.export(jax.jit(target.logits), platforms=platforms)(spec)
    return bytes(exported.serialize())


_UNCONVERTED = re.compile(r"No plugins registered for primitive '([^']+)'")


def to_onnx(target: Exportable, metadata: dict[str, Any]) -> bytes:
    """The logits through jax2onnx, as a serialised ONNX model (opset 23) whose
    `metadata_props` hold `metadata` as JSON under 'vtfpar'.

    A JAX primitive jax2onnx has no conversion for is one ExportError naming it.
    """
    with _quiet("jax2onnx", "onnx_ir"):
        try:
            import jax2onnx
            import onnx
        except ImportError as e:
            raise ExportError(f"--format onnx needs jax2onnx and onnx ({e.name} is not "
                              "installed): pip install 'vtfpar-jax[export]'") from None
        try:
            proto = jax2onnx.to_onnx(target.logits, [target.input_shape], model_name="vtfpar",
                                     opset=ONNX_OPSET, input_names=[INPUT_NAME],
                                     output_names=[OUTPUT_NAME])
        except NotImplementedError as e:
            match = _UNCONVERTED.search(str(e))
            if match is None:
                raise
            raise ExportError(f"--format onnx: jax2onnx {version('jax2onnx')} cannot convert "
                              f"the JAX op {match.group(1)!r} used by this model; export with "
                              "--format stablehlo instead") from None
    onnx.helper.set_model_props(proto, {"vtfpar": json.dumps(metadata)})
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Only errors from these loggers, and no prints, while converting. jax2onnx warns,
    with a traceback, about its dm_pix plugins that do not import under jax 0.10 (not ops
    this model uses), onnx_ir about every untyped shape constant it serialises, and
    jax2onnx's linen Conv plugin prints `DEBUG:` lines to stdout."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def metadata_path(out: str | os.PathLike) -> str:
    """Where the metadata of the artefact at `out` is written: `<out>.json`."""
    return os.fspath(out) + ".json"


def check_options(fmt: str, platforms: tuple[str, ...]) -> None:
    """--format and --platforms, checked before the model loads."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {FORMATS}")
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        raise ExportError(f"--platforms {','.join(platforms)!r}: expected names among "
                          f"{', '.join(PLATFORMS)}")
    if fmt == "onnx" and platforms != ("cpu",):
        raise ExportError("--platforms applies to --format stablehlo only (an ONNX model "
                          "runs wherever its runtime does)")


def export(loaded: model_dir.LoadedModel, fmt: str, out: str, batch: int | None,
           model: str = "", platforms: tuple[str, ...] = ("cpu",)) -> dict[str, Any]:
    """Write the artefact and its metadata; returns the metadata (with the file's size)."""
    check_options(fmt, platforms)
    target = exportable(loaded, batch, model)
    metadata = {**target.metadata, "format": fmt,
                "platforms": list(platforms) if fmt == "stablehlo" else None,
                "versions": {"jax": jax.__version__,
                             **({"jax2onnx": version("jax2onnx"), "onnx_opset": ONNX_OPSET}
                                if fmt == "onnx" else {})}}
    start = time.perf_counter()
    if fmt == "stablehlo":
        data = to_stablehlo(target, platforms)
    else:
        data = to_onnx(target, metadata)
    seconds = time.perf_counter() - start
    # Each written whole or not at all: an interrupted export leaves no half file.
    with files.atomic_file(out) as temporary, open(temporary, "wb") as f:
        f.write(data)
    files.write_json(metadata_path(out), metadata, indent=1)
    return {**metadata, "bytes": len(data), "export_seconds": round(seconds, 2)}


def _replaceable(out: str) -> bool:
    """Nothing at `out` and `<out>.json`, or an artefact and the metadata that export wrote."""
    if not (os.path.exists(out) or os.path.exists(metadata_path(out))):
        return True
    try:
        with open(metadata_path(out)) as f:
            metadata = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("format") in FORMATS \
        and "format_version" in metadata


def parse_batch(value: str) -> int | None:
    """--batch: 'dynamic' -> None (symbolic), else a positive int."""
    if value == "dynamic":
        return None
    try:
        batch = int(value)
    except ValueError:
        batch = 0
    if batch < 1:
        raise ExportError(f"--batch {value!r}: expected a positive integer or 'dynamic'")
    return batch


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="vtfpar export",
                                     description=__doc__.splitlines()[0])
    cli_errors.add_model_options(parser)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="the artefact's path (a new file); its "
                        "metadata goes to <out>.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an artefact (and its metadata) already at --out")
    parser.add_argument("--batch", default="dynamic",
                        help="batch size N, or 'dynamic' for a symbolic one (default)")
    parser.add_argument("--platforms", default="cpu",
                        help="stablehlo only: comma-separated lowering platforms among cpu, "
                        "cuda, rocm, tpu (default %(default)s); no device needed")
    return cli_errors.parse_and_run(parser, argv, _export)


def _export(args) -> dict[str, Any]:
    batch = parse_batch(args.batch)
    platforms = tuple(p.strip() for p in args.platforms.split(","))
    check_options(args.format, platforms)
    for path in (args.out, metadata_path(args.out)):
        out_folder.check_writable_file(path, "--out", args.overwrite)
    if args.overwrite and not _replaceable(args.out):
        raise ExportError(f"--out {args.out}: {metadata_path(args.out)} does not say that "
                          "vtfpar export wrote it; --overwrite replaces only an artefact of "
                          "ours: use another path")
    loaded = model_dir.load_announced(args.model, step=args.step)
    info = export(loaded, args.format, args.out, batch, model=args.model, platforms=platforms)
    print(f"{args.out}: {args.format}, {info['bytes'] / 2**20:.1f} MiB in "
          f"{info['export_seconds']:.1f} s, input {info['input']['shape']}, step {info['step']}; "
          f"metadata {metadata_path(args.out)}")
    return info
