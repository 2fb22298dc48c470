"""HuggingFace CLIP checkpoints (`CLIPModel.save_pretrained` folders or hub ids) <-> our params.

    cfg, params = hf_clip.load("openai/clip-vit-base-patch16")   # cached hub repo
    cfg, params = hf_clip.load("/data/clip-vit-base-patch16")    # local folder
    hf_clip.save(cfg, params, "/tmp/clip")                       # and back

A folder holds `config.json` and either `model.safetensors` or shards listed in
`model.safetensors.index.json`. Only safetensors are read (with
`safetensors.numpy`, no torch): they hold raw arrays, so reading an untrusted
file cannot run code, unlike a pickled `pytorch_model.bin`.

HF keeps q, k and v as three Linear layers where our block packs one (W, 3W)
`qkv` kernel laid out [q | k | v]; the table below maps everything else
one-to-one, and `QKV` packs (load) or splits (save) the attention projections.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax.backbones.weights import (
    CONV,
    COPY,
    LINEAR,
    Layout,
    SourceTensors,
    WeightImportError,
    block_table,
    leaf,
    norm,
    transpose,
)
from vtfpar_jax.models import clip
from vtfpar_jax.models.layers import ACTIVATIONS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# What a hub snapshot needs: weights, config, and the tokenizer files beside them.
HUB_PATTERNS = ["*.json", "*.safetensors", "vocab.json", "merges.txt", "tokenizer*"]

# transformers' encoder layer: its names of our block's modules (weights.block_table); q, k
# and v are three Linear layers there, packed apart (`QKV`, `pack_qkv`).
BLOCK_NAMES = ("layer_norm1.", None, "self_attn.out_proj.", "layer_norm2.", "mlp.fc1.", "mlp.fc2.")
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")

_TOP_TABLE = (  # HF names outside the encoder layers -> ours
    ("vision_model.embeddings.class_embedding", "vision/class_embedding", COPY),
    ("vision_model.embeddings.patch_embedding.weight", "vision/patch_embed/kernel", CONV),
    ("vision_model.embeddings.position_embedding.weight", "vision/position_embedding", COPY),
    *norm("vision_model.pre_layrnorm", "vision/pre_layernorm"),  # sic: 'layrnorm'
    *norm("vision_model.post_layernorm", "vision/post_layernorm"),
    ("visual_projection.weight", "vision/projection/kernel", LINEAR),
    ("text_model.embeddings.token_embedding.weight", "text/token_embedding/embedding", COPY),
    ("text_model.embeddings.position_embedding.weight", "text/position_embedding", COPY),
    *norm("text_model.final_layer_norm", "text/final_layernorm"),
    ("text_projection.weight", "text/projection/kernel", LINEAR),
    ("logit_scale", "logit_scale", COPY),
)

_TOWERS = (("vision_model", "vision"), ("text_model", "text"))


@dataclasses.dataclass(frozen=True)
class Model:
    """A model of two towers as transformers saves it (CLIP, SigLIP): what differs between
    their folders. The folder, its safetensors, the encoder layers' names and the q/k/v
    packing are the same for both, and are this module's."""

    model_type: str             # in config.json, and the root of our paths in messages
    display_name: str
    hf_model: str               # transformers' model class, in messages
    hf_config: str              # transformers' config class, which reads config.json
    config_type: Any            # ours: `from_hf`, `to_hf`
    init_params: Callable       # (cfg, rng) -> our params, for their shapes
    # cfg -> every one-to-one (HF key, our path, layouts) outside the encoder layers.
    outer_table: Callable[[Any], Iterable[tuple[str, str, Layout]]]
    known_activations: str      # transformers' hidden_act values read, in messages
    hub_patterns: list[str]     # what a hub snapshot needs
    # model_type -> why such a checkpoint is refused (before "expected model_type ...").
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def name_table(self, cfg) -> Iterator[tuple[str, str, Layout]]:
        """Every one-to-one (HF key, our path, layouts) of a model of this shape."""
        yield from self.outer_table(cfg)
        for hf_tower, tower in _TOWERS:
            for i in range(getattr(cfg, tower).layers):
                yield from block_table(f"{hf_tower}.encoder.layers.{i}", f"{tower}/layers_{i}",
                                       BLOCK_NAMES)

    def read_config(self, folder: str):
        """Our config from a checkpoint folder's config.json (defaults filled by
        transformers)."""
        import transformers

        file, raw = read_config_file(folder)
        found = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        if found in self.refused:
            raise WeightImportError(f"{file}: {self.refused[found]}")
        if found != self.model_type:
            raise WeightImportError(f"{file}: model_type is {found!r}, expected "
                                    f"{self.model_type!r} (a {self.hf_model} checkpoint with "
                                    "both towers)")
        try:
            cfg = self.config_type.from_hf(getattr(transformers, self.hf_config).from_dict(raw))
        except (KeyError, TypeError, ValueError) as e:
            raise WeightImportError(f"{file}: not a usable {self.display_name} config "
                                    f"({type(e).__name__}: {e})") from None
        for tower in (cfg.vision, cfg.text):
            if tower.activation not in ACTIVATIONS:
                raise WeightImportError(f"{file}: hidden_act {tower.activation!r} is not "
                                        f"supported (known: {self.known_activations})")
        return cfg

    def config_at(self, path: str | os.PathLike):
        """Our config of a folder or hub id, without reading the weights."""
        return self.read_config(resolve_folder(path, self.hub_patterns))

    def params_from_tensors(self, state: Mapping[str, Any], cfg,
                            source: str = "state dict") -> dict:
        """Our params from HF-named tensors (numpy arrays or torch tensors) of shape `cfg`:
        every key consumed, every leaf filled (errors name key, shapes and `source`)."""
        root = self.model_type
        tensors = SourceTensors(state, source)
        for hf_key, path, (to_ours, _) in self.name_table(cfg):
            tensors.take(hf_key, f"{root}/{path}", to_ours)
        for hf_layer, path, width in _qkv_table(cfg):
            pack_qkv(tensors, hf_layer, f"{root}/{path}", width)
        # Older transformers saved the `position_ids` buffers (0..n-1); they carry no weights.
        tensors.drop(lambda key: key.endswith(".embeddings.position_ids"))
        tensors.check_consumed()
        shapes = jax.eval_shape(lambda: self.init_params(cfg, jax.random.key(0)))
        return jax.tree.map(jnp.asarray, tensors.build_tree(shapes, prefix=(root,)))

    def load(self, path: str | os.PathLike) -> tuple[Any, dict]:
        """(cfg, params) from a HF checkpoint folder, or a hub id (cache, or hub if
        reachable)."""
        folder = resolve_folder(path, self.hub_patterns)
        cfg = self.read_config(folder)
        state, source = read_tensors(folder)
        return cfg, self.params_from_tensors(state, cfg, source)

    def tensors_from_params(self, cfg, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """HF-named float32 tensors from our params (the inverse of `params_from_tensors`)."""
        out = {hf_key: to_hf(leaf(params, path))
               for hf_key, path, (_, to_hf) in self.name_table(cfg)}
        for hf_layer, path, _ in _qkv_table(cfg):
            kernels = np.split(leaf(params, f"{path}/kernel"), len(QKV), axis=1)
            biases = np.split(leaf(params, f"{path}/bias"), len(QKV))
            for proj, kernel, bias in zip(QKV, kernels, biases, strict=True):
                out[f"{hf_layer}.{proj}.weight"] = transpose(kernel)
                out[f"{hf_layer}.{proj}.bias"] = np.ascontiguousarray(bias)
        return out

    def save(self, cfg, params: Mapping[str, Any], folder: str | os.PathLike) -> None:
        """Write config.json + model.safetensors in HF's names (loadable by transformers'
        model class and by `load`)."""
        import safetensors.numpy

        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        cfg.to_hf().save_pretrained(folder)
        # transformers refuses safetensors files whose metadata does not name a framework.
        safetensors.numpy.save_file(self.tensors_from_params(cfg, params),
                                    os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt"})


def _qkv_table(cfg) -> Iterator[tuple[str, str, int]]:
    """(HF layer prefix, our attention path, width) of every encoder attention layer."""
    for hf_tower, tower in _TOWERS:
        c = getattr(cfg, tower)
        for i in range(c.layers):
            yield f"{hf_tower}.encoder.layers.{i}", f"{tower}/layers_{i}/attn/qkv", c.width


# ---------------------------------------------------------------------------- reading


def resolve_folder(path: str | os.PathLike, patterns: list[str] = HUB_PATTERNS) -> str:
    """A local folder as is; a hub id (ORG/NAME) from the cache or the hub (the files
    matching `patterns`). A path (absolute, or ./, ../, ~, or more than one '/') that is no
    folder is an error naming it, never taken for a hub id."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    if os.path.isfile(path):
        raise WeightImportError(f"{path}: is a file; pass the folder that holds {CONFIG_FILE} "
                                f"and {WEIGHTS_FILE} (a HuggingFace CLIP checkpoint folder)")
    if os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1:
        raise WeightImportError(f"{path}: no such folder (a path, so not a HuggingFace hub "
                                "id); was it moved?")
    import huggingface_hub

    try:
        return huggingface_hub.snapshot_download(path, allow_patterns=patterns)
    except Exception as e:  # noqa: BLE001 - the hub raises validation, HTTP and cache errors alike
        reason = str(e).splitlines()[0] if str(e) else ""
        raise WeightImportError(
            f"{path!r} is neither an existing folder nor a HuggingFace hub repo that is cached "
            f"or reachable ({type(e).__name__}: {reason}). Pass a local folder holding "
            f"{CONFIG_FILE} and {WEIGHTS_FILE}, or download the repo once with network access "
            f"(`hf download {path}`) and use it offline from the cache with HF_HUB_OFFLINE=1."
        ) from None


def read_config_file(folder: str) -> tuple[str, Any]:
    """(path, parsed JSON) of a checkpoint folder's config.json."""
    file = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(file):
        raise WeightImportError(f"{file}: no such file (a HuggingFace checkpoint folder has its "
                                "architecture in config.json)")
    try:
        with open(file, encoding="utf-8") as f:
            return file, json.load(f)
    except (OSError, ValueError) as e:
        raise WeightImportError(f"{file}: not readable JSON ({e})") from None


def _weight_files(folder: str) -> tuple[list[str], str]:
    """The safetensors files of a folder, and the file to name in errors."""
    single, index = os.path.join(folder, WEIGHTS_FILE), os.path.join(folder, INDEX_FILE)
    if os.path.isfile(single):
        return [single], single
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise WeightImportError(f"{index}: not a safetensors index ({e!r})") from None
        return [os.path.join(folder, s) for s in shards], index
    others = sorted(f for f in os.listdir(folder) if f.endswith((".bin", ".pt", ".pth", ".h5")))
    hint = (f"; found {', '.join(others)}: re-save it with "
            "`save_pretrained(..., safe_serialization=True)`") if others else ""
    raise WeightImportError(f"{single}: no such file (nor {INDEX_FILE}); only safetensors "
                            f"weights are read{hint}")


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
    import safetensors.numpy

    if not os.path.isfile(file):
        raise WeightImportError(f"{file}: no such file")
    try:
        return safetensors.numpy.load_file(file)
    except TypeError as e:
        if "bfloat16" not in str(e):
            raise WeightImportError(f"{file}: holds a dtype numpy cannot read ({e})") from None
        # numpy has no bfloat16, so safetensors.numpy refuses such files; the flax reader
        # returns jax arrays, which numpy views through ml_dtypes and `to_numpy` widens.
        import safetensors.flax

        return {k: np.asarray(v) for k, v in safetensors.flax.load_file(file).items()}
    except Exception as e:  # noqa: BLE001 - SafetensorError is not exported as a class
        raise WeightImportError(f"{file}: not a readable safetensors file, truncated or "
                                f"corrupted? ({type(e).__name__}: {e})") from None


def read_tensors(folder: str) -> tuple[dict[str, np.ndarray], str]:
    """Every tensor of the folder's checkpoint (all shards), and the file to name in errors."""
    files, source = _weight_files(folder)
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        tensors.update(_read_safetensors(file))
    return tensors, source


# ---------------------------------------------------------------------------- mapping


def pack_qkv(tensors: SourceTensors, hf_layer: str, path: str, width: int) -> None:
    """q, k, v Linear layers (out, in) -> our packed kernel (W, 3W) and bias (3W,) at
    `path` (the full target path, e.g. 'clip/vision/layers_0/attn/qkv')."""
    for suffix, shape in (("weight", (width, width)), ("bias", (width,))):
        keys = [f"{hf_layer}.{proj}.{suffix}" for proj in QKV]
        arrays = [tensors.get(k) for k in keys]
        for key, array in zip(keys, arrays, strict=True):
            # Checked here because a misfit would otherwise surface as a concatenate error.
            if array.shape != shape:
                raise WeightImportError(f"{tensors.source}: key {key!r} has shape {array.shape}, "
                                        f"expected {shape} for '{path}'")
        packed = np.concatenate(arrays, axis=0)
        tensors.put(f"{path}/{'kernel' if suffix == 'weight' else 'bias'}",
                    transpose(packed) if suffix == "weight" else packed, keys[0])


CLIP = Model(
    "clip", "CLIP", "CLIPModel", "CLIPConfig", clip.ClipConfig, clip.init_params,
    lambda cfg: _TOP_TABLE, ", ".join(ACTIVATIONS), HUB_PATTERNS)
load = CLIP.load
save = CLIP.save
