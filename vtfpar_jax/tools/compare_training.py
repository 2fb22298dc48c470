"""Training side by side with the published PyTorch VTFPAR++: the same weights, the same
batches, N optimiser steps on both sides, drop-path off on both.

    vtfpar compare-pytorch --openpar OpenPAR/VTFPAR++ --train_steps 3 \
        [--optimizer sgd|adam] [--head attribute|group] [--lr 1e-3] [--batch 2] \
        [--frames 2] [--json out.json] [--record folder]

Both sides start from a published sample (vtfpar_jax.convert.published_sample: ViT-B/16
CLIP shapes, every tensor drawn from its recipe): `default` for the attribute head,
`group_default` for the group head, converted here and exported back into the published
model (base_block or base_block_marco) with a strict `load_state_dict`. Batches are drawn from
`numpy.random.RandomState(seed)` (`draw_batches`): one clip of standard-normal frames
(model input, not pixels) and labels of one class per attribute group for each step,
then one clip for evaluation. The published side trains as its train.py does
(`loss.backward()`, `optimizer.step()`, model and CLIP in train mode) with
torch.optim.SGD or Adam at a constant learning rate and its weighted BCE; for the group
head, its own `batch_engine_marco.batch_trainer` runs each step (per-group cross-entropy).
Our side runs its own train step (vtfpar_jax.training.train_step) with optax's SGD or
Adam.

Reported: the loss of every step (relative difference), the evaluation-mode logits
after training (BatchNorm on the running statistics both sides kept), and the relative
difference of the parameter updates, ||Δours - Δpublished|| / ||Δpublished|| per tensor
(median and maximum over tensors). The same figures between the published code at 1
thread and at 2, 3 or 4 (the largest of the three) are the noise floor: float32 sums
taken in another order, which nothing here should be expected to beat.

`--record` writes what a clone without the published code replays
(`trajectory_fixture`): the published run's losses, evaluation logits and updates on a
fixed sample of entries of every tensor, beside the noise floor measured on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import statistics
import types
from pathlib import Path
from typing import Any

import numpy as np

from vtfpar_jax import attributes
from vtfpar_jax.tools import published_code as openpar_code

OPTIMIZERS = ("sgd", "adam")
HEADS = ("attribute", "group")
# The published code runs at each; the reference run is the first, and the noise floor is
# the largest difference of the others from it.
NOISE_THREADS = (1, 2, 3, 4)
# The published sample each head starts from.
SAMPLE_CASES = {"attribute": "default", "group": "group_default"}
# Updates are recorded on this many entries of each tensor (all of a smaller one).
SAMPLED_ENTRIES = 64
IMAGE_SHAPE = (3, 224, 224)
# The heads' biases and the bias of the LayerNorm before them: BatchNorm subtracts the
# batch mean of what they add, so their exact gradient is zero and training moves them by
# float32 rounding only, differently on every run (docs/published-model.md §14).
ROUNDING_ONLY = re.compile(r"weight_layer\.\d+\.bias|norm\.bias")


def draw_batches(seed: int, steps: int, batch: int, frames: int,
                 attribute_set: attributes.AttributeSet) -> dict[str, np.ndarray]:
    """{'videos' (steps, B, F, 3, 224, 224), 'labels' (steps, B, A), 'eval_video'}: model
    input in the published layout; each label row holds one class of every group (a binary
    group's class is its column's 0 or 1), so that both heads read the same targets."""
    stream = np.random.RandomState(seed)
    videos = stream.standard_normal((steps, batch, frames, *IMAGE_SHAPE)).astype(np.float32)
    labels = np.zeros((steps, batch, attribute_set.num_attributes), np.float32)
    for group in attribute_set.groups:
        classes = 2 if group.is_binary else len(group.columns)
        chosen = stream.randint(classes, size=(steps, batch))
        if group.is_binary:
            labels[:, :, group.columns[0]] = chosen
        else:
            labels[:, :, list(group.columns)] = np.eye(classes)[chosen]
    eval_video = stream.standard_normal((batch, frames, *IMAGE_SHAPE)).astype(np.float32)
    return {"videos": videos, "labels": labels, "eval_video": eval_video}


def starting_point(frames: int, head: str = "attribute") -> dict[str, Any]:
    """The weights of `head`'s published sample: {'cfg', 'variables', 'published' (its
    published state dict), 'clip_state', 'pos_ratio', 'tokens', 'meta', 'options', 'head'}."""
    from vtfpar_jax.convert import openpar, published_sample, to_openpar

    case = SAMPLE_CASES[head]
    sample = published_sample.load(case)
    meta = sample["meta"]
    options = {**meta["openpar_options"], "frames": frames}
    cfg, variables = openpar.convert(sample["state_dict"], **options)
    published = {k.removeprefix("model/"): v
                 for k, v in to_openpar.state_dict(cfg, variables).items()}
    clip_state = {k.removeprefix("clip/"): v for k, v in sample["state_dict"].items()
                  if k.startswith("clip/")}
    if cfg.head != head:
        raise ValueError(f"published sample {case!r} converts to the {cfg.head} head, "
                         f"not {head}")
    return {"cfg": cfg, "variables": variables, "published": published,
            "clip_state": clip_state, "pos_ratio": sample["pos_ratio"],
            "tokens": sample["expected"]["tokens"], "meta": meta, "options": options,
            "head": head}


def _without_drop_path(module) -> None:
    from torch import nn
    for name, child in module.named_children():
        if type(child).__name__ == "DropPath":
            setattr(module, name, nn.Identity())
        else:
            _without_drop_path(child)


def published_run(openpar_dir: str, start: dict, batches: dict, optimizer: str, lr: float,
                  threads: int) -> dict[str, Any]:
    """The published code trained on `batches` at `threads` CPU threads: {'losses',
    'eval_logits', 'after' (its state dict after training, float32 numpy)}."""
    import torch

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    phrases = start["meta"]["attributes"]
    group = start["head"] == "group"
    try:
        with openpar_code.published_code(openpar_dir, start["options"], "cpu") as pub:
            net, clip_torch = openpar_code.published_net(pub, start["clip_state"], phrases,
                                                         start["published"], group=group)
            _without_drop_path(net)
            openpar_code.freeze_backbone(net)
            trainable = [p for p in net.parameters() if p.requires_grad]
            opt = (torch.optim.SGD(trainable, lr=lr) if optimizer == "sgd"
                   else torch.optim.Adam(trainable, lr=lr))
            train_one = (_marco_step(pub, net, clip_torch, opt) if group
                         else openpar_code.attribute_step(
                             net, clip_torch, opt, torch.from_numpy(start["pos_ratio"])))
            losses = [train_one(torch.from_numpy(video), torch.from_numpy(labels))
                      for video, labels in zip(batches["videos"], batches["labels"],
                                               strict=True)]
            net.eval()
            clip_torch.eval()
            with torch.no_grad():
                eval_logits = net(torch.from_numpy(batches["eval_video"]), clip_torch).numpy()
            after = {k: v.detach().float().numpy().copy() for k, v in net.state_dict().items()}
    finally:
        torch.set_num_threads(saved_threads)
    return {"losses": np.asarray(losses, np.float64), "eval_logits": eval_logits,
            "after": after}


def _marco_step(pub, net, clip_torch, opt):
    """One step by the published `batch_engine_marco.batch_trainer` itself, on a one-batch
    loader: its loss average over that epoch is the step's loss."""
    engine = pub.batch_engine_marco()
    args = types.SimpleNamespace(dataset="MARS")

    def step(video, labels) -> float:
        with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch print
            return engine.batch_trainer(0, net, clip_torch, [(video, labels, None)], None,
                                        opt, args)[0]
    return step


