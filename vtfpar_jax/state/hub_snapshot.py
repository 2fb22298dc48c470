"""hf://ORG/NAME[@REV] -> a local model dir (the loading half of vtfpar_jax/tools/hub.py).

`huggingface_hub.snapshot_download` fetches the repo (or finds it in its cache;
`HF_HUB_OFFLINE=1` works from the cache alone). Every file config.json lists is
checked against its SHA-256, and the weights against the shapes the config
implies; a mismatch is one error naming the file. The snapshot is then written
once as an ordinary model dir under `$VTFPAR_HUB_CACHE` (default
`~/.cache/vtfpar/hub/<ORG>--<NAME>--<commit>`), which every command loads as it
loads a training run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile

from vtfpar_jax.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
BACKBONE = "backbone"
SCHEME = "hf://"


class HubLayoutError(UserError, ValueError):
    """A Hub repo (or a model dir to publish) whose files do not fit; the message names the file."""


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse(spec: str) -> tuple[str, str | None]:
    """'hf://ORG/NAME[@REV]' -> (repo id, revision or None)."""
    repo, _, revision = spec.removeprefix(SCHEME).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise HubLayoutError(f"{spec}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    return repo, revision or None


def _snapshot(spec: str) -> tuple[str, str]:
    """(repo id, the local snapshot folder, named by its commit) of `hf://ORG/NAME[@REV]`.

    Asked once per process: a command records the model (`pinned`) and then loads it
    (`model_dir_from_hub`), and both must see the same commit, with one Hub request."""
    import huggingface_hub.constants as constants
    return _download(spec, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)


@functools.cache
def _download(spec: str, cache: str, offline: bool) -> tuple[str, str]:
    """`_snapshot`, keyed also by the Hub cache and offline mode it was asked under."""
    import huggingface_hub

    repo, revision = parse(spec)
    try:
        return repo, huggingface_hub.snapshot_download(repo, revision=revision)
    except Exception as e:  # noqa: BLE001 - offline, missing repo, network: one message
        raise HubLayoutError(f"{spec}: cannot get the repo ({type(e).__name__}: "
                             f"{str(e).splitlines()[0]})") from None


def pinned(spec: str) -> str:
    """`hf://ORG/NAME@<commit>`: the snapshot `spec` names now (a branch such as main moves)."""
    repo, snapshot = _snapshot(spec)
    return f"{SCHEME}{repo}@{os.path.basename(snapshot)}"


def model_dir_from_hub(spec: str) -> str:
    """A local model dir for `hf://ORG/NAME[@REV]`, made once per snapshot commit."""
    repo, snapshot = _snapshot(spec)
    root = os.environ.get("VTFPAR_HUB_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "vtfpar", "hub"))
    out = os.path.join(root, f"{repo.replace('/', '--')}--{os.path.basename(snapshot)}")
    if not os.path.isfile(os.path.join(out, CONFIG)):
        materialize(snapshot, out, source=spec)
    return out


def materialize(folder: str, out: str, source: str) -> None:
    """Write the model dir `out` from the Hub layout in `folder`, checking every file."""
    import ml_collections
    import safetensors.numpy
    from flax import traverse_util

    from vtfpar_jax import attributes
    from vtfpar_jax.backbones import hf_clip
    from vtfpar_jax.models import vtfpar
    from vtfpar_jax.state import build, optim
    from vtfpar_jax.state.checkpoint import CheckpointStore
    from vtfpar_jax.state.train_state import initial_state
    try:
        with open(os.path.join(folder, CONFIG)) as f:
            run = json.load(f)
        hub = run.pop("hub")
    except (OSError, ValueError, KeyError) as e:
        raise HubLayoutError(f"{source}: {CONFIG} missing or not a vtfpar-jax Hub layout "
                             f"({type(e).__name__}: {e})") from None
    for name, digest in hub["files"].items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or sha256(path) != digest:
            raise HubLayoutError(f"{source}: {name} is missing or differs from the SHA-256 "
                                 f"that {CONFIG} records")
    backbone = (os.path.join(folder, BACKBONE) if hub["backbone_repo"] is None
                else hf_clip.resolve_folder(hub["backbone_repo"]))
    config = ml_collections.ConfigDict(run["config"])
    clip_cfg, clip_params = build.load_backbone_folder(backbone)
    attribute_set = attributes.get(run["attribute_set"])
    model_cfg = build.model_config(config, clip_cfg, attribute_set.num_attributes,
                                   attribute_set.head_groups)
    import jax
    expected = jax.eval_shape(lambda: vtfpar.init(model_cfg, jax.random.PRNGKey(0)))
    found = safetensors.numpy.load_file(os.path.join(folder, WEIGHTS))
    variables = {}
    for name, tree in expected.items():
        flat = traverse_util.flatten_dict(tree, sep="/")
        for path, leaf in flat.items():
            key = f"{name}/{path}"
            if key not in found or found[key].shape != tuple(leaf.shape):
                raise HubLayoutError(
                    f"{source}: {WEIGHTS} has no tensor {key!r} of shape {tuple(leaf.shape)} "
                    f"(found {found[key].shape if key in found else 'none'}); it does not "
                    f"match {CONFIG}")
            flat[path] = found.pop(key)
        variables[name] = traverse_util.unflatten_dict(flat, sep="/")
    if found:
        raise HubLayoutError(f"{source}: {WEIGHTS} holds tensors {CONFIG} does not describe "
                             f"(e.g. {sorted(found)[0]!r})")
    # The optimiser state only has to have the right structure: the model is not trained.
    tx = optim.make_optimizer(config.optimizer, optim.make_schedule(config.optimizer,
                                                                    config.num_epochs, 1))
    state, _ = initial_state(variables, clip_params, config.frozen_patterns, tx)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".", dir=os.path.dirname(out))
    shutil.copytree(backbone, os.path.join(tmp, "clip"))
    config.clip.source, config.clip.path = "hf", os.path.join(out, "clip")
    with open(os.path.join(tmp, CONFIG), "w") as f:
        json.dump({**run, "config": config.to_dict(), "hub_source": source}, f, indent=1,
                  default=list)
    store = CheckpointStore(tmp, async_save=False)
    store.save(hub["step"], state, {"step": hub["step"], "epoch": hub["epoch"], "batch": 0},
               force=True)
    store.wait()
    store.close()
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)


