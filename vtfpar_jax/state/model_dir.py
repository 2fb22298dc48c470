"""A model dir loaded for inference, from either of its two layouts.

- A training work dir (or a converted published checkpoint): config.json (config,
  attribute set, phrases, token ids), backbone/ (the frozen backbone, CLIP or SigLIP,
  HuggingFace format) and checkpoints/<step>/ (Orbax).
- Either one written before the backbone was called so holds `clip` in its place (in the
  config, the params and the folder's name); vtfpar_jax/state/old_names.py reads it as today's.
- The Hub layout (vtfpar_jax/tools/hub.py writes it, vtfpar_jax/state/hub_snapshot.py
  reads it): config.json, model.safetensors and backbone/, in a `push-to-hub --local`
  folder or the Hub cache's snapshot of `hf://ORG/NAME[@REV]`. It holds one step and
  no optimiser state, and none is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from vtfpar_jax import attributes
from vtfpar_jax.backbones import text
from vtfpar_jax.errors import UserError, nearest
from vtfpar_jax.models import towers, vtfpar
from vtfpar_jax.state import build, digests, fingerprint, hub_snapshot, old_names, optim, sharding
from vtfpar_jax.state.checkpoint import CheckpointStore, NoCheckpointError, abstract
from vtfpar_jax.state.train_state import Frozen, TrainState, initial_state


class ModelDirError(UserError, ValueError):
    """A model dir that does not fit what it is used with."""


class ModelDirMissingError(UserError, FileNotFoundError):
    """A model dir without its config.json or any loadable checkpoint."""


@dataclasses.dataclass
class LoadedModel:
    config: ml_collections.ConfigDict
    model_cfg: vtfpar.VTFPARConfig
    attribute_set: attributes.AttributeSet
    state: Any          # train.TrainState
    frozen: Any         # train.Frozen
    mesh: jax.sharding.Mesh
    step: int
    epoch: int | None   # the training epoch recorded with the step (None if not recorded)
    unreadable_newer: list[str] = dataclasses.field(default_factory=list)  # "step N (why)"

    @property
    def normalization(self) -> str:
        """The input normalisation it was trained with ('published' before the option)."""
        return self.config.input.get("normalization", "published")

    def builder(self, split: str | None = None):
        return dataset_builder(self.config, self.attribute_set.name, split)

    def variables(self) -> dict:
        """{'params', 'batch_stats', 'backbone'}: the form `predict.compute_logits` takes."""
        params = optim.merge(self.state.trainable, self.frozen.params)
        return {"params": params["model"], "batch_stats": self.state.batch_stats,
                "backbone": params["backbone"]}


def resolve(model: str) -> str:
    """A local folder: `model` itself, or for hf://ORG/NAME[@REV] its snapshot folder in the
    Hub cache (vtfpar_jax/state/hub_snapshot.py), so that every command that takes --model
    takes both. The snapshot is not the user's: nothing is written into it."""
    if model.startswith(hub_snapshot.SCHEME):
        return hub_snapshot.snapshot(model)
    return model


def identity(model: str) -> str:
    """What an output records as the model it ran: the model dir's absolute path, or for
    hf://ORG/NAME[@REV] the repo at the commit that was loaded."""
    if model.startswith(hub_snapshot.SCHEME):
        return hub_snapshot.pinned(model)
    return os.path.abspath(model)


def folder_inside(model: str, name: str) -> str:
    """A command's default output folder `name`, inside the model dir; a model from the Hub
    has no folder of the user's to write into, so there the output must be named."""
    if model.startswith(hub_snapshot.SCHEME):
        raise UserError(f"--model {model}: give --out; a model from the Hub has no folder of "
                        f"yours to write {name} into")
    return os.path.join(model, name)


def dataset_builder(config: ml_collections.ConfigDict, attribute_set: str | None = None,
                    split: str | None = None):
    """The TFDS builder of the config's dataset, prepared, with the model's attributes (if
    given: training reads them from it) and `split` (if given); else one `UserError` naming
    what is missing."""
    import input_pipeline
    from input_pipeline import pipeline
    b = input_pipeline.get_builder(config.dataset, config.data_dir or None)
    if not b.is_prepared():
        raise input_pipeline.DatasetNotBuiltError(b)
    if attribute_set is not None and pipeline.attribute_set(b).name != attribute_set:
        raise ModelDirError(f"model attributes {attribute_set!r} do not match "
                            f"dataset {config.dataset!r}")
    if split is not None and split not in b.info.splits:
        raise ModelDirError(f"--split {split!r}: the dataset {config.dataset!r} has the splits "
                            f"{', '.join(sorted(b.info.splits))}"
                            f"{nearest(split, b.info.splits)}")
    return b


