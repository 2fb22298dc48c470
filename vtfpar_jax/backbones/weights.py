"""Checked import of foreign weights: every source tensor consumed, every target leaf filled.

Each source module (hf_clip, openai_clip, openpar) keeps its own name table
and feeds `SourceTensors.take` one entry at a time; `build_tree` then checks
the result against the shapes our Flax modules expect. Any mismatch is one
`WeightImportError` naming the key, the expected and the found shape, and
the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from vtfpar_jax.errors import UserError


class WeightImportError(UserError, ValueError):
    """A checkpoint does not fit the model; the message says which key and file."""


def to_numpy(value: Any) -> np.ndarray:
    """A numpy float32/int array from a numpy array or a torch tensor (no torch import)."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    return array


class SourceTensors:
    """The tensors of one checkpoint, tracking which ones the import has used."""

    def __init__(self, tensors: Mapping[str, Any], source: str):
        self.tensors = dict(tensors)
        self.source = source
        self.consumed: set[str] = set()
        self.flat: dict[tuple[str, ...], tuple[str, np.ndarray]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def get(self, key: str) -> np.ndarray:
        if key not in self.tensors:
            raise WeightImportError(f"{self.source}: missing key {key!r}")
        self.consumed.add(key)
        return to_numpy(self.tensors[key])

    def take(self, key: str, path: str, transform: Transform):
        """Map source `key` to target `path` ('a/b/kernel'), transformed (e.g. transposed)."""
        self.put(path, transform(self.get(key)), key)

    def put(self, path: str, array: np.ndarray, key: str):
        self.flat[tuple(path.split("/"))] = (key, array)

    def drop(self, predicate: Callable[[str], bool]):
        """Mark tensors the model does not use (buffers, unused layers) as consumed."""
        self.consumed.update(k for k in self.tensors if predicate(k))

    def check_consumed(self):
        unused = [k for k in self.tensors if k not in self.consumed]
        if unused:
            shown = ", ".join(repr(k) for k in unused[:5])
            more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            raise WeightImportError(f"{self.source}: unexpected key(s) {shown}{more} "
                                    "(a checkpoint of another architecture?)")

    def build_tree(self, expected: Any, prefix: Iterable[str] = ()) -> dict:
        """The nested params whose leaves have exactly the shapes of `expected`.

        `expected` is a tree of arrays or ShapeDtypeStructs (e.g. `jax.eval_shape`
        of an init); only mapped paths under `prefix` are used.
        """
        prefix = tuple(prefix)
        out: dict = {}
        # Sorted, as jax flattens a dict: of several misfits, the same one is named.
        for names, leaf in sorted(traverse_util.flatten_dict(expected).items()):
            full = prefix + names
            if full not in self.flat:
                raise WeightImportError(f"{self.source}: nothing provides parameter "
                                        f"{'/'.join(full)!r} {tuple(leaf.shape)}")
            key, array = self.flat[full]
            if tuple(array.shape) != tuple(leaf.shape):
                raise WeightImportError(f"{self.source}: key {key!r} has shape {array.shape}, "
                                        f"expected {tuple(leaf.shape)} for {'/'.join(full)!r}")
            out[names] = array
        return traverse_util.unflatten_dict(out)


def leaf(tree: Any, path: str) -> np.ndarray:
    """The float32 array at '/'-joined `path` ('vision/layers_0/fc1/kernel') of a nested tree."""
    for name in path.split("/"):
        tree = tree[name]
    return np.asarray(tree, dtype=np.float32)


def transpose(array: np.ndarray) -> np.ndarray:
    """torch Linear (out, in) -> Flax Dense kernel (in, out)."""
    return np.ascontiguousarray(array.T)


def conv_kernel(array: np.ndarray) -> np.ndarray:
    """torch Conv2d OIHW -> Flax Conv HWIO; also takes 1x1 conv weights as Dense kernels."""
    if array.ndim == 4 and array.shape[2:] == (1, 1) or array.ndim == 3 and array.shape[2] == 1:
        return np.ascontiguousarray(array.reshape(array.shape[0], array.shape[1]).T)
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0))


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def _hwio_to_oihw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1))


Transform = Callable[[np.ndarray], np.ndarray]
# How a tensor is laid out in each format: (torch -> ours, ours -> torch). The name
# tables of the source modules pair every key with one of these, so that one table
# serves both the import and the export.
Layout = tuple[Transform, Transform]
COPY: Layout = (_identity, _identity)
LINEAR: Layout = (transpose, transpose)  # torch Linear (out, in) <-> Dense kernel (in, out)
CONV: Layout = (conv_kernel, _hwio_to_oihw)  # torch Conv2d OIHW <-> Flax Conv HWIO

Entry = tuple[str, str, Layout]   # (torch key, our '/'-joined path, layouts): a name table's row


def linear(src: str, dst: str, layout: Layout = LINEAR) -> tuple[Entry, Entry]:
    """The rows of a torch Linear or Conv `src` (weight, bias): our `dst` kernel and bias."""
    return (f"{src}.weight", f"{dst}/kernel", layout), (f"{src}.bias", f"{dst}/bias", COPY)


def norm(src: str, dst: str) -> tuple[Entry, Entry]:
    """The rows of a torch LayerNorm or BatchNorm `src` (weight, bias): our `dst` scale and
    bias."""
    return (f"{src}.weight", f"{dst}/scale", COPY), (f"{src}.bias", f"{dst}/bias", COPY)


# The modules of our transformer block (models/layers.TransformerBlock), in order, and the
# layout of their weight; each has a bias too.
_BLOCK = (("ln_1", "scale", COPY), ("attn/qkv", "kernel", LINEAR), ("attn/out", "kernel", LINEAR),
          ("ln_2", "scale", COPY), ("fc1", "kernel", LINEAR), ("fc2", "kernel", LINEAR))


def block_table(src: str, dst: str,
                names: tuple[str | None, ...]) -> Iterator[tuple[str, str, Layout]]:
    """(torch key, our path, layouts) of one transformer block, torch's `src` and our `dst`.
    `names` are torch's names of our modules in `_BLOCK`'s order, each ending in what joins
    it to 'weight' and 'bias' ('norm1.'; OpenAI's packed projection 'attn.in_proj_'), or
    None for one mapped apart (transformers' q, k and v)."""
    for name, (ours, weight, layout) in zip(names, _BLOCK, strict=True):
        if name is not None:
            yield f"{src}.{name}weight", f"{dst}/{ours}/{weight}", layout
            yield f"{src}.{name}bias", f"{dst}/{ours}/bias", COPY
