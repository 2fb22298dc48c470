"""Train-step and prediction throughput on whatever devices JAX sees.

    vtfpar bench --shape vit_b16|tiny --batch 16 --frames 6 [--backbone siglip]
        [--dtype bfloat16] [--backbone-dtype float16] [--remat none|dots|blocks]
        [--attention auto|xla|cudnn] [--breakdown] [--steps 20] [--devices N]
        [--json out.json]
    vtfpar bench --aot h200|h100|h200x8|tpu-v5e:4x4 --batch 64 ...

Feeds in-memory random arrays (no input pipeline) to the project's own train
step (`train_step.make_train_step`, jitted exactly as `train.Trainer` jits it)
and to the evaluation forward (`evaluate.eval_logits`, jitted as `Evaluator`
does), on random backbone weights: speed depends on shapes, not values. Only jax,
flax, optax and numpy are needed: nothing here imports TensorFlow or
ml_collections, so it runs on a GPU machine that has neither.

Times are medians over `--steps` calls after compilation, each call blocked on
with `jax.block_until_ready`. Peak memory is `device.memory_stats()
['peak_bytes_in_use']` where the backend keeps it (GPU, TPU); the CPU backend
does not, so there it is None and the process's peak RSS is reported beside it.
`--devices N` simulates N CPU devices (`jax_num_cpu_devices`), the batch
sharded over the `data` mesh axis as in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import time
from typing import Any

import jax
import numpy as np

from vtfpar_jax import cli_errors
from vtfpar_jax.backbones import registry
from vtfpar_jax.models.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from vtfpar_jax.models.side_nets import REMAT_POLICIES
from vtfpar_jax.outputs import files
from vtfpar_jax.tools.bench_setup import (
    DTYPES,
    count_params,
    jitted,
    make_inputs,
    model_config,
)
from vtfpar_jax.tools.compiled_stats import gib


@dataclasses.dataclass
class Setup:
    """Everything one benchmark run calls: the jitted functions and their inputs."""

    model_cfg: Any
    mesh: Any
    train_step: Any
    predict: Any
    backbone_forward: Any
    state: Any
    frozen: Any
    batch: dict
    rng: jax.Array
    trainable_params: int


def build(shape: str = "tiny", *, batch: int = 16, seed: int = 0, backbone: str = "clip",
          backbone_cfg=None, backbone_params=None, variables=None, text_features=None,
          video: np.ndarray | None = None, **model) -> Setup:
    """The train step and evaluation forward of the project, jitted over a `data` mesh
    of the local devices, with their inputs placed (compare_pytorch passes converted
    weights here). `model`: `bench_setup.model_config`'s options (frames, dtype,
    backbone_dtype, remat, attention, num_attributes); those left out or None take the
    project's defaults."""
    from vtfpar_jax.state import sharding

    model_cfg = model_config(backbone_cfg or registry.shape_config(backbone, shape), **model)
    mesh = sharding.make_mesh()
    if batch % jax.device_count():
        raise ValueError(f"--batch {batch} does not split over {jax.device_count()} devices")
    state, frozen, local, rng = make_inputs(
        model_cfg, batch=batch, seed=seed, backbone_params=backbone_params, variables=variables,
        text_features=text_features, video=video)
    train_step, predict, backbone_forward = jitted(model_cfg, mesh)
    return Setup(model_cfg, mesh, train_step, predict, backbone_forward,
                 sharding.replicate(state, mesh), sharding.replicate(frozen, mesh),
                 sharding.global_batch(jax.device_get(local), mesh), rng,
                 count_params(state.trainable))


