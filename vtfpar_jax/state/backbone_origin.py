"""Where a model's backbone came from, recorded when its model dir is made (`backbone_origin`
in config.json), so that a published copy can name it exactly or ship it.

One of:
- `{"hub": ID, "commit": SHA, "files": {name: SHA-256}}`: a Hub repo, at the commit of
  the snapshot that was read, with the digests of its backbone files there;
- `{"file": PATH, "sha256": SHA-256}`: a weight file (an OpenAI `.pt`);
- `{"folder": PATH}`: a local HuggingFace folder, which may move or change: only the
  model dir's backbone/ keeps what was read, and an upload ships that;
- `{"random": PRESET, "seed": N, "image_size": ..., "patch_size": ...}`: seeded random
  weights (vtfpar_jax.models.rng's `backbone_init` stream).

Model dirs made before it have no record; their backbone/ (clip/) is all there is, and an upload
ships it.
"""

from __future__ import annotations

import os

import ml_collections

from vtfpar_jax.backbones import hf_clip, hf_siglip
from vtfpar_jax.state import digests

# The files of a Hub snapshot that a backbone's loaders and tokenizers read.
HUB_PATTERNS = sorted({*hf_clip.HUB_PATTERNS, *hf_siglip.HUB_PATTERNS})


def of_config(config: ml_collections.ConfigDict) -> dict:
    """The origin of config.backbone's backbone, as it is found now (for a Hub id, the snapshot
    that the run reads: in offline mode, the cached one)."""
    c = config.backbone
    if c.source == "random":
        return {"random": c.preset, "seed": config.seed, "image_size": c.image_size,
                "patch_size": c.patch_size}
    return of_path(c.path)


def of_path(path: str) -> dict:
    """The origin of backbone weights at `path`: a file, a folder or a Hub id."""
    if os.path.isfile(path):
        return {"file": os.path.abspath(path), "sha256": digests.sha256(path)}
    if os.path.isdir(path):
        return {"folder": os.path.abspath(path)}
    return of_hub(path, hf_clip.resolve_folder(path, HUB_PATTERNS))


def of_hub(repo: str, snapshot: str) -> dict:
    """The origin of Hub repo `repo` read from its `snapshot` folder (named by its commit)."""
    from huggingface_hub.utils import filter_repo_objects
    names = filter_repo_objects(digests.files_under(snapshot, snapshot),
                                allow_patterns=HUB_PATTERNS)
    return {"hub": repo, "commit": os.path.basename(snapshot),
            "files": {name: digests.sha256(os.path.join(snapshot, name))
                      for name in sorted(names)}}


def describe(origin: dict | None) -> str:
    """One line for a person: where the backbone came from."""
    if origin is None:
        return "not recorded (a model dir made before backbone_origin)"
    if "hub" in origin:
        return f"hf://{origin['hub']}@{origin['commit']}"
    if "file" in origin:
        return f"{origin['file']} (SHA-256 {origin['sha256']})"
    if "folder" in origin:
        return f"the local folder {origin['folder']}"
    return (f"random weights, preset {origin['random']!r}, seed {origin['seed']} "
            f"({origin['image_size']} px, patch {origin['patch_size']})")
