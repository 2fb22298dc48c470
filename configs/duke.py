"""VTFPAR++ on DukeMTMC-VID-Attribute, the published recipe (ViT-B/16, 6 frames, batch 16).

    vtfpar train --config configs/duke.py --workdir runs/duke
    vtfpar train --config configs/duke.py:vit=l14,bf16 --workdir runs/duke_l14

Arguments: frames=N, vit=b16|l14, bf16 (bfloat16 compute), backbone=clip|siglip.
"""

from configs.common import published_config


def get_config(arg=None):
    return published_config("dukemtmc_vid_attribute", arg)