def timed(fn, steps: int, warmup: int, sync=lambda: None) -> list[float]:
    """Seconds of each of `steps` calls of `fn` after `warmup` untimed ones; `sync` waits
    for the device (JAX's `fn`s block themselves; torch.cuda.synchronize for PyTorch)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _compiled(jitted, *args):
    """(`jitted` compiled for `args`, seconds taken)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def peak_device_bytes() -> int | None:
    """Largest `peak_bytes_in_use` over local devices; None where the backend keeps none (CPU)."""
    peaks = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 - CPU raises or returns None depending on version
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def rss_peak_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(setup: Setup, steps: int = 20, warmup: int = 2,
            breakdown: bool = False) -> dict[str, Any]:
    """Compile and time prediction, then the train step; peaks after each. With
    `breakdown`, also the frozen CLIP forward alone in the step's shapes."""
    from vtfpar_jax.tools import compiled_stats

    s = setup
    batch, frames = s.batch["video"].shape[:2]
    predict, predict_compile_s = _compiled(s.predict, s.state.trainable, s.state.batch_stats,
                                           s.frozen, s.batch["video"])

    def predict_once():
        jax.block_until_ready(predict(s.state.trainable, s.state.batch_stats, s.frozen,
                                      s.batch["video"]))

    predict_times = timed(predict_once, steps, warmup)
    # Prediction runs first so that its peak is not hidden by training's.
    predict_peak = peak_device_bytes()

    train, compile_s = _compiled(s.train_step, s.state, s.batch, s.rng, s.frozen)
    holder = {"state": s.state, "metrics": None}

    def train_once():
        holder["state"], holder["metrics"] = train(holder["state"], s.batch, s.rng, s.frozen)
        jax.block_until_ready((holder["state"], holder["metrics"]))

    train_times = timed(train_once, steps, warmup)
    s.state = holder["state"]  # the old one was donated
    metrics = jax.device_get(holder["metrics"])
    step_s = statistics.median(train_times)
    predict_s = statistics.median(predict_times)
    device = jax.devices()[0]
    peak = peak_device_bytes()
    result = {
        "device": f"{jax.device_count()}x {device.device_kind}", "platform": device.platform,
        "device_count": jax.device_count(), "jax_version": jax.__version__,
        "backbone_width": s.model_cfg.backbone.vision.width, "batch": int(batch),
        "frames": int(frames),
        "dtype": s.model_cfg.dtype, "backbone_dtype": s.model_cfg.backbone_dtype,
        "remat": s.model_cfg.remat, "attention": s.model_cfg.attention,
        "trainable_params": s.trainable_params, "steps": steps, "warmup": warmup,
        "compile_s": compile_s, "step_s_median": step_s, "step_s_mean": statistics.mean(
            train_times), "step_s_min": min(train_times),
        "clips_per_s": batch / step_s, "frames_per_s": batch * frames / step_s,
        "predict_compile_s": predict_compile_s, "predict_s_median": predict_s,
        "predict_clips_per_s": batch / predict_s,
        "peak_bytes": peak, "predict_peak_bytes": predict_peak,
        "peak_source": "device.memory_stats()['peak_bytes_in_use']" if peak is not None
        else None,
        "rss_peak_bytes": rss_peak_bytes(),
        "memory_analysis": {"train": compiled_stats.memory(train),
                            "predict": compiled_stats.memory(predict)},
        "kernels": {"train": compiled_stats.kernels(train.as_text())},
        "loss": float(metrics["loss"]), "finite": bool(metrics["finite"]),
    }
    if breakdown:
        result["breakdown"] = backbone_breakdown(s, step_s, steps, warmup)
    return result


def backbone_breakdown(s: Setup, step_s: float, steps: int, warmup: int) -> dict[str, float]:
    """The frozen backbone forward alone, in the step's shapes, against the whole step.

    `backbone_share` is also the backbone-bound ratio, step frames/s over backbone-only
    frames/s: the share of the speed the step would have if the side networks, fusion and
    optimiser were free.
    """
    video = s.batch["video"]
    backbone_forward, _ = _compiled(s.backbone_forward, s.state.trainable, s.frozen, video)
    backbone_s = statistics.median(timed(lambda: jax.block_until_ready(
        backbone_forward(s.state.trainable, s.frozen, video)), steps, warmup))
    return {"backbone_s_median": backbone_s,
            "backbone_frames_per_s": video.shape[0] * video.shape[1] / backbone_s,
            "backbone_share": backbone_s / step_s, "side_share": 1 - backbone_s / step_s}