def make_optimizer(optimizer: str, lr: float):
    """optax's SGD (no momentum, as torch.optim.SGD's default) or Adam (torch's defaults)."""
    import optax

    from vtfpar_jax.state import optim
    from vtfpar_jax.tools.bench_setup import PUBLISHED_OPTIMIZER
    if optimizer == "sgd":
        return optax.sgd(lr)
    return optim.make_optimizer(PUBLISHED_OPTIMIZER, optax.constant_schedule(lr))


def our_run(start: dict, batches: dict, optimizer: str, lr: float, seed: int = 0
            ) -> dict[str, Any]:
    """Our train step on `batches`: {'losses', 'eval_logits', 'after' (the trained
    variables exported to the published names)}."""
    import jax
    import optax

    from vtfpar_jax.convert import to_openpar
    from vtfpar_jax.inference import predict
    from vtfpar_jax.models import clip
    from vtfpar_jax.models import rng as random_streams
    from vtfpar_jax.state import optim
    from vtfpar_jax.state.train_state import Frozen, initial_state, step_frozen_params
    from vtfpar_jax.tools.bench_setup import FROZEN_PATTERNS
    from vtfpar_jax.training.train_step import make_train_step

    cfg = dataclasses.replace(start["cfg"], drop_path_rate=0.0)
    variables = start["variables"]
    tx = make_optimizer(optimizer, lr)
    text = clip.text_features(cfg.backbone, variables["backbone"], start["tokens"])
    state, frozen_params = initial_state(variables, variables["backbone"], FROZEN_PATTERNS, tx)
    frozen = Frozen(params=step_frozen_params(cfg, frozen_params), text_features=text,
                    positive_ratio=start["pos_ratio"])
    step = jax.jit(make_train_step(cfg, tx, optax.constant_schedule(lr), backbone_frozen=True))
    rng = random_streams.run_key(seed)
    losses = []
    for video, labels in zip(batches["videos"], batches["labels"], strict=True):
        state, metrics = step(state, {"video": video.transpose(0, 1, 3, 4, 2),
                                      "labels": labels}, rng, frozen)
        losses.append(float(metrics["loss"]))
    params = optim.merge(state.trainable, frozen_params)
    trained = {"params": params["model"], "batch_stats": state.batch_stats,
               "backbone": variables["backbone"]}
    eval_logits = predict.compute_logits(cfg, trained,
                                         batches["eval_video"].transpose(0, 1, 3, 4, 2),
                                         start["tokens"])
    after = {k.removeprefix("model/"): v
             for k, v in to_openpar.state_dict(cfg, jax.device_get(trained)).items()}
    return {"losses": np.asarray(losses, np.float64),
            "eval_logits": eval_logits, "after": after}


