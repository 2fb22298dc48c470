"""Compile the train step and prediction for accelerators this machine does not have.

    vtfpar bench --aot h200 --batch 64 --dtype bfloat16
    vtfpar bench --aot h200x8 --batch 64 --dtype bfloat16
    vtfpar bench --aot tpu-v5e:4x4 --batch 64 --dtype bfloat16

Deviceless: JAX builds a topology of the target's devices from a description
(`jax.experimental.topologies`), the step is jitted over a `data` mesh of
those devices on `jax.ShapeDtypeStruct` inputs (no array is ever made), and
XLA compiles it as it would on the target. What it gives, per device: XLA's
memory analysis (it matched an H200's own compile of the same step to the
MiB), the library kernels the program calls, and its collectives with their
bytes. What it cannot give: time (no autotuning, no device).

Needs the target's JAX backend installed beside the CPU one, and no device of
it: `make aot-venv` makes `.venv-aot` with `jax[cuda13]` and `jax[tpu]`
(several GB, hence not in `.[dev]`); run with `JAX_PLATFORMS=cpu`.

Targets:
    h100, h200            one NVIDIA H100 SXM / H200 (device facts in aot_targets/)
    h100xN, h200xN        N of them on one host (topology 1x1xN)
    cpuxN                 N simulated CPU devices (the partitioner is the same on
                          every backend, so collectives show here without plugins)
    tpu-<gen>:<topology>  a Cloud TPU slice, e.g. tpu-v5e:2x2, tpu-v5e:4x4,
                          tpu-v5e:8x8, tpu-v6e:4x4, tpu-v4:2x2x2, tpu-v5p:2x2x2
                          (libtpu's names; v4/v5p chips are megacore: one
                          device per chip)
"""

from __future__ import annotations

import dataclasses
import os
import re
from importlib import resources
from typing import Any

import jax
import numpy as np

from vtfpar_jax.backbones import registry
from vtfpar_jax.state import sharding
from vtfpar_jax.tools import bench_setup, compiled_stats
from vtfpar_jax.tools.compiled_stats import gib

GPU_TARGET_CONFIGS = {"h100": "h100_sxm.txtpb", "h200": "h200.txtpb"}


class TargetError(ValueError):
    """A target this command cannot compile for, with the reason."""


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    platform: str           # 'cuda' or 'tpu'
    topology: str           # '1x1xN' for GPUs, libtpu's slice name for TPUs


def parse_target(spec: str) -> Target:
    cpu = re.fullmatch(r"cpux(\d+)", spec)
    if cpu:
        return Target(spec, "cpu", cpu.group(1))
    gpu = re.fullmatch(r"(h100|h200)(?:x(\d+))?", spec)
    if gpu:
        return Target(spec, "cuda", f"1x1x{int(gpu.group(2) or 1)}")
    tpu = re.fullmatch(r"tpu-(v\w+:[\dx]+)", spec)
    if tpu:
        return Target(spec, "tpu", tpu.group(1))
    raise TargetError(f"--aot {spec!r}: expected h100, h200, h100xN, h200xN, cpuxN or "
                      "tpu-<generation>:<topology> such as tpu-v5e:4x4")


def prepare(spec: str) -> None:
    """What must happen before JAX starts its CPU backend: cpuxN asks for N devices."""
    target = parse_target(spec)
    if target.platform == "cpu":
        jax.config.update("jax_num_cpu_devices", int(target.topology))


def gpu_target_config(name: str) -> str:
    """The `GpuTargetConfigProto` text of an NVIDIA GPU kept in aot_targets/."""
    return resources.files("vtfpar_jax.tools").joinpath("aot_targets", GPU_TARGET_CONFIGS[name]
                                                   ).read_text()


