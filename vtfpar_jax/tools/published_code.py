"""The published VTFPAR++ code, imported from a local checkout for a side-by-side run.

To import the checkout without its unused dependencies, `published_code`
supplies, for the duration of the run:
- stand-ins for detectron2 (`CNNBlockBase`, `Conv2d`), fvcore
  (`c2_xavier_fill`) and open_clip (two classes used only as annotations),
  and, where missing, ftfy (`fix_text`, identity on the ASCII phrases) and
  pkg_resources (only `packaging` is read);
- the argument list its `config.argument_parser` parses at import time;
- a no-op `ViT.load_param`, which otherwise reads an ImageNet ViT from a
  hard-coded path and then discards the model;
- on a machine without CUDA, `torch.Tensor.cuda` as a no-op (the forward pass
  calls `.cuda()` unconditionally).
If torchvision's compiled ops cannot load (a CUDA torchvision wheel beside a
CPU torch), its op registrations are skipped: neither timm's ViT nor the
published model calls a torchvision op.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _missing(name: str) -> bool:
    """Neither imported (a stand-in from an earlier run counts) nor installed."""
    return name not in sys.modules and importlib.util.find_spec(name) is None


def _stand_ins() -> dict[str, types.ModuleType]:
    from torch import nn

    class CNNBlockBase(nn.Module):
        """detectron2's base block: records channels and stride, nothing else."""

        def __init__(self, in_channels: int, out_channels: int, stride: int):
            super().__init__()
            self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def c2_xavier_fill(module: nn.Module) -> None:
        # fvcore's Caffe2 "XavierFill": uniform with a = 1, zero bias.
        nn.init.kaiming_uniform_(module.weight, a=1)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)

    class Annotation(nn.Module):
        """open_clip classes the checkout names in signatures only."""

    mods = {
        "detectron2": _module("detectron2"),
        "detectron2.layers": _module("detectron2.layers", CNNBlockBase=CNNBlockBase,
                                     Conv2d=nn.Conv2d),
        "fvcore": _module("fvcore"), "fvcore.nn": _module("fvcore.nn"),
        "fvcore.nn.weight_init": _module("fvcore.nn.weight_init", c2_xavier_fill=c2_xavier_fill),
        "open_clip": _module("open_clip"),
        "open_clip.transformer": _module("open_clip.transformer",
                                         ResidualAttentionBlock=Annotation,
                                         VisionTransformer=Annotation),
    }
    if _missing("ftfy"):
        mods["ftfy"] = _module("ftfy", fix_text=lambda text: text)
    if _missing("pkg_resources"):
        import packaging.version
        mods["pkg_resources"] = _module("pkg_resources", packaging=packaging)
    return mods


def _import_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
            sys.modules[name] = _module(name)
        import torchvision  # noqa: F401


def check_checkout(openpar_dir: str) -> None:
    """Refuse a folder that is not the VTFPAR++ folder of an OpenPAR checkout."""
    if not os.path.isfile(os.path.join(openpar_dir, "models", "base_block.py")):
        raise FileNotFoundError(f"{openpar_dir}: no models/base_block.py (expected the "
                                "VTFPAR++ folder of Event-AHU/OpenPAR)")


@contextlib.contextmanager
def published_code(openpar_dir: str, options: dict, device: str):
    """Import the checkout's `models.base_block` and `CLIP.clip.model` (see the module docstring),
    and, on call, `models.base_block_marco` and `batch_engine_marco`, its options parsed
    from `options` (published option names; `frames` at least)."""
    import torch

    from vtfpar_jax.convert.to_openpar_cli import command_line

    check_checkout(openpar_dir)
    _import_torchvision()
    for name, module in _stand_ins().items():
        sys.modules.setdefault(name, module)
    saved_argv, saved_path, saved_cuda = sys.argv, list(sys.path), torch.Tensor.cuda
    sys.argv = ["train.py", "MARS", *command_line(options).split()]
    sys.path.insert(0, openpar_dir)
    if device == "cpu":
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        base_block = importlib.import_module("models.base_block")
        clip_model = importlib.import_module("CLIP.clip.model")
        importlib.import_module("models.vit").ViT.load_param = lambda self, path: None
        # The second recipe's modules, imported when asked for: a run of the first recipe
        # does not depend on them.
        yield types.SimpleNamespace(
            base_block=base_block, clip_model=clip_model,
            base_block_marco=lambda: importlib.import_module("models.base_block_marco"),
            batch_engine_marco=lambda: importlib.import_module("batch_engine_marco"))
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        torch.Tensor.cuda = saved_cuda


def published_net(pub, clip_state: dict, phrases: list[str], state_dict: dict | None = None,
                  group: bool = False, device: str = "cpu"):
    """(the published TransformerClassifier, or base_block_marco's with `group`, its CLIP): the
    CLIP built from `clip_state` (OpenAI's names: the text tower comes from it, as from
    ViT-B-16.pt) in float32, and `state_dict` loaded strictly when given. build_model
    loads the weights into fp16; loaded again after .float(), the CLIP is exact float32."""
    import torch

    clip_state = {k: torch.tensor(v) for k, v in clip_state.items()}   # a copy: v may be read-only
    clip_torch = pub.clip_model.build_model(dict(clip_state)).float()
    clip_torch.load_state_dict(clip_state)
    clip_torch = clip_torch.to(device)
    block = pub.base_block_marco() if group else pub.base_block
    net = block.TransformerClassifier(clip_torch, len(phrases), attr_words=phrases).to(device)
    if state_dict is not None:
        net.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()}, strict=True)
    return net, clip_torch


def freeze_backbone(net) -> None:
    """No gradient into the CLIP inside `net`, as the published train.py freezes it."""
    for name, param in net.named_parameters():
        if "clip_visual_extractor" in name:
            param.requires_grad = False


def attribute_step(net, clip_torch, opt, positive_ratio):
    """One train step as the published train.py's batch_engine takes it (weighted BCE,
    `positive_ratio` a tensor on the model's device): a function of (video, labels) that
    returns the loss."""
    def step(video, labels) -> float:
        net.train()
        clip_torch.train()
        loss = weighted_bce_torch(net(video, clip_torch), labels, positive_ratio)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def weighted_bce_torch(logits, labels, positive_ratio):
    """docs/published-model.md §8, as the published loss computes it."""
    import torch
    positive = (labels > 0.5).float()
    weights = torch.exp(positive * (1 - positive_ratio) + (1 - positive) * positive_ratio)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (weights * bce).sum() / logits.shape[0]