def trained_keys(before: dict, *runs: dict) -> list[str]:
    """Published keys of the tensors training moved in any run, but for CLIP, BatchNorm's
    running statistics (compared as they are) and ROUNDING_ONLY."""
    return sorted(k for k, v in before.items()
                  if not k.startswith("clip_visual_extractor.") and not k.startswith("bn.running")
                  and k != "bn.num_batches_tracked" and not ROUNDING_ONLY.fullmatch(k)
                  and any(np.any(run["after"][k] != v) for run in runs))


def sampled_entries(shape: tuple[int, ...], key_index: int) -> np.ndarray:
    """The flat indices of a tensor whose updates the fixture keeps: all of a small tensor,
    else SAMPLED_ENTRIES drawn without replacement (RandomState(key_index), sorted)."""
    size = int(np.prod(shape))
    if size <= SAMPLED_ENTRIES:
        return np.arange(size)
    return np.sort(np.random.RandomState(key_index).choice(size, SAMPLED_ENTRIES,
                                                           replace=False))


def update_differences(updates: dict[str, np.ndarray], reference: dict[str, np.ndarray]
                       ) -> dict[str, Any]:
    """||Δ - Δref|| / ||Δref|| per tensor (float64), with their median and maximum."""
    per_tensor = {}
    for k, ref in reference.items():
        ref = ref.astype(np.float64)
        diff = updates[k].astype(np.float64) - ref
        per_tensor[k] = float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30))
    values = list(per_tensor.values())
    return {"median": statistics.median(values), "max": max(values),
            "worst_tensor": max(per_tensor, key=per_tensor.get), "per_tensor": per_tensor}


