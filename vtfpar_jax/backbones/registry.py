"""The backbones the package knows, each one `Backbone` entry: all that is known of it outside
its Flax towers' code.

A backbone is one module that builds its entry and `register`s it (backbones/clip.py,
backbones/siglip.py; a test registers a toy one). Building a run, saving and loading a model
dir, the ablation presets and the benchmark ask this registry: by `config.backbone.name` (`get`),
by a backbone config object (`of`) or by a saved folder's config.json (`of_folder`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from vtfpar_jax.backbones import hf_clip
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import towers


@dataclasses.dataclass(frozen=True)
class Backbone:
    towers: towers.Backbone         # what the model reads of it (models/towers.py)
    # config.backbone.preset -> (image_size=, patch_size=) -> its config, for random weights of
    # that shape. Only a preset with free sizes ('tiny') reads them; each has defaults.
    presets: Mapping[str, Callable[..., Any]]
    # A ViT shape that `vtfpar bench --shape` and `vtfpar param-count --shape` name -> the
    # preset of that shape ('vit_b16' is CLIP's 'vit_b16' and SigLIP's 'base16').
    shapes: Mapping[str, str]
    # config.backbone.source other than 'random' -> (config.backbone.path) -> (its config,
    # params).
    loaders: Mapping[str, Callable[[str], tuple[Any, dict]]]
    # (config.backbone.path of source 'hf') -> its config, without reading the weights.
    read_config: Callable[[str], Any]
    # (cfg, params, folder): the copy a model dir keeps (backbone/), which `loaders['hf']` reads.
    save: Callable[[Any, Any, str], None]
    model_types: tuple[str, ...]    # `model_type` in the config.json of such a folder
    # phrases -> (A, context) ids for random weights, which have no vocabulary: one id per byte.
    byte_tokens: Callable[[tuple[str, ...]], Any]
    # (run config, phrases) -> (A, context) ids from the tokenizer of the checkpoint the config
    # names; its errors are ConfigErrors.
    tokens: Callable[[Any, tuple[str, ...]], Any]

    @property
    def name(self) -> str:          # config.backbone.name
        return self.towers.name

    @property
    def display_name(self) -> str:
        return self.towers.display_name


REGISTRY: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    """Adds `backbone` here and its towers to the model's table (models/towers.py)."""
    REGISTRY[backbone.name] = backbone
    towers.register(backbone.towers)
    return backbone


def get(name: str) -> Backbone:
    """The backbone that `config.backbone.name = name` runs."""
    if name not in REGISTRY:
        raise ConfigError(f"config.backbone.name={name!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def shape_config(backbone: str, shape: str) -> Any:
    """The config of `backbone`'s random weights of ViT shape `shape` (the benchmark's
    `--backbone` and `--shape`)."""
    if backbone not in REGISTRY:
        raise ValueError(f"--backbone {backbone!r}; expected one of {sorted(REGISTRY)}")
    entry = REGISTRY[backbone]
    if shape not in entry.shapes:
        raise ValueError(f"--shape {shape!r} with --backbone {backbone}; expected one of "
                         f"{tuple(entry.shapes)}")
    return entry.presets[entry.shapes[shape]]()


def shapes() -> tuple[str, ...]:
    """Every ViT shape some registered backbone has (the choices of `--shape`)."""
    return tuple(dict.fromkeys(s for b in REGISTRY.values() for s in b.shapes))


def add_shape_options(parser: argparse.ArgumentParser) -> None:
    """--backbone and --shape, for `parsed_shape` (--clip, --shape's name before "clip"
    stopped naming any backbone, is refused naming --shape)."""
    parser.add_argument("--backbone", default="clip", choices=sorted(REGISTRY),
                        help="the frozen backbone (random weights of its shape)")
    parser.add_argument("--shape", default="vit_b16", choices=shapes(),
                        help="the backbone's ViT shape (so400m14: SigLIP only, vit_l14: CLIP only)")
    parser.add_argument("--clip", dest="renamed_shape", default=None, help=argparse.SUPPRESS)


def parsed_shape(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """`shape_config` of the parsed --backbone and --shape, or argparse's error line."""
    if args.renamed_shape is not None:
        parser.error("--clip is now --shape")
    try:
        return shape_config(args.backbone, args.shape)
    except ValueError as e:
        parser.error(str(e))


def of(cfg: Any) -> Backbone:
    """The backbone whose config `cfg` is."""
    return REGISTRY[towers.of(cfg).name]


def of_folder(folder: str) -> Backbone:
    """The backbone of a saved checkpoint folder, by its config.json's model_type."""
    file, raw = hf_clip.read_config_file(folder)
    found = raw.get("model_type") if isinstance(raw, dict) else None
    for backbone in REGISTRY.values():
        if found in backbone.model_types:
            return backbone
    known = sorted(t for b in REGISTRY.values() for t in b.model_types)
    raise WeightImportError(f"{file}: model_type is {found!r}; expected one of {known}")
