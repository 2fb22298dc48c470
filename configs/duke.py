"""VTFPAR++ on DukeMTMC-VID-Attribute, the published recipe (ViT-B/16, 6 frames, batch 16).

    python -m vtfpar_jax.train --config configs/duke.py --workdir runs/duke
    python -m vtfpar_jax.train --config configs/duke.py:vit=l14,bf16 --workdir runs/duke_l14

Arguments: frames=N, vit=b16|l14, bf16 (bfloat16 compute).
"""

from configs.common import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, frames=6, vit="b16", bf16=False)
    c = base_config()
    c.dataset = "dukemtmc_vid_attribute"
    c.model.frames = a.frames
    if a.vit == "l14":
        c.clip.path = "openai/clip-vit-large-patch14"
        c.clip.patch_size = 14
        # Same depths as the default map, in ViT-L/14's 24-layer indices.
        c.model.spatial_map = c.model.temporal_map = "0->0,6->1,12->2,18->3,23->4"
    elif a.vit != "b16":
        raise ValueError(f"config argument vit={a.vit!r}: expected 'b16' or 'l14'")
    if a.bf16:
        c.model.dtype = c.model.clip_dtype = "bfloat16"
    return c
