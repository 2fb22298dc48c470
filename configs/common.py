"""Fields every experiment shares; each config file overrides what it needs.

Launch: vtfpar train --config configs/mars.py[:arg] --workdir DIR
        [--config.optimizer.lr=3e-4 ...]
"""

from __future__ import annotations

import ml_collections

from vtfpar_jax.errors import ConfigError, nearest


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'key=value,flag' after the config path -> typed fields (big_vision's convention)."""
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ConfigError(f"config argument {key!r}: expected one of {sorted(defaults)}"
                              f"{nearest(key, defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            out[key] = value.lower() in ("", "1", "true", "yes")
        else:
            try:
                out[key] = type(default)(value)
            except ValueError:
                raise ConfigError(f"config argument {key}={value!r}: expected "
                                  f"{type(default).__name__}") from None
    return out


def base_config() -> ml_collections.ConfigDict:
    """The published recipe (docs/published-model.md §1–§8) on ViT-B/16."""
    c = ml_collections.ConfigDict()
    c.dataset = ""                  # a TFDS builder name (input_pipeline.BUILDERS)
    c.data_dir = ""                 # TFDS data dir; empty: TFDS' default
    c.seed = 12240321               # the published seed

    c.backbone = ml_collections.ConfigDict()  # the frozen backbone, and its weights' source
    c.backbone.name = "clip"            # 'clip' (published) or 'siglip'
    c.backbone.source = "hf"            # 'hf' (hub id or folder), 'openai' (.pt file) or 'random'
    c.backbone.path = "openai/clip-vit-base-patch16"
    c.backbone.preset = "tiny"          # for source='random': 'tiny', 'vit_b16' or 'vit_l14'
                                        # (SigLIP: 'tiny', 'base16' or 'so400m14')
    c.backbone.image_size = 224
    c.backbone.patch_size = 16

    c.model = ml_collections.ConfigDict()
    c.model.frames = 6
    c.model.spatial_map = "default"       # a published map name or 's->t,s->t,...'
    c.model.temporal_map = "default"
    c.model.spatial_aggregation = "mean"  # mean | mlp | lstm | gru | max | attention
    c.model.temporal_aggregation = "mean"
    c.model.dim = 240
    c.model.heads = 0                     # 0: the published table by width
    c.model.side_patch_size = 16
    c.model.use_spatial = True
    c.model.use_temporal = True
    c.model.drop_path_rate = 0.1
    c.model.dtype = "float32"             # side nets; 'bfloat16' for speed
    c.model.backbone_dtype = "float32"
    c.model.remat = "dots"                # what side/fusion blocks keep for backward: none |
                                          # dots (matmul outputs; the rest recomputed) | blocks
    c.model.head = "attribute"            # attribute: one logit per attribute, weighted BCE
                                          # (published train.py) | group: one softmax per
                                          # attribute group, cross-entropy (train_marco.py)
    c.model.attention = "auto"            # auto (cuDNN flash on NVIDIA GPUs in bf16/fp16,
                                          # else XLA) | xla | cudnn

    c.text = ml_collections.ConfigDict()
    c.text.phrases = "published"          # 'published' or 'expanded'
    c.text.template = "A pedestrian whose {}."
    c.text.bpe_path = ""                  # another OpenAI BPE file; "": the packaged one

    c.input = ml_collections.ConfigDict()
    c.input.batch_size = 16               # global, over all hosts
    c.input.eval_batch_size = 32
    c.input.frame_choice = "random"       # random (published) | uniform | first
    # The host only decodes; resize, augmentation and normalisation run on the device.
    c.input.frame_size = (0, 0)           # (H, W) frames are resized to on the host, when
                                          # stored sizes vary; (0, 0): as stored (one size)
    c.input.augment = True
    c.input.pad_pixels = 10               # zero pad before the random crop (published: 10 at 224)
    c.input.normalization = "published"   # published (0.5/0.5) | clip

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "published"    # published (per epoch) | cosine (per step) | constant
    c.optimizer.warmup_epochs = 5
    c.optimizer.warmup_lr = 1e-5
    c.optimizer.min_lr = 2e-6
    c.optimizer.grad_clip_norm = 0.0
    c.optimizer.accumulate_steps = 1

    # Regexes over '/'-joined param paths ('backbone/vision/layers_10/fc1/kernel',
    # 'model/fusion_block/...'): full matches are frozen. Side tuning freezes all
    # of the backbone; e.g. ('backbone/text/.*', 'backbone/logit_scale',
    # 'backbone/vision/(?!layers_10/).*') also fine-tunes block 11 (layers_10), the deepest
    # the default maps read.
    c.frozen_patterns = ("backbone/.*",)

    c.num_epochs = 30
    c.log_every_steps = 20
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.keep_every_steps = 0                # 0: none kept beyond the last N
    c.checkpoint_retries = 0              # failed checkpoint writes retried (30 s apart)
    c.eval_every_epochs = 1
    c.max_steps = 0                       # 0: num_epochs full epochs
    return c


def published_config(dataset: str, arg: str | None) -> ml_collections.ConfigDict:
    """The published recipe on `dataset`; arguments: frames=N, vit=b16|l14, bf16,
    backbone=clip|siglip (SigLIP base/16 at 224 px in place of CLIP ViT-B/16)."""
    a = parse_arg(arg, frames=6, vit="b16", bf16=False, backbone="clip")
    c = base_config()
    c.dataset = dataset
    c.model.frames = a.frames
    if a.backbone == "siglip":
        if a.vit != "b16":
            raise ConfigError("config arguments backbone=siglip and vit=l14: the SigLIP "
                              "recipe is base/16 only")
        # Same 12 x 768 ViT and 14 x 14 grid as CLIP B/16: the default map reads the same
        # depths. Its normalisation is 0.5/0.5, the published pipeline's already.
        c.backbone.name = "siglip"
        c.backbone.path = "google/siglip-base-patch16-224"
        c.backbone.preset = "base16"
    elif a.backbone != "clip":
        raise ConfigError(f"config argument backbone={a.backbone!r}: expected 'clip' or "
                          "'siglip'")
    if a.vit == "l14":
        c.backbone.path = "openai/clip-vit-large-patch14"
        c.backbone.patch_size = 14
        # Same depths as the default map, in ViT-L/14's 24-layer indices.
        c.model.spatial_map = c.model.temporal_map = "0->0,6->1,12->2,18->3,23->4"
    elif a.vit != "b16":
        raise ConfigError(f"config argument vit={a.vit!r}: expected 'b16' or 'l14'")
    if a.bf16:
        c.model.dtype = c.model.backbone_dtype = "bfloat16"
    return c
