"""The newcomer's demo: the synthetic pedestrian set and a small random CLIP, on a CPU.

    python -m vtfpar_jax.train --config configs/demo.py --workdir runs/demo
    (or simply `make demo`, which also builds the data and evaluates)

Arguments: smoke (a few steps, for tests and notebooks).
Same model code as the published recipe, scaled down: 48 px frames, a 4-layer
CLIP of width 64, side nets of width 64, interaction map '0' (CLIP indices 0..4).
"""

from configs.common import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, smoke=False)
    c = base_config()
    c.dataset = "synthetic_pedestrians"
    c.seed = 0
    c.clip.source = "random"
    c.clip.preset = "tiny"
    c.clip.image_size = 48
    c.clip.patch_size = 8
    c.model.spatial_map = c.model.temporal_map = "0"
    c.model.dim = 64
    c.model.heads = 4
    c.model.side_patch_size = 8
    c.input.batch_size = 16
    c.input.eval_batch_size = 50
    c.optimizer.warmup_epochs = 1
    c.num_epochs = 12
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
    if a.smoke:
        c.dataset = "synthetic_pedestrians/tiny"
        c.input.batch_size = 4
        c.input.eval_batch_size = 4
        c.num_epochs = 2
        c.log_every_steps = 1
        c.checkpoint_every_steps = 3
    return c