def trajectory_differences(run: dict, reference: dict) -> dict[str, Any]:
    """Loss, logit and update differences of `run` from `reference` (both as recorded by
    `summary_of`: losses, eval_logits, updates, running statistics)."""
    losses = np.abs(run["losses"] - reference["losses"]) / np.abs(reference["losses"])
    bn = max(float(np.abs(run[k] - reference[k]).max()) for k in ("bn_running_mean",
                                                                     "bn_running_var"))
    updates = update_differences(run["updates"], reference["updates"])
    return {"loss_rel": float(losses.max()), "loss_rel_per_step": losses.tolist(),
            "eval_logits_abs": float(np.abs(run["eval_logits"] - reference["eval_logits"]).max()),
            "bn_running_abs": bn, "update_rel_median": updates["median"],
            "update_rel_max": updates["max"], "update_worst_tensor": updates["worst_tensor"],
            "update_rel_per_tensor": updates["per_tensor"]}


def summary_of(run: dict, before: dict, keys: list[str], sampled: bool) -> dict[str, Any]:
    """What a trajectory is compared on: losses, eval logits, BatchNorm's running statistics
    and every trained tensor's update (on its sampled entries when `sampled`)."""
    updates = {}
    for i, k in enumerate(keys):
        delta = (run["after"][k].astype(np.float64) - before[k]).ravel()
        updates[k] = delta[sampled_entries(before[k].shape, i)] if sampled else delta
    return {"losses": run["losses"], "eval_logits": run["eval_logits"],
            "bn_running_mean": run["after"]["bn.running_mean"],
            "bn_running_var": run["after"]["bn.running_var"], "updates": updates}


