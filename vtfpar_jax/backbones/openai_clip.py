"""OpenAI CLIP checkpoints (`ViT-B-16.pt`, a TorchScript archive, or a plain state dict).

    cfg, params = openai_clip.load("ViT-B-16.pt")

TorchScript archives are opened with `torch.jit.load` (TorchScript, not a
Python pickle: torch refuses `weights_only=True` for them); plain state-dict
files are read with `torch.load(weights_only=True)`, which refuses pickles
that would run code.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax.backbones.weights import (
    CONV,
    COPY,
    Layout,
    SourceTensors,
    WeightImportError,
    block_table,
    leaf,
    norm,
)
from vtfpar_jax.errors import reason
from vtfpar_jax.models import clip

# Buffers that OpenAI's archives carry besides the weights.
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")

# OpenAI's residual block: its names of our block's modules (weights.block_table).
BLOCK_NAMES = ("ln_1.", "attn.in_proj_", "attn.out_proj.", "ln_2.", "mlp.c_fc.", "mlp.c_proj.")


def read_state_dict(path: str) -> dict[str, Any]:
    """The tensors of an OpenAI CLIP file (TorchScript archive or state dict)."""
    import torch

    if not os.path.isfile(path):
        raise WeightImportError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as e:
        if "TorchScript" not in str(e):
            raise WeightImportError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
        state = torch.jit.load(path, map_location="cpu").state_dict()
    except pickle.UnpicklingError as e:
        raise WeightImportError(refusal_message(path, e)) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise WeightImportError(f"{path}: not a readable PyTorch checkpoint "
                                f"({reason(e)})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightImportError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)


def refusal_message(path: str, error: Exception) -> str:
    """Why a weights-only load refused a file: its pickle names Python objects to call, or
    the file is no PyTorch checkpoint at all (torch reports both as an UnpicklingError)."""
    detail = next((line for line in str(error).splitlines() if "GLOBAL" in line), "").strip()
    if detail:
        return (f"{path}: refused: its pickle references Python objects that a weights-only "
                f"load does not allow ({detail}), so loading it could run code. "
                "If you trust the file, re-save it as a plain state dict of tensors.")
    if not _starts_like_a_checkpoint(path):
        return (f"{path}: not a PyTorch checkpoint (neither the zip archive torch.save writes "
                "nor a pickle)")
    # torch's message: "... WeightsUnpickler error: \n\n<what it met>\n\nCheck the ...".
    _, _, after = str(error).partition("WeightsUnpickler error:")
    reason = next((line.strip() for line in after.splitlines() if line.strip()),
                  type(error).__name__)
    return f"{path}: not a readable PyTorch checkpoint: its pickle is damaged ({reason})"


def _starts_like_a_checkpoint(path: str) -> bool:
    """torch.save writes a zip archive (`PK`), older versions a pickle (the PROTO opcode)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == pickle.PROTO


def config_from_state_dict(tensors: SourceTensors, prefix: str = "") -> clip.ClipConfig:
    """The architecture implied by the tensor shapes (as OpenAI's `build_model` does)."""
    conv = tensors.tensors.get(prefix + "visual.conv1.weight")
    if conv is None:
        raise WeightImportError(f"{tensors.source}: missing key {prefix + 'visual.conv1.weight'!r} "
                                "(not an OpenAI CLIP ViT checkpoint?)")

    def count(pattern):
        rx = re.compile(re.escape(prefix) + pattern)
        return len({m.group(1) for k in tensors.tensors if (m := rx.match(k))})

    def shape(key):
        return tuple(tensors.tensors[prefix + key].shape)

    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((shape("visual.positional_embedding")[0] - 1) ** 0.5)
    text_width = shape("ln_final.weight")[0]
    return clip.ClipConfig(
        vision=clip.TowerConfig(width, count(r"visual\.transformer\.resblocks\.(\d+)\."),
                                width // 64, 4 * width),
        text=clip.TowerConfig(text_width, count(r"transformer\.resblocks\.(\d+)\."),
                              text_width // 64, 4 * text_width),
        image_size=patch * grid, patch_size=patch,
        vocab_size=shape("token_embedding.weight")[0],
        context_length=shape("positional_embedding")[0],
        projection_dim=shape("text_projection")[1], eos_token_id=2)


def name_table(cfg: clip.ClipConfig) -> Iterator[tuple[str, str, Layout]]:
    """Every (OpenAI key, our path under the CLIP tree, layouts) of a CLIP of this shape."""
    yield "visual.conv1.weight", "vision/patch_embed/kernel", CONV
    yield "visual.class_embedding", "vision/class_embedding", COPY
    yield "visual.positional_embedding", "vision/position_embedding", COPY
    yield from norm("visual.ln_pre", "vision/pre_layernorm")
    yield from norm("visual.ln_post", "vision/post_layernorm")
    yield "visual.proj", "vision/projection/kernel", COPY
    for i in range(cfg.vision.layers):
        yield from block_table(f"visual.transformer.resblocks.{i}", f"vision/layers_{i}",
                               BLOCK_NAMES)
    yield "token_embedding.weight", "text/token_embedding/embedding", COPY
    yield "positional_embedding", "text/position_embedding", COPY
    for i in range(cfg.text.layers):
        yield from block_table(f"transformer.resblocks.{i}", f"text/layers_{i}", BLOCK_NAMES)
    yield from norm("ln_final", "text/final_layernorm")
    yield "text_projection", "text/projection/kernel", COPY
    yield "logit_scale", "logit_scale", COPY


def take_clip(tensors: SourceTensors, cfg: clip.ClipConfig, prefix: str = "") -> None:
    """Map every OpenAI CLIP tensor under `prefix` onto our tree (paths under 'clip/')."""
    for key, path, (to_ours, _) in name_table(cfg):
        tensors.take(prefix + key, "clip/" + path, to_ours)
    tensors.drop(lambda k: k in {prefix + m for m in _METADATA_KEYS})


def tensors_from_params(cfg: clip.ClipConfig, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """OpenAI-named float32 tensors from our CLIP params (the inverse of `load`)."""
    return {key: to_torch(leaf(params, path)) for key, path, (_, to_torch) in name_table(cfg)}


def expected_shapes(cfg: clip.ClipConfig):
    return jax.eval_shape(lambda: clip.init_params(cfg, jax.random.key(0)))


def load(path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> tuple[clip.ClipConfig, dict]:
    """(cfg, params) from `ViT-B-16.pt` (or any OpenAI CLIP ViT file) or a state dict (numpy
    arrays or torch tensors)."""
    if isinstance(path_or_state_dict, Mapping):
        tensors = SourceTensors(path_or_state_dict, "state dict")
    else:
        path = os.fspath(path_or_state_dict)
        tensors = SourceTensors(read_state_dict(path), path)
    cfg = config_from_state_dict(tensors)
    take_clip(tensors, cfg)
    tensors.check_consumed()
    params = tensors.build_tree(expected_shapes(cfg), prefix=("clip",))
    return cfg, jax.tree.map(jnp.asarray, params)