def topology_mesh(target: Target) -> jax.sharding.Mesh:
    """A one-axis `data` mesh over every device of the target's topology."""
    from jax.experimental import topologies
    if target.platform == "cpu":
        devices = jax.devices("cpu")
        if len(devices) < int(target.topology):
            raise TargetError(f"--aot {target.name}: this process has {len(devices)} CPU "
                              "devices; call aot.prepare first, before any JAX computation")
        return _data_mesh(devices[:int(target.topology)])
    try:
        if target.platform == "cuda":
            topo = topologies.get_topology_desc(
                platform="cuda", topology=target.topology,
                target_config=gpu_target_config(target.name.split("x")[0]))
        else:
            # libtpu lets one process at a time hold the (absent) chips; a compile
            # holds none, so concurrent deviceless compiles need not wait for each other.
            os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
            topo = topologies.get_topology_desc(platform="tpu", topology_name=target.topology)
    except Exception as e:  # noqa: BLE001 - the plugin's own error says what is missing
        raise TargetError(f"--aot {target.name}: no {target.platform} compiler here ({e}); "
                          "run from the venv `make aot-venv` makes, with JAX_PLATFORMS=cpu"
                          ) from e
    # Device order does not matter for a one-axis data-parallel mesh; taking the
    # topology's list as is also covers megacore chips (v4, v5p), which
    # mesh_utils.create_device_mesh refuses without a chip-aware shape.
    return _data_mesh(topo.devices)


def _data_mesh(devices) -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.asarray(devices), (sharding.DATA_AXIS,),
                             axis_types=(jax.sharding.AxisType.Auto,))


def compile_report(target_spec: str, shape: str = "vit_b16", *, batch: int,
                   dtype: str = "bfloat16", backbone: str = "clip", **model) -> dict[str, Any]:
    """Compile the train step and prediction for a target; their per-device memory,
    kernels and collectives. `model`: `bench_setup.model_config`'s options (frames,
    backbone_dtype, remat, attention, num_attributes, other VTFPARConfig fields)."""
    target = parse_target(target_spec)
    mesh = topology_mesh(target)
    devices = mesh.devices.size
    if batch % devices:
        raise TargetError(f"--batch {batch} does not split over the {devices} devices of "
                          f"{target.name}")
    model_cfg = bench_setup.model_config(registry.shape_config(backbone, shape), dtype=dtype,
                                         **model)
    shapes = jax.eval_shape(lambda: bench_setup.make_inputs(model_cfg, batch=batch))

    def placed(tree, where):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where),
                            tree)

    state, frozen, batch_arrays, rng = shapes
    state, frozen, rng = placed((state, frozen, rng), sharding.replicated(mesh))
    batch_arrays = placed(batch_arrays, sharding.batch_sharding(mesh))
    train_step, predict, _ = bench_setup.jitted(model_cfg, mesh)
    train = train_step.lower(state, batch_arrays, rng, frozen).compile()
    prediction = predict.lower(state.trainable, state.batch_stats, frozen,
                               batch_arrays["video"]).compile()
    return {
        "target": target.name, "platform": target.platform, "devices": devices,
        "device_kind": mesh.devices.flat[0].device_kind, "jax_version": jax.__version__,
        "shape": shape, "backbone": backbone, "batch": batch,
        "batch_per_device": batch // devices, "frames": model_cfg.frames,
        "dtype": model_cfg.dtype, "backbone_dtype": model_cfg.backbone_dtype,
        "remat": model_cfg.remat, "attention": model_cfg.attention,
        "trainable_params": bench_setup.count_params(state.trainable),
        "gradient_bytes": sum(int(np.prod(x.shape)) * x.dtype.itemsize
                              for x in jax.tree.leaves(state.trainable)),
        # Training BatchNorm's batch mean and variance of the (B, A) float32 logits.
        "batch_norm_bytes": 2 * model_cfg.num_attributes * 4,
        "train": compiled_stats.report(train), "predict": compiled_stats.report(prediction),
    }


def summary(r: dict[str, Any]) -> str:
    lines = [f"{r['target']} ({r['devices']}x {r['device_kind']}), {r['shape']}, global batch "
             f"{r['batch']} ({r['batch_per_device']} per device) x {r['frames']} frames, "
             f"{r['dtype']} (CLIP {r['backbone_dtype']}), remat {r['remat']}, attention "
             f"{r['attention']}; deviceless compile, per device:"]
    for name in ("train", "predict"):
        part = r[name]
        m = part["memory"] or {}
        collectives = ", ".join(f"{op} x{c['count']} ({c['bytes'] / 2 ** 20:.1f} MiB)"
                                for op, c in sorted(part["collectives"].items())) or "none"
        kernels = ", ".join(f"{k} x{n}" for k, n in part["kernels"].items()) or "none"
        lines.append(f"  {name}: temp {gib(m.get('temp_size_in_bytes', 0))}, arguments "
                     f"{gib(m.get('argument_size_in_bytes', 0))}; collectives: {collectives}")
        lines.append(f"    kernels: {kernels}")
    return "\n".join(lines)