def compare(openpar_dir: str, steps: int, optimizer: str = "sgd", head: str = "attribute",
            batch: int = 2, frames: int = 2, lr: float = 1e-3, seed: int = 0,
            record: str | None = None, start: dict | None = None) -> dict[str, Any]:
    """Both sides trained from the published sample's weights (`start`: `starting_point`'s,
    to reuse); the published code at each of NOISE_THREADS for the noise floor.
    `record`: write the trajectory fixture there."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if head not in HEADS:
        raise ValueError(f"--head {head!r}; expected one of {HEADS}")
    if steps < 1:
        raise ValueError(f"--train_steps {steps}: expected at least 1")
    openpar_code.check_checkout(openpar_dir)
    start = start or starting_point(frames, head)
    if start["head"] != head:
        raise ValueError(f"the starting point given is the {start['head']} head's, not {head}")
    attribute_set = attributes.get("mars")
    batches = draw_batches(seed, steps, batch, frames, attribute_set)
    published = {n: published_run(openpar_dir, start, batches, optimizer, lr, n)
                 for n in NOISE_THREADS}
    ours = our_run(start, batches, optimizer, lr, seed)
    before = start["published"]
    keys = trained_keys(before, *published.values(), ours)
    summaries = [summary_of(published[n], before, keys, sampled=False) for n in NOISE_THREADS]
    reference = summaries[0]
    result = {
        "steps": steps, "optimizer": optimizer, "head": head, "batch": batch, "frames": frames,
        "lr": lr, "seed": seed, "trained_tensors": len(keys), "noise_threads": NOISE_THREADS,
        "published_losses": reference["losses"].tolist(), "jax_losses": ours["losses"].tolist(),
        "jax_vs_published": trajectory_differences(
            summary_of(ours, before, keys, sampled=False), reference),
        "noise_floor": noise_floor(summaries),
    }
    if record:
        sampled = [summary_of(published[n], before, keys, sampled=True) for n in NOISE_THREADS]
        write_fixture(record, result, sampled[0], noise_floor(sampled), keys)
    return result


def noise_floor(runs: list[dict]) -> dict[str, Any]:
    """The published code's own differences from its reference run, `runs[0]`: each figure's
    largest over the others (the same runs at other thread counts), per step and per tensor
    too."""
    reference, *others = runs
    each = [trajectory_differences(run, reference) for run in others]
    floor = {k: max(d[k] for d in each) for k in each[0] if isinstance(each[0][k], float)}
    floor["loss_rel_per_step"] = np.max([d["loss_rel_per_step"] for d in each], 0).tolist()
    per_tensor = {k: max(d["update_rel_per_tensor"][k] for d in each)
                  for k in each[0]["update_rel_per_tensor"]}
    floor["update_rel_per_tensor"] = per_tensor
    floor["update_worst_tensor"] = max(per_tensor, key=per_tensor.get)
    return floor


def write_fixture(folder: str, result: dict, one: dict, floor: dict, keys: list[str]) -> None:
    """`trajectory.json` (settings, keys, the noise floor on the sampled entries) and
    `trajectory.npz` (the 1-thread published run `one`, sampled) in `folder`, made if
    missing."""
    os.makedirs(folder, exist_ok=True)
    arrays = {"losses": one["losses"], "eval_logits": one["eval_logits"],
              "bn_running_mean": one["bn_running_mean"], "bn_running_var": one["bn_running_var"]}
    arrays.update({f"update/{k}": v.astype(np.float32) for k, v in one["updates"].items()})
    np.savez_compressed(Path(folder) / "trajectory.npz", **arrays)
    settings = {k: result[k] for k in ("steps", "optimizer", "head", "batch", "frames", "lr",
                                       "seed", "noise_threads")}
    meta = {**settings, "sample_case": SAMPLE_CASES[result["head"]],
            "sampled_entries": SAMPLED_ENTRIES, "trained_keys": keys,
            "noise_floor": floor,
            "jax_vs_published_when_recorded": result["jax_vs_published"]}
    (Path(folder) / "trajectory.json").write_text(json.dumps(meta, indent=1) + "\n")


def read_fixture(folder: str | Path) -> tuple[dict, dict]:
    """(trajectory.json, the recorded run as `summary_of` gives it)."""
    folder = Path(folder)
    meta = json.loads((folder / "trajectory.json").read_text())
    with np.load(folder / "trajectory.npz") as recorded:
        arrays = dict(recorded)
    run = {k: arrays[k] for k in ("losses", "eval_logits", "bn_running_mean", "bn_running_var")}
    run["updates"] = {k: arrays[f"update/{k}"].astype(np.float64) for k in meta["trained_keys"]}
    return meta, run


def summary(r: dict[str, Any]) -> str:
    """Per-step losses, then each figure beside its noise floor."""
    d, floor = r["jax_vs_published"], r["noise_floor"]
    lines = [f"{r['steps']} {r['optimizer']} steps (lr {r['lr']:g}), {r['head']} head, batch "
             f"{r['batch']} x {r['frames']} frames, drop-path off; published | JAX loss:"]
    lines += [f"  step {i + 1}: {p:.7f} | {j:.7f}"
              for i, (p, j) in enumerate(zip(r["published_losses"], r["jax_losses"],
                                             strict=True))]
    threads = r.get("noise_threads", NOISE_THREADS)
    lines.append(f"JAX vs published (noise floor: published at {threads[0]} thread against "
                 f"{', '.join(map(str, threads[1:]))}, the largest):")
    for key, label in (("loss_rel", "loss, max relative"),
                       ("eval_logits_abs", "eval logits after training, max |delta|"),
                       ("bn_running_abs", "BatchNorm running statistics, max |delta|"),
                       ("update_rel_median", "parameter updates, median relative"),
                       ("update_rel_max", "parameter updates, max relative")):
        lines.append(f"  {label}: {d[key]:.2e} ({floor[key]:.2e})")
    return "\n".join(lines)
