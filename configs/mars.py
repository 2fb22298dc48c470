"""VTFPAR++ on MARS-Attribute, the published recipe (ViT-B/16, 6 frames, batch 16, 30 epochs).

    vtfpar train --config configs/mars.py --workdir runs/mars
    vtfpar train --config configs/mars.py:vit=l14,bf16 --workdir runs/mars_l14
    vtfpar train --config configs/mars.py:backbone=siglip --workdir runs/mars_siglip

Arguments: frames=N, vit=b16|l14, bf16 (bfloat16 compute), backbone=clip|siglip.
"""

from configs.common import published_config


def get_config(arg=None):
    return published_config("mars_attribute", arg)
