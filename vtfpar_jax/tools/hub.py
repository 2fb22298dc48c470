"""A model dir on the Hugging Face Hub: write (and upload) its layout, and load it back.

    vtfpar push-to-hub runs/mars ORG/NAME            # upload
    vtfpar push-to-hub runs/mars --local hub_layout  # write the layout only
    vtfpar predict --model hf://ORG/NAME[@REV] clip.mp4

The layout (`model.safetensors`, `config.json` with the SHA-256 of every file the model
reads, `backbone/` unless it came from the Hub, the model card `README.md`) is described
in docs/sharing.md, "The Hugging Face Hub".

`hf://ORG/NAME[@REV]`, wherever a command takes `--model`, is the Hub cache's
snapshot folder (`huggingface_hub.snapshot_download`), read as it lies by
`model_dir.load` (vtfpar_jax/state/hub_snapshot.py), which checks every file it
reads against config.json; so is a `--local` folder given as `--model FOLDER`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vtfpar_jax import cli_errors
from vtfpar_jax.outputs import files, stop_signals
from vtfpar_jax.state import digests, old_names
from vtfpar_jax.state.hub_snapshot import BACKBONE, CONFIG, WEIGHTS, HubLayoutError


def _backbone_entry(origin: dict | None, source_hub: dict | None) -> dict:
    """config.json's `hub.backbone`: the Hub repo the backbone came from, named at its commit
    with its files' SHA-256 (not shipped), or `{"shipped": "backbone"}` for the model's own
    copy of any other (a random, file or folder backbone, or one of unrecorded origin)."""
    named = (source_hub or {}).get("backbone", {})   # a Hub layout published again
    if "hub" in named:
        return named
    if origin is not None and "hub" in origin:
        return origin
    return {"shipped": BACKBONE}


# Headline metrics -> how the card names them (docs/published-model.md §9 has the protocols).
_CARD_METRICS = {
    "group_f1": "F1, published groups (p > 0.45)", "group_acc": "accuracy, published groups",
    "mA": "mA (label-based mean accuracy)", "instance_f1": "instance F1",
    "chen_f1": "macro F1, Chen et al. (argmax per group)"}


class Evaluation(NamedTuple):
    folder: str       # eval/ or eval_test/, in the model dir
    results: dict     # its metrics.json
    table: str        # its table.txt ('' if none)


def _evaluation(model: str, step: int) -> tuple[Evaluation | None, list[str]]:
    """(the model dir's evaluation of checkpoint `step`, or None; why each other one found
    was left out). eval/ is written at the end of training and eval_test/ by vtfpar
    evaluate: each says the step it scored (metrics.json's `step`, run.json's)."""
    left_out = []
    for folder in ("eval", "eval_test"):
        path = os.path.join(model, folder, "metrics.json")
        if not os.path.isfile(path):
            continue
        results = json.loads(Path(path).read_text())
        manifest = Path(model, folder, "run.json")
        scored = results.get("step")
        if scored is None and manifest.is_file():
            scored = json.loads(manifest.read_text()).get("step")
        if scored != step:
            left_out.append(f"`{folder}/` scores " + ("an unrecorded step" if scored is None
                                                      else f"step {scored}"))
            continue
        table_path = Path(model, folder, "table.txt")
        table = table_path.read_text() if table_path.is_file() else ""
        return Evaluation(folder, results, table), left_out
    return None, left_out


def model_card(run: dict, repo: str, step: int, evaluation: Evaluation | None,
               left_out: list[str]):
    """The model card (huggingface_hub.ModelCard): Hub metadata, with the metrics of checkpoint
    `step` as `model-index` results, and what the model is, how it was trained and scored."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from vtfpar_jax.evaluation.evaluate import headline
    from vtfpar_jax.state import backbone_origin
    config = run["config"]
    dataset = config["dataset"] or "unknown"
    origin = run.get("backbone_origin")
    results = [] if evaluation is None else [
        EvalResult(task_type="video-classification", task_name="pedestrian attribute recognition",
                   dataset_type=dataset, dataset_name=dataset, dataset_split="test",
                   metric_type=key, metric_name=name, metric_value=round(value, 4))
        for key, name in _CARD_METRICS.items()
        for value in [headline(evaluation.results)[key]]]
    data = ModelCardData(
        library_name="vtfpar-jax", tags=["pedestrian-attribute-recognition", "video", "jax"],
        datasets=[dataset], base_model=origin["hub"] if origin and "hub" in origin else None,
        model_name=repo, eval_results=results or None)
    lines = [f"# {repo}", "",
             "VTFPAR++ (frozen backbone + spatial and temporal side networks + fusion with "
             "attribute text features), trained with vtfpar-jax.", "",
             f"- **Dataset**: `{dataset}`; attribute set `{run['attribute_set']}` "
             f"({len(run['phrases'])} attributes)",
             f"- **Backbone**: `{config.get('backbone', {}).get('name', 'clip')}`, from "
             f"{backbone_origin.describe(origin)}",
             f"- **Checkpoint**: step {step}", "", "## Metrics", ""]
    if evaluation:
        lines += [f"Step {step}, evaluated on {evaluation.results.get('num_samples', '?')} test "
                  f"clips (`{evaluation.folder}/metrics.json` of the model dir), frames chosen "
                  "uniformly (the middles of equal segments). The published group metrics count "
                  "TP/TN/FP/FN per attribute group and average over groups (positive above "
                  "0.45); mA and instance metrics are the usual PAR protocol; Chen et al. "
                  "take the argmax in each multi-class group.", "", "```",
                  evaluation.table.rstrip(), "```", ""]
    else:
        lines += [f"Not evaluated: the model dir holds no evaluation of step {step}.", ""]
    if left_out:
        lines += [f"Left out, as not an evaluation of step {step}: "
                  f"{'; '.join(left_out)}.", ""]
    lines += ["## Training config", "", "```json", json.dumps(config, indent=1), "```", "",
              "## Usage", "", "```bash", "pip install vtfpar-jax",
              f"vtfpar predict --model hf://{repo} clip.mp4",
              f"vtfpar evaluate --model hf://{repo} --out eval_hub",
              f"vtfpar export --model hf://{repo} --format onnx --out model.onnx",
              "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def write_layout(model: str, folder: str, repo: str = "ORG/NAME") -> str:
    """Write the Hub layout of model dir `model` into `folder` (new or empty)."""
    from flax import traverse_util

    from vtfpar_jax.state import model_dir
    if os.path.isdir(folder) and os.listdir(folder):
        raise HubLayoutError(f"{folder}: not empty; choose a new folder")
    model = model_dir.resolve(model)
    loaded = model_dir.load(model)
    if old_names.PARAMS_KEY in loaded.state.trainable:
        raise HubLayoutError(f"{model}: frozen_patterns train part of the backbone; the Hub "
                             "layout holds a frozen backbone only")
    run = model_dir.read_run_file(model)
    source_hub = run.pop("hub", None)   # a Hub layout published again
    run["config"] = loaded.config.to_dict()   # the config in force (config_changes.jsonl)
    variables = loaded.variables()
    tensors = {f"{name}/{path}": np.asarray(value, np.float32)
               for name in ("params", "batch_stats")
               for path, value in traverse_util.flatten_dict(variables[name], sep="/").items()}
    # Whole or not at all, with the umask's modes: a stop or a full disk leaves no half
    # layout that a rerun would refuse as not empty.
    with files.atomic_folder(folder) as layout:
        _fill_layout(layout, model, repo, loaded, run, tensors,
                     _backbone_entry(run.get("backbone_origin"), source_hub))
    return folder


def _fill_layout(layout: str, model: str, repo: str, loaded, run: dict, tensors: dict,
                 backbone: dict) -> None:
    import safetensors.numpy

    safetensors.numpy.save_file(tensors, os.path.join(layout, WEIGHTS),
                                metadata={"format": "flax"})
    if "shipped" in backbone:   # a model dir's backbone/ (or clip/), or a Hub layout's own
        saved = old_names.backbone_folder(model)
        if not os.path.isdir(saved):
            raise HubLayoutError(f"{model}: no {old_names.FOLDER}/ (nor {old_names.OLD_FOLDER}/) "
                                 "to ship")
        shutil.copytree(saved, os.path.join(layout, BACKBONE))
    files_read = {WEIGHTS: digests.sha256(os.path.join(layout, WEIGHTS)),
                  **digests.of_folder(os.path.join(layout, BACKBONE), layout)}
    # The layout records its own files (hub.files); the model dir's backbone/ digests
    # name files that a layout naming a Hub backbone does not hold.
    run.pop("backbone_files", None)
    run["hub"] = {"step": loaded.step, "epoch": loaded.epoch, "backbone": backbone,
                  "files": dict(sorted(files_read.items()))}
    files.write_json(os.path.join(layout, CONFIG), run, indent=1)
    files.write_text(os.path.join(layout, "README.md"),
                     str(model_card(run, repo, loaded.step, *_evaluation(model, loaded.step))))


def push(model: str, repo: str, private: bool = False) -> str:
    """Write the layout in a temporary folder and upload it to `repo` (created if new)."""
    import huggingface_hub

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_layout(model, os.path.join(tmp, "layout"), repo)
        api = huggingface_hub.HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=folder,
                                 commit_message=f"vtfpar-jax model dir {os.path.basename(model)}")
    return str(info)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vtfpar push-to-hub",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the model dir to publish")
    parser.add_argument("repo", nargs="?", help="ORG/NAME on the Hub")
    parser.add_argument("--local", default=None, metavar="FOLDER",
                        help="write the layout into FOLDER and upload nothing")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    if args.repo is None and args.local is None:
        parser.error("give REPO to upload, or --local FOLDER")
    cli_errors.run(lambda: _push_to_hub(args))


def _push_to_hub(args) -> None:
    if args.local is not None:
        stop_signals.on_stop(f"nothing was written to {args.local}; rerun the same command")
        write_layout(args.model, args.local, args.repo or "ORG/NAME")
        print(f"wrote the Hub layout of {args.model} to {args.local}")
    else:   # the upload is one commit: all of it or nothing
        stop_signals.on_stop(f"nothing was committed to {args.repo}; rerun the same command")
        info = push(args.model, args.repo, args.private)
        print(f"uploaded {args.model} to {args.repo}: {info}")
