"""Prediction: logits and probabilities for clips, from a trained or converted model.

    vtfpar predict --model DIR [--out OUTDIR] [--frames T] INPUT...

INPUT is a folder of frames (one tracklet, image files sorted by name) or a
video file, read as evaluation reads a tracklet (vtfpar_jax.inference.video);
all are run as one batch, and per input OUTDIR gets <name>.json (every
attribute's probability and one decision per group: vtfpar_jax.evaluation.decisions)
and <name>.png (the frames and the probabilities as bars). An input that cannot
be read does not stop the others unless --fail-fast. docs/inference.md,
"Prediction", says the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax import cli_errors, errors
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.evaluation import decisions, metrics, visualize
from vtfpar_jax.inference import video
from vtfpar_jax.models import towers, vtfpar
from vtfpar_jax.outputs import files, out_folder
from vtfpar_jax.state import model_dir


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg: vtfpar.VTFPARConfig, variables, video, text_features):
    model_vars = {k: v for k, v in variables.items() if k != "backbone"}
    logits, _ = vtfpar.apply(cfg, model_vars, variables["backbone"], video, text_features)
    return logits


def compute_logits(config: vtfpar.VTFPARConfig, variables: Mapping[str, Any],
                   video: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Evaluation-mode logits (B, config.num_logits) for video (B, T, H, W, 3) float32 already
    normalised and attribute token ids (A, context); `variables` holds 'params',
    'batch_stats' and the backbone's tree under 'backbone'."""
    text = towers.of(config.backbone).text_features(config.backbone, variables["backbone"],
                                                   jnp.asarray(tokens),
                                                   vtfpar.DTYPES[config.backbone_dtype])
    return np.asarray(_logits(config, variables, jnp.asarray(video, jnp.float32), text))


# --- Prediction on clips read from disk: `vtfpar predict` -----------------------

def config_for_frames(cfg: vtfpar.VTFPARConfig, frames: int) -> vtfpar.VTFPARConfig:
    """`cfg` running on `frames` frames per clip instead of the trained `cfg.frames`.

    Fewer frames reuse the first temporal side blocks (block f runs on frame f)
    and average over fewer frames; more frames would need blocks that were
    never trained, and a learned ('mlp') spatial aggregation has one weight
    per trained frame, so both are refused.
    """
    if frames == cfg.frames:
        return cfg
    if frames < 1:
        raise ConfigError(f"frames={frames}: need at least 1")
    if cfg.use_temporal and frames > cfg.frames:
        raise ConfigError(f"frames={frames}: the model was trained on {cfg.frames} frames and its "
                         f"temporal side net has one block per frame; use at most {cfg.frames}")
    if cfg.use_spatial and cfg.spatial_aggregation == "mlp":
        raise ConfigError(f"frames={frames}: the model's spatial aggregation learned one weight "
                         f"per frame for {cfg.frames} frames; use exactly {cfg.frames}")
    return dataclasses.replace(cfg, frames=frames)


def predict_clips(loaded: model_dir.LoadedModel, videos: np.ndarray) -> np.ndarray:
    """Probabilities (N, A) float64 for videos (N, T, H, W, 3) float32, normalised: the
    sigmoids of the attribute head, or the softmax within each group of the group head
    (metrics.probabilities).

    One jitted evaluation-mode batch; T may be fewer than the trained frames
    (see `config_for_frames`). The text features are the ones the model dir
    computed once from its phrases.
    """
    videos = np.asarray(videos, np.float32)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"videos {videos.shape}: expected (N, T, H, W, 3)")
    size = loaded.model_cfg.backbone.image_size
    if videos.shape[2:4] != (size, size):
        raise ValueError(f"videos {videos.shape}: the model takes {size}x{size} frames")
    cfg = config_for_frames(loaded.model_cfg, videos.shape[1])
    logits = _logits(cfg, loaded.variables(), jnp.asarray(videos),
                     loaded.frozen.text_features)
    return metrics.probabilities(np.asarray(logits), cfg)


def output_names(paths: list[Path]) -> list[str]:
    """File stems for the outputs: the input's name, made unique when two inputs share one."""
    names, seen = [], {}
    for path in paths:
        stem = (path.name if path.is_dir() else path.stem) or "input"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


MIN_PERSON_SIDE = 16   # pixels: a smaller person is a few blobs of colour once upscaled