def summary(r: dict[str, Any], shape: str) -> str:
    peak = (f"peak {gib(r['peak_bytes'])} (predict {gib(r['predict_peak_bytes'])})"
            if r["peak_bytes"] is not None else f"peak n/a on {r['platform']} (RSS "
            f"{gib(r['rss_peak_bytes'])})")
    line = (f"{shape} batch {r['batch']} x {r['frames']} frames, {r['dtype']} (backbone "
            f"{r['backbone_dtype']}), remat {r['remat']}, attention {r['attention']} on "
            f"{r['device']}: train {r['step_s_median']:.4f} s/step = {r['clips_per_s']:.1f} "
            f"clips/s = {r['frames_per_s']:.0f} frames/s, compile {r['compile_s']:.1f} s; "
            f"predict {r['predict_clips_per_s']:.1f} clips/s; {peak}")
    if "breakdown" in r:
        b = r["breakdown"]
        line += (f"\nbreakdown: backbone forward alone {b['backbone_s_median']:.4f} s "
                 f"({b['backbone_frames_per_s']:.0f} frames/s) = {b['backbone_share']:.0%} of "
                 "the step (the backbone-bound ratio), "
                 f"side networks + optimiser {b['side_share']:.0%}")
    return line


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="vtfpar bench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    registry.add_shape_options(p)
    p.add_argument("--batch", type=int, default=16, help="global batch (clips)")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute dtype of side nets, fusion and heads")
    p.add_argument("--backbone-dtype", default=None, choices=DTYPES,
                   help="compute dtype of the frozen backbone (default: --dtype)")
    # --backbone-dtype's name before "clip" stopped naming any backbone: refused, naming it.
    p.add_argument("--clip-dtype", dest="renamed_dtype", default=None, help=argparse.SUPPRESS)
    p.add_argument("--remat", default=None, choices=REMAT_POLICIES,
                   help="what the side and fusion blocks keep for backward (model.remat; "
                        "default: the project's)")
    p.add_argument("--attention", default=None, choices=ATTENTION_IMPLEMENTATIONS,
                   help="attention implementation (model.attention; default: auto)")
    p.add_argument("--num-attributes", type=int, default=43)
    p.add_argument("--steps", type=int, default=20, help="timed calls (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after compiling")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the frozen backbone forward alone: its and the side "
                        "networks' shares, and the backbone-bound ratio")
    p.add_argument("--aot", default=None, metavar="TARGET",
                   help="compile only, deviceless, for TARGET (h100, h200, h200x8, "
                        "tpu-v5e:4x4, ...; see vtfpar_jax/tools/aot.py) and report memory, kernels "
                        "and collectives; needs `make aot-venv`")
    p.add_argument("--devices", type=int, default=0,
                   help="simulate N CPU devices (CPU only; must precede any JAX computation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.renamed_dtype is not None:
        p.error("--clip-dtype is now --backbone-dtype")
    registry.parsed_shape(p, args)   # a shape the backbone has, before any compile
    command = "vtfpar bench " + " ".join(sys.argv[1:] if argv is None else argv)
    return cli_errors.run(lambda: _bench(p, args, command))


def _bench(p: argparse.ArgumentParser, args, command: str) -> dict[str, Any]:
    model = dict(batch=args.batch, frames=args.frames, dtype=args.dtype,
                 backbone_dtype=args.backbone_dtype, remat=args.remat, attention=args.attention,
                 num_attributes=args.num_attributes, backbone=args.backbone)
    if args.aot:
        from vtfpar_jax.tools import aot
        try:
            aot.prepare(args.aot)
            result = aot.compile_report(args.aot, args.shape, **model)
        except aot.TargetError as e:
            p.error(str(e))
        result["command"] = command
        if args.json:
            files.write_json(args.json, result, indent=1)
        print(aot.summary(result))
        return result
    if args.devices:
        # Must happen before the CPU backend starts, i.e. before any device query.
        jax.config.update("jax_num_cpu_devices", args.devices)
        if jax.devices()[0].platform != "cpu":
            p.error("--devices simulates CPU devices; this JAX sees "
                    f"{jax.devices()[0].platform}")
    try:
        setup = build(args.shape, seed=args.seed, **model)
    except ValueError as e:
        p.error(str(e))
    result = measure(setup, steps=args.steps, warmup=args.warmup, breakdown=args.breakdown)
    result["shape"], result["backbone"] = args.shape, args.backbone
    result["command"] = command
    if args.json:
        files.write_json(args.json, result, indent=1)
    print(summary(result, f"{registry.get(args.backbone).display_name} {args.shape}"))
    return result
