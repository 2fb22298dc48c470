"""Helper for tests/test_train.py: a few training steps in a fresh process, params to .npz.

Run as a script so that the device count (XLA_FLAGS / jax_num_cpu_devices) and
jax.distributed are set up before JAX starts:

    python tests/train_worker.py --data_dir D --workdir W --out p.npz [--devices 8]
        [--steps 3] [--batch_size 8]
        [--num_processes 2 --process_id i --port P]   # one of several real processes
        [--emulate_hosts 2]                            # one process feeding the same global
                                                       # batches that 2 hosts would

Builds a `train.Trainer` on configs/demo.py:smoke (dataset synthetic_pedestrians/tiny)
and runs its jitted `train_step` on `trainer.batches(0)`. The .npz holds every
trainable param (keys 'trainable/<path>'), the BN stats ('batch_stats/<path>'), the
losses and the device/process counts seen.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=1, help="CPU devices in this process")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--emulate_hosts", type=int, default=0)
    p.add_argument("--eps", type=float, default=None, help="override config.optimizer.eps")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Before JAX (TensorFlow imports JAX too) is imported anywhere.
    os.environ["XLA_FLAGS"] = " ".join(
        [f for f in os.environ.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
        + [f"--xla_force_host_platform_device_count={args.devices}"])
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, REPO)
    import jax
    jax.config.update("jax_num_cpu_devices", args.devices)
    if args.num_processes > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                                   num_processes=args.num_processes, process_id=args.process_id)
    import numpy as np
    from flax import traverse_util

    from vtfpar_jax import train

    config = train.load_config_file(os.path.join(REPO, "configs", "demo.py") + ":smoke")
    config.data_dir = args.data_dir
    config.input.batch_size = args.batch_size
    if args.eps is not None:
        config.optimizer.eps = args.eps
    assert jax.device_count() == args.devices * args.num_processes, jax.devices()
    assert jax.process_count() == args.num_processes

    trainer = train.Trainer(config, args.workdir)
    if args.emulate_hosts:
        batches = emulated_batches(trainer, args.emulate_hosts)
    else:
        batches = trainer.batches(0)
    state, losses = trainer.state, []
    for _ in range(args.steps):
        state, metrics = trainer.train_step(state, next(batches), trainer.rng, trainer.frozen)
        losses.append(float(local(metrics["loss"])))
        assert bool(local(metrics["finite"])), metrics

    out = {"losses": np.asarray(losses), "device_count": np.asarray(jax.device_count()),
           "process_count": np.asarray(jax.process_count()),
           "step": np.asarray(local(state.step))}
    for name in ("trainable", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(getattr(state, name), sep="/").items():
            out[f"{name}/{path}"] = local(leaf)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez(args.out, **out)
    if args.num_processes > 1:
        # Nobody leaves before everybody is done with the collectives.
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("train_worker done")
    print(f"worker {args.process_id}: {args.steps} steps on {jax.device_count()} devices, "
          f"losses {losses}")


def local(x):
    """A replicated (possibly multi-process) array as numpy, from this process's copy."""
    import numpy as np
    return np.asarray(x.addressable_data(0) if hasattr(x, "addressable_data") else x)


def emulated_batches(trainer, hosts: int):
    """The global batches `hosts` processes would assemble, built in this one process:
    host i's rows from train_batches(process_index=i, process_count=hosts), in host order."""
    import numpy as np

    from vtfpar_jax import sharding
    c = trainer.config
    size = (trainer.clip_cfg.image_size,) * 2
    epoch = 0
    while True:
        shares = [trainer.pipeline.train_batches(
            trainer.builder, batch_size=c.input.batch_size, frames=trainer.model_cfg.frames,
            epoch=epoch, seed=c.seed, image_size=size, frame_choice=c.input.frame_choice,
            augment=c.input.augment, normalization=c.input.normalization,
            process_index=i, process_count=hosts) for i in range(hosts)]
        for parts in zip(*shares, strict=True):
            batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            yield sharding.global_batch(batch, trainer.mesh)
        epoch += 1


if __name__ == "__main__":
    main()