def add_options(parser: argparse.ArgumentParser, out_default: str) -> None:
    """--model, --step, --out, --overwrite and --threshold: the options `vtfpar predict` and
    `vtfpar track` share."""
    cli_errors.add_model_options(parser)
    cli_errors.add_out_options(parser, "results for the same model and inputs", out_default)
    parser.add_argument("--threshold", type=errors.probability, default=None,
                        help="binary decision threshold (default: the published "
                        f"{metrics.PUBLISHED_THRESHOLD} for the attribute head, "
                        f"{decisions.GROUP_HEAD_THRESHOLD}, the argmax, for the group head)")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """CLI: predict every INPUT, write <name>.json and <name>.png under --out."""
    parser = argparse.ArgumentParser(
        prog="vtfpar predict",
        description="Pedestrian attributes of clips: folders of frames or video files.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="a folder of frames (one tracklet, sorted by name) or a video file")
    add_options(parser, out_default="predictions")
    parser.add_argument("--frames", type=errors.positive_int, default=None,
                        help="frames sampled per clip (default: the model's)")
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first input that cannot be read, before writing "
                        "anything (default: predict the readable ones, list the others)")
    return cli_errors.parse_and_run(parser, argv, _predict_inputs)


def _predict_inputs(args: argparse.Namespace) -> list[dict[str, Any]]:
    paths = [Path(p) for p in args.inputs]
    missing = [p for p in paths if not p.exists()]
    if missing and args.fail_fast:   # before loading the model: the cheapest mistake to report
        cli_errors.fail(f"{missing[0]}: no such file or folder")
    with out_folder.OutFolder(
            args.out, "predict", {"model": model_dir.identity(args.model),
                                  "inputs": [os.path.abspath(p) for p in paths],
                                  "step": args.step, "frames": args.frames,
                                  "threshold": args.threshold},
            args.overwrite, reads=[args.model, *args.inputs]) as out:
        return _predict_into(out, paths, args)


def _predict_into(out: out_folder.OutFolder, paths: list[Path],
                  args: argparse.Namespace) -> list[dict[str, Any]]:
    loaded = model_dir.load_announced(args.model, step=args.step)
    out.check_step(loaded.step)
    frames = args.frames or loaded.model_cfg.frames
    size = loaded.model_cfg.backbone.image_size
    normalization = loaded.normalization
    config_for_frames(loaded.model_cfg, frames)   # a wrong --frames concerns every input
    head = loaded.model_cfg.head
    threshold = decisions.default_threshold(head) if args.threshold is None else args.threshold

    readable, failures = [], []
    # Names are given over all inputs, so an input's outputs do not depend on others failing.
    for path, name in zip(paths, output_names(paths), strict=True):
        try:
            chosen = video.read_frames(path, frames)
        except (video.InputError, OSError) as e:   # OSError: a truncated image
            failure = _naming(path, e)
            if args.fail_fast:
                cli_errors.fail(failure)
            failures.append(failure)
            continue
        height, width = chosen[0].shape[:2]
        warnings = [] if min(height, width) >= MIN_PERSON_SIDE else [
            f"{path}: frames of {width}x{height} pixels (a side under {MIN_PERSON_SIDE}): "
            f"upscaled to {size}x{size}, its attributes are guesses"]
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        readable.append((path, name, warnings,
                         *video.model_input(chosen, (size, size), normalization)))

    records = []
    if readable:
        probs = predict_clips(loaded, np.stack([clip_input for *_, clip_input in readable]))
        with out.filling(loaded.step, failed=failures,
                         unreadable_newer_checkpoints=loaded.unreadable_newer) as folder:
            for (path, name, warnings, frames_uint8, _), row in zip(readable, probs,
                                                                      strict=True):
                record = decisions.prediction_record(
                    row, loaded.attribute_set, threshold, head, input=str(path),
                    model=str(args.model), step=loaded.step, frames=frames,
                    image_size=[size, size], normalization=normalization, warnings=warnings)
                files.write_json(os.path.join(folder, f"{name}.json"), record, indent=1)
                visualize.save_prediction(os.path.join(folder, f"{name}.png"), frames_uint8,
                                          row, loaded.attribute_set, threshold,
                                          title=path.name)
                records.append((path, name, record))
    for path, name, record in records:
        print(f"{path}: {os.path.join(args.out, name)}.json/.png  " + decisions.summary(record))
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    print(f"{len(records)} done, {len(failures)} failed")
    if failures:
        sys.exit(1)
    return [record for *_, record in records]


def _naming(path: Path, error: Exception) -> str:
    """The error's first line, led by the input's path unless it already names it."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return message if str(path) in message else f"{path}: {message}"