def check_dataset(model: str, split: str, data_dir: str | None = None) -> None:
    """Before the model loads: its dataset (in `data_dir`, or the one it was trained with)
    is prepared and has `split`."""
    run = read_run_file(model)
    config = config_in_force(model, run)
    if data_dir:
        config.data_dir = data_dir
    dataset_builder(config, run["attribute_set"], split)


def config_in_force(model: str, run: dict) -> ml_collections.ConfigDict:
    """`run`'s config (`read_run_file(model)`) with the changes that restarts recorded since
    (config_changes.jsonl): a restart may have changed e.g. data_dir."""
    return ml_collections.ConfigDict(fingerprint.current_config(
        run["config"], fingerprint.read_changes(resolve(model))))


def read_run_file(model: str) -> dict:
    model = resolve(model)
    path = os.path.join(model, "config.json")
    if not os.path.isfile(path):
        raise ModelDirMissingError(f"{model}: not a model dir (no config.json); expected a "
                                   "training work dir, the output of `vtfpar convert` or a "
                                   "Hub layout (`vtfpar push-to-hub --local`)")
    with open(path) as f:
        run = json.load(f)
    run["config"] = old_names.config(run["config"])
    return run


def fresh_state(config, model_cfg, backbone_params, variables: dict | None = None):
    """(step-0 TrainState, frozen params) laid out as this config trains them.

    Without `variables`, the state holds shapes only (jax.ShapeDtypeStruct): what a
    checkpoint is restored onto, which is all a loaded model dir needs. The model's fresh
    variables are then computed only where the config freezes some of them, since the
    frozen ones are not in a checkpoint; run eagerly, their init is hundreds of small ops.
    The schedule inside the optimiser does not shape its state, so any will do.
    """
    tx = optim.make_optimizer(config.optimizer, optim.make_schedule(config.optimizer,
                                                                    config.num_epochs, 1))
    if variables is not None:
        return initial_state(variables, backbone_params, config.frozen_patterns, tx)

    def fresh():
        return initial_state(vtfpar.init(model_cfg, jax.random.PRNGKey(0)), backbone_params,
                             config.frozen_patterns, tx)

    template, frozen = jax.eval_shape(fresh)
    if "model" in frozen:
        return fresh()
    # The frozen leaves are backbone ones: take them from `backbone_params` itself.
    real = traverse_util.flatten_dict({"backbone": backbone_params}, sep="/")
    return template, traverse_util.unflatten_dict(
        {k: real[k] for k in traverse_util.flatten_dict(frozen, sep="/")}, sep="/")


def load_announced(model: str, step: int | None = None,
                   data_dir: str | None = None) -> LoadedModel:
    """`load`, and one `warning:` line on stderr when a newer checkpoint was unreadable and
    an older step is used."""
    loaded = load(model, step, data_dir)
    if loaded.unreadable_newer:
        print(f"warning: using step {loaded.step} of {model}: the newer checkpoint(s) cannot be "
              f"read ({'; '.join(loaded.unreadable_newer)}); the results are step "
              f"{loaded.step}'s and say so", file=sys.stderr)
    return loaded


