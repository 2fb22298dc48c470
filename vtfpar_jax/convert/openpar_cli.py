"""Convert a published VTFPAR++ checkpoint into a model dir (the format training writes).

A checkpoint of train.py (one head per attribute) or of train_marco.py (one per attribute
group, `model.head = 'group'`): the weight shapes tell which.

    vtfpar convert --checkpoint ckpt.pth --clip ViT-B-16.pt \\
        --dataset mars --out runs/published_mars [--frames 6 --spatial_interact_map default ...]

`--clip` is OpenAI's `ViT-B-16.pt` or a HuggingFace CLIP id/folder: the
published checkpoint lacks the text tower. The model dir then works with
`vtfpar_jax.evaluation.evaluate --model` and `vtfpar_jax.inference.predict --model`.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from vtfpar_jax import attributes, cli_errors
from vtfpar_jax.backbones import clip_tokenizer, hf_clip, openai_clip
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.convert import openpar
from vtfpar_jax.errors import ConfigError, UserError
from vtfpar_jax.outputs import files
from vtfpar_jax.state import backbone_origin, digests, old_names
from vtfpar_jax.state.checkpoint import CheckpointStore


class OutputExistsError(UserError, FileExistsError):
    """--out already holds something: it is never overwritten."""


# Each a config module configs.<name> and an attribute set of the same name.
DATASETS = ("duke", "mars")


def check_new(out: str) -> None:
    """Refuse an --out that holds anything: a model dir's config.json and backbone/ would replace
    files of the same names (a user's folder, or another model)."""
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more"
                                          if len(entries) > 3 else "")
        raise OutputExistsError(f"--out {out} holds {shown}; choose a new or empty --out")


def write_model_dir(out: str, cfg, variables: dict, config, attribute_set, tokens: np.ndarray,
                    phrases, origin: dict) -> None:
    """config.json + backbone/ + checkpoints/0 exactly as a training run lays them out, filled
    in a folder beside `out` and renamed to it once whole: a stop or an error midway leaves
    `out` as it was, so the same command can run again."""
    from vtfpar_jax.state.model_dir import fresh_state
    check_new(out)
    state, _ = fresh_state(config, cfg, variables["backbone"], variables)
    with files.atomic_folder(out) as folder:
        backbone = os.path.join(folder, old_names.FOLDER)
        hf_clip.save(cfg.backbone, variables["backbone"], backbone)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"config": config.to_dict(), "backbone_origin": origin,
                       "backbone_files": digests.of_folder(backbone, folder),
                       "attribute_set": attribute_set.name,
                       "phrases": list(phrases), "tokens": tokens.tolist(),
                       "converted_from": "published VTFPAR++ checkpoint"}, f, indent=1,
                      default=list)
        store = CheckpointStore(folder, async_save=False)
        store.save(0, state, {"step": 0, "epoch": 0, "batch": 0}, force=True)
        store.wait()
        store.close()


def convert_files(checkpoint: str, clip_path: str, dataset: str, out: str,
                  bpe_path: str | None = None, **options) -> str:
    import importlib
    check_new(out)   # before the minutes of reading and converting
    config = importlib.import_module(f"configs.{dataset}").get_config()
    attribute_set = attributes.get(dataset)
    state = openpar.read_checkpoint(checkpoint)
    if os.path.isfile(clip_path):
        state.update({"clip/" + k: v for k, v in openai_clip.read_state_dict(clip_path).items()})
        clip, folder = None, None
    else:
        clip = hf_clip.load(clip_path)
        folder = hf_clip.resolve_folder(clip_path)
    try:
        tok = clip_tokenizer.for_checkpoint(folder, bpe_path)
    except (FileNotFoundError, ValueError) as e:  # no BPE file, or a bad one
        raise ConfigError(f"--bpe: {e}") from None
    cfg, variables = openpar.convert(state, clip=clip, source=checkpoint,
                                     group_columns=attribute_set.head_groups, **options)
    if cfg.num_attributes != attribute_set.num_attributes:
        raise WeightImportError(f"{checkpoint}: {cfg.num_attributes} attributes, but dataset "
                                f"{dataset!r} has {attribute_set.num_attributes}")
    m = config.model
    m.frames, m.dim, m.head = cfg.frames, cfg.dim, cfg.head
    for side in ("spatial", "temporal"):
        m[f"{side}_map"] = ",".join(f"{s}->{t}" for s, t in getattr(cfg, f"{side}_map"))
        m[f"{side}_aggregation"] = getattr(cfg, f"{side}_aggregation")
        m[f"use_{side}"] = getattr(cfg, f"use_{side}")
    origin = backbone_origin.of_path(clip_path)
    c = config.backbone
    c.source, c.path = "hf", os.path.join(os.path.abspath(out), old_names.FOLDER)
    c.image_size, c.patch_size = cfg.backbone.image_size, cfg.backbone.patch_size
    phrases = attribute_set.published_phrases
    tokens = clip_tokenizer.tokenize(tok, phrases)
    write_model_dir(out, cfg, variables, config, attribute_set, tokens, phrases, origin)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vtfpar convert", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the published train.py checkpoint")
    parser.add_argument("--clip", required=True, help="OpenAI ViT-B-16.pt, or a HF CLIP id/folder")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--out", required=True, help="the model dir to write (must be new)")
    parser.add_argument("--bpe", default=None,
                        help="a copy of OpenAI's bpe_simple_vocab_16e6.txt.gz to use instead of "
                        "the one shipped with the package")
    for name, default in openpar.PUBLISHED_DEFAULTS.items():
        kind = {bool: lambda v: v.lower() in ("1", "true", "yes"), int: int}.get(type(default), str)
        parser.add_argument(f"--{name}", type=kind, default=default)
    args = vars(parser.parse_args(argv))
    fixed = {k: args.pop(k) for k in ("checkpoint", "clip", "dataset", "out", "bpe")}

    def convert():
        out = convert_files(fixed["checkpoint"], fixed["clip"], fixed["dataset"], fixed["out"],
                            fixed["bpe"], **args)
        print(f"wrote model dir {out}: evaluate with vtfpar evaluate --model {out}")

    cli_errors.run(convert)
