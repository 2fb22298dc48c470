"""A model in the Hub layout (what `vtfpar push-to-hub` writes), read where it lies.

`hf://ORG/NAME[@REV]` is the folder `huggingface_hub.snapshot_download` returns:
the snapshot in the Hub's own cache, named by its commit (with `HF_HUB_OFFLINE=1`
it is found in that cache alone). Nothing is copied or converted: `model_dir.load`
reads the layout (config.json, model.safetensors, backbone/) from that folder, or
from a `push-to-hub --local` folder, the same way, and builds no optimiser state.

What the model reads is checked where it is read, on every load, against the SHA-256 that
config.json records (vtfpar_jax/state/digests.py): model.safetensors from the very bytes
then parsed, the backbone's files just before its loader opens them. The Hub cache is an
ordinary writable folder that huggingface_hub does not check again once downloaded, and a
`--local` folder has no cache at all; one check covers both.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys

from vtfpar_jax.errors import UserError, reason
from vtfpar_jax.state.digests import check_folder

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
BACKBONE = "backbone"
SCHEME = "hf://"


class HubLayoutError(UserError, ValueError):
    """A Hub repo (or a model dir to publish) whose files do not fit; the message names the file."""


def parse(spec: str) -> tuple[str, str | None]:
    """'hf://ORG/NAME[@REV]' -> (repo id, revision or None)."""
    repo, _, revision = spec.removeprefix(SCHEME).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise HubLayoutError(f"{spec}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    return repo, revision or None


def snapshot(spec: str) -> str:
    """The snapshot folder of `hf://ORG/NAME[@REV]` in the Hub cache, named by its commit.

    Asked once per process: a command records the model (`pinned`) and then loads it,
    and both must see the same commit, with one Hub request."""
    import huggingface_hub.constants as constants
    return _download(spec, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)


@functools.cache
def _download(spec: str, cache: str, offline: bool) -> str:
    """`snapshot`, keyed also by the Hub cache and offline mode it was asked under."""
    import huggingface_hub

    repo, revision = parse(spec)
    try:
        return huggingface_hub.snapshot_download(repo, revision=revision)
    except Exception as e:  # noqa: BLE001 - offline, missing repo, network: one message
        raise HubLayoutError(f"{spec}: cannot get the repo ("
                             f"{reason(e)})") from None


def pinned(spec: str) -> str:
    """`hf://ORG/NAME@<commit>`: the snapshot `spec` names now (a branch such as main moves)."""
    repo, _ = parse(spec)
    return f"{SCHEME}{repo}@{os.path.basename(snapshot(spec))}"


def read_weights(folder: str, run: dict) -> dict:
    """{'params/...', 'batch_stats/...': array} of the layout in `folder`, from the bytes
    whose SHA-256 config.json records."""
    import safetensors.numpy
    path = os.path.join(folder, WEIGHTS)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise HubLayoutError(f"{path}: cannot read it ({e.strerror})") from None
    if hashlib.sha256(data).hexdigest() != run["hub"]["files"].get(WEIGHTS):
        raise HubLayoutError(f"{path}: differs from the SHA-256 that {CONFIG} records")
    return safetensors.numpy.load(data)


def backbone_folder(folder: str, run: dict) -> str:
    """The folder of the layout's backbone, each file checked against config.json: the
    Hub repo that `hub.backbone` names at its commit, or the layout's own backbone/."""
    named = run["hub"].get("backbone", {})
    if "hub" in named:
        return _named_backbone(named)
    if run["hub"].get("backbone_repo"):   # a layout written before backbones were pinned
        from vtfpar_jax.backbones import hf_clip
        repo = run["hub"]["backbone_repo"]
        print(f"warning: {folder}: the backbone {repo} is named without a commit (a layout "
              "written before backbones were pinned); reading its current revision, "
              "unchecked", file=sys.stderr)
        return hf_clip.resolve_folder(repo)
    return _shipped_backbone(folder, run)


def _named_backbone(named: dict) -> str:
    """The snapshot of Hub repo `named['hub']` at `named['commit']`, holding exactly the
    files `named['files']` lists with their SHA-256 (vtfpar_jax/state/backbone_origin.py)."""
    import huggingface_hub
    spec = f"{SCHEME}{named['hub']}@{named['commit']}"
    try:
        snapshot = huggingface_hub.snapshot_download(named["hub"], revision=named["commit"],
                                                     allow_patterns=sorted(named["files"]))
    except Exception as e:  # noqa: BLE001 - offline, missing repo, network: one message
        raise HubLayoutError(f"the backbone {spec}: cannot get it ("
                             f"{reason(e)})") from None
    check_folder(snapshot, snapshot, named["files"], CONFIG, HubLayoutError, extra_allowed=True,
                 differs=lambda path: f"the backbone {spec}: {path} is missing or differs "
                                      "from the SHA-256 recorded when the model was trained")
    return snapshot


def _shipped_backbone(folder: str, run: dict) -> str:
    """The layout's backbone/ folder, each of its files checked against config.json, and
    no file there that config.json does not list."""
    digests = {name: digest for name, digest in run["hub"]["files"].items()
               if name.startswith(BACKBONE + "/")}
    backbone = os.path.join(folder, BACKBONE)
    check_folder(backbone, folder, digests, CONFIG, HubLayoutError)
    return backbone


def variables(tensors: dict, expected: dict, source: str) -> dict:
    """{'params', 'batch_stats'} trees of `expected`'s shapes from the flat `tensors`, each
    tensor present, of its shape, and none left over; else one error naming the tensor."""
    from flax import traverse_util
    tensors, out = dict(tensors), {}
    for name in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(expected[name], sep="/")
        for path, leaf in flat.items():
            key = f"{name}/{path}"
            if key not in tensors or tensors[key].shape != tuple(leaf.shape):
                raise HubLayoutError(
                    f"{source}: {WEIGHTS} has no tensor {key!r} of shape {tuple(leaf.shape)} "
                    f"(found {tensors[key].shape if key in tensors else 'none'}); it does not "
                    f"match {CONFIG}")
            flat[path] = tensors.pop(key)
        out[name] = traverse_util.unflatten_dict(flat, sep="/")
    if tensors:
        raise HubLayoutError(f"{source}: {WEIGHTS} holds tensors {CONFIG} does not describe "
                             f"(e.g. {sorted(tensors)[0]!r})")
    return out