def load(model: str, step: int | None = None, data_dir: str | None = None) -> LoadedModel:
    """The model `model` (a folder of either layout, or hf://ORG/NAME[@REV]) at `step`
    (default: its newest readable one), for inference: no optimiser state is read or built.
    `data_dir`, if given, replaces the TFDS data dir of its config (what `builder` reads)."""
    model = resolve(model)
    run = read_run_file(model)
    config = config_in_force(model, run)
    if data_dir:
        config.data_dir = data_dir
    if "hub" in run:   # a Hub layout's config.json (a model dir's has checkpoints instead)
        return _load_layout(model, run, config, step)
    saved = old_names.backbone_folder(model)
    digests.check_backbone(saved, model, run.get("backbone_files"))
    backbone_cfg, backbone_params = _backbone(model, config, saved)
    model_cfg = _model_config(config, backbone_cfg, run)
    template, frozen_params = fresh_state(config, model_cfg, backbone_params)
    mesh = sharding.make_mesh()
    store = CheckpointStore(model, async_save=False)
    # Inference reads no optimiser state: its moments are not even read from disk.
    wanted = {"step": template.step, "trainable": template.trainable,
              "batch_stats": template.batch_stats}
    try:
        restored, meta = store.restore(abstract(wanted, sharding.replicated(mesh)), step,
                                       announce=False, partial=True)
    except NoCheckpointError as e:
        raise ModelDirMissingError(f"{model}: no checkpoint to load ({e})") from None
    finally:
        store.close()
    state = TrainState(**restored, opt_state=optax.EmptyState())
    return _loaded(config, run, backbone_cfg, backbone_params, model_cfg, state, frozen_params,
                   mesh, int(meta["step"]), meta.get("epoch"), os.path.join(model, "text_cache"),
                   list(store.unreadable))


def _load_layout(folder: str, run: dict, config: ml_collections.ConfigDict,
                 step: int | None) -> LoadedModel:
    """The Hub layout in `folder`: its one step, every file checked as it is read."""
    hub = run["hub"]
    if step is not None and step != hub["step"]:
        raise ModelDirError(f"{folder}: --step {step}, but this Hub layout holds step "
                            f"{hub['step']} only")
    backbone_cfg, backbone_params = _backbone(folder, config,
                                              hub_snapshot.backbone_folder(folder, run))
    model_cfg = _model_config(config, backbone_cfg, run)
    expected = jax.eval_shape(lambda: vtfpar.init(model_cfg, jax.random.PRNGKey(0)))
    variables = hub_snapshot.variables(hub_snapshot.read_weights(folder, run), expected, folder)
    # optax.identity: inference steps no optimiser, so its state is empty.
    state, frozen_params = initial_state(variables, backbone_params, config.frozen_patterns,
                                         optax.identity())
    state = state.replace(step=jnp.asarray(hub["step"], jnp.int32))
    mesh = sharding.make_mesh()
    # No text cache: a Hub snapshot is not a folder of ours to write into.
    return _loaded(config, run, backbone_cfg, backbone_params, model_cfg,
                   sharding.replicate(state, mesh), frozen_params, mesh, hub["step"],
                   hub.get("epoch"), None, [])


def _backbone(model: str, config: ml_collections.ConfigDict, folder: str):
    """(cfg, params) of the backbone saved in `folder`, of the kind the config names."""
    backbone_cfg, backbone_params = build.load_backbone_folder(folder)
    if towers.of(backbone_cfg).name != build.backbone(config).name:
        raise ModelDirError(f"{model}: config.json says backbone "
                            f"{build.backbone(config).name!r}, but {os.path.basename(folder)}/ "
                            f"holds a {towers.of(backbone_cfg).display_name} checkpoint")
    return backbone_cfg, backbone_params


def _model_config(config: ml_collections.ConfigDict, backbone_cfg,
                  run: dict) -> vtfpar.VTFPARConfig:
    attribute_set = attributes.get(run["attribute_set"])
    return build.model_config(config, backbone_cfg, attribute_set.num_attributes,
                              attribute_set.head_groups)


def _loaded(config, run: dict, backbone_cfg, backbone_params, model_cfg, state, frozen_params, mesh,
            step: int, epoch: int | None, text_cache: str | None,
            unreadable: list[str]) -> LoadedModel:
    tokens = np.asarray(run["tokens"], np.int32)
    features = text.attribute_text_features(backbone_cfg, backbone_params, run["phrases"], tokens,
                                            cache_dir=text_cache)
    ratio = run.get("positive_ratio")
    frozen = sharding.replicate(Frozen(params=frozen_params, text_features=jnp.asarray(features),
                                       positive_ratio=None if ratio is None else
                                       jnp.asarray(ratio, jnp.float32)), mesh)
    return LoadedModel(config, model_cfg, attributes.get(run["attribute_set"]), state, frozen,
                       mesh, step, epoch, unreadable)
