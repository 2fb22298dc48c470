"""Training side by side with the published PyTorch VTFPAR++: the same weights, the same
batches, N optimiser steps on both sides, drop-path off on both.

    vtfpar compare-pytorch --openpar OpenPAR/VTFPAR++ --train_steps 3 \
        [--optimizer sgd|adam] [--lr 1e-3] [--batch 2] [--frames 2] [--json out.json] \
        [--record folder]

Both sides start from the published sample `default` (vtfpar_jax.convert.published_sample:
ViT-B/16 CLIP shapes, every tensor drawn from its recipe), converted here and exported
back into the published model with a strict `load_state_dict`. Batches are drawn from
`numpy.random.RandomState(seed)` (`draw_batches`): one clip of standard-normal frames
(model input, not pixels) and labels of one class per attribute group for each step,
then one clip for evaluation. The published side trains as its train.py does
(`loss.backward()`, `optimizer.step()`, model and CLIP in train mode) with
torch.optim.SGD or Adam at a constant learning rate and its weighted BCE; our side runs
its own train step (vtfpar_jax.training.train_step) with optax's SGD or Adam.

Reported: the loss of every step (relative difference), the evaluation-mode logits
after training (BatchNorm on the running statistics both sides kept), and the relative
difference of the parameter updates, ||Δours - Δpublished|| / ||Δpublished|| per tensor
(median and maximum over tensors). The same three figures between the published code
at 1 and at 2 threads are the noise floor: float32 sums taken in another order, which
nothing here should be expected to beat.

`--record` writes what a clone without the published code replays
(`trajectory_fixture`): the published run's losses, evaluation logits and updates on a
fixed sample of entries of every tensor, beside the noise floor measured on them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import types
from pathlib import Path
from typing import Any

import numpy as np

from vtfpar_jax import attributes

OPTIMIZERS = ("sgd", "adam")
HEADS = ("attribute",)
NOISE_THREADS = (1, 2)
SAMPLE_CASE = "default"
# Updates are recorded on this many entries of each tensor (all of a smaller one).
SAMPLED_ENTRIES = 64
IMAGE_SHAPE = (3, 224, 224)
# The heads' biases feed BatchNorm, which in training subtracts the batch mean: their exact
# gradient is zero and what they get is float32 rounding, different on every run (the
# published code's own at 1 and 2 threads differ by ~1e23 relative). SGD leaves them
# in place; Adam normalises that rounding to steps of about lr with random signs, which
# then shows in the evaluation logits (BatchNorm on running statistics reads them).
ROUNDING_ONLY = re.compile(r"weight_layer\.\d+\.bias")


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
        for step in range(steps):
            for row in range(batch):
                if group.is_binary:
                    labels[step, row, group.columns[0]] = chosen[step, row]
                else:
                    labels[step, row, group.columns[chosen[step, row]]] = 1.0
    eval_video = stream.standard_normal((batch, frames, *IMAGE_SHAPE)).astype(np.float32)
    return {"videos": videos, "labels": labels, "eval_video": eval_video}


def starting_point(frames: int) -> dict[str, Any]:
    """The published sample's weights: {'cfg', 'variables', 'published' (its published
    state dict), 'clip_state', 'pos_ratio', 'tokens', 'meta'}."""
    from vtfpar_jax.convert import openpar, published_sample, to_openpar

    meta = published_sample.params(SAMPLE_CASE)
    drawn = published_sample.draw(meta)
    options = {**meta["openpar_options"], "frames": frames}
    cfg, variables = openpar.convert(drawn["state_dict"], **options)
    published = {k.removeprefix("model/"): v
                 for k, v in to_openpar.state_dict(cfg, variables).items()}
    clip_state = {k.removeprefix("clip/"): v for k, v in drawn["state_dict"].items()
                  if k.startswith("clip/")}
    with np.load(published_sample.CASES_DIR / SAMPLE_CASE / "outputs.npz") as recorded:
        tokens = recorded["tokens"]
    return {"cfg": cfg, "variables": variables, "published": published,
            "clip_state": clip_state, "pos_ratio": drawn["pos_ratio"], "tokens": tokens,
            "meta": meta, "options": options}


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

    from vtfpar_jax.convert.to_openpar_cli import command_line
    from vtfpar_jax.tools.published_code import published_code, weighted_bce_torch

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    options = start["options"]
    flags = tuple(command_line({k: v for k, v in options.items() if k != "frames"}).split())
    phrases = start["meta"]["attributes"]
    try:
        with published_code(openpar_dir, options["frames"], "cpu", flags) as pub:
            clip_state = {k: torch.from_numpy(v) for k, v in start["clip_state"].items()}
            clip_torch = pub.clip_model.build_model(dict(clip_state)).float()
            clip_torch.load_state_dict(clip_state)
            net = pub.base_block.TransformerClassifier(clip_torch, len(phrases),
                                                       attr_words=phrases)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in start["published"].items()},
                                strict=True)
            _without_drop_path(net)
            for name, param in net.named_parameters():
                if "clip_visual_extractor" in name:  # as the published train.py freezes it
                    param.requires_grad = False
            trainable = [p for p in net.parameters() if p.requires_grad]
            opt = (torch.optim.SGD(trainable, lr=lr) if optimizer == "sgd"
                   else torch.optim.Adam(trainable, lr=lr))
            ratio = torch.from_numpy(start["pos_ratio"])
            losses = []
            net.train()
            clip_torch.train()
            for video, labels in zip(batches["videos"], batches["labels"], strict=True):
                logits = net(torch.from_numpy(video), clip_torch)
                loss = weighted_bce_torch(logits, torch.from_numpy(labels), ratio)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            net.eval()
            clip_torch.eval()
            with torch.no_grad():
                eval_logits = net(torch.from_numpy(batches["eval_video"]), clip_torch).numpy()
            after = {k: v.detach().float().numpy().copy() for k, v in net.state_dict().items()}
    finally:
        torch.set_num_threads(saved_threads)
    return {"losses": np.asarray(losses, np.float64), "eval_logits": eval_logits,
            "after": after}


def make_optimizer(optimizer: str, lr: float):
    """optax's SGD (no momentum, as torch.optim.SGD's default) or Adam (torch's defaults)."""
    import optax

    from vtfpar_jax.state import optim
    if optimizer == "sgd":
        return optax.sgd(lr)
    adam = types.SimpleNamespace(name="adam", lr=lr, b1=0.9, b2=0.999, eps=1e-8,
                                 weight_decay=0.0, grad_clip_norm=0.0, accumulate_steps=1)
    return optim.make_optimizer(adam, optax.constant_schedule(lr))


def our_run(start: dict, batches: dict, optimizer: str, lr: float, seed: int = 0
            ) -> dict[str, Any]:
    """Our train step on `batches`: {'losses', 'eval_logits', 'after' (the trained
    variables exported to the published names)}."""
    import jax
    import optax

    from vtfpar_jax.convert import to_openpar
    from vtfpar_jax.models import clip, vtfpar
    from vtfpar_jax.models import rng as random_streams
    from vtfpar_jax.state import optim
    from vtfpar_jax.state.train_state import Frozen, initial_state, step_frozen_params
    from vtfpar_jax.tools.bench_setup import FROZEN_PATTERNS
    from vtfpar_jax.training.train_step import make_train_step

    cfg = dataclasses.replace(start["cfg"], drop_path_rate=0.0)
    variables = start["variables"]
    tx = make_optimizer(optimizer, lr)
    text = clip.text_features(cfg.clip, variables["clip"], start["tokens"])
    state, frozen_params = initial_state(variables, variables["clip"], FROZEN_PATTERNS, tx)
    frozen = Frozen(params=step_frozen_params(cfg, frozen_params), text_features=text,
                    positive_ratio=start["pos_ratio"])
    step = jax.jit(make_train_step(cfg, tx, optax.constant_schedule(lr), clip_frozen=True))
    rng = random_streams.run_key(seed)
    losses = []
    for video, labels in zip(batches["videos"], batches["labels"], strict=True):
        state, metrics = step(state, {"video": video.transpose(0, 1, 3, 4, 2),
                                      "labels": labels}, rng, frozen)
        losses.append(float(metrics["loss"]))
    params = optim.merge(state.trainable, frozen_params)
    trained = {"params": params["model"], "batch_stats": state.batch_stats,
               "clip": variables["clip"]}
    eval_logits, _ = jax.jit(lambda v, x: vtfpar.apply(
        cfg, {"params": v["params"], "batch_stats": v["batch_stats"]}, v["clip"], x, text))(
        trained, batches["eval_video"].transpose(0, 1, 3, 4, 2))
    after = {k.removeprefix("model/"): v
             for k, v in to_openpar.state_dict(cfg, jax.device_get(trained)).items()}
    return {"losses": np.asarray(losses, np.float64),
            "eval_logits": np.asarray(eval_logits), "after": after}


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
    to reuse); the published code twice (at 1 and 2 threads) for the noise floor.
    `record`: write the trajectory fixture there."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if head not in HEADS:
        raise ValueError(f"--head {head!r}; expected one of {HEADS}")
    if steps < 1:
        raise ValueError(f"--train_steps {steps}: expected at least 1")
    start = start or starting_point(frames)
    attribute_set = attributes.get("mars")
    batches = draw_batches(seed, steps, batch, frames, attribute_set)
    published = {n: published_run(openpar_dir, start, batches, optimizer, lr, n)
                 for n in NOISE_THREADS}
    ours = our_run(start, batches, optimizer, lr, seed)
    before = start["published"]
    runs = [*published.values(), ours]
    keys = trained_keys(before, *runs)
    one, two = (published[n] for n in NOISE_THREADS)
    full = {name: summary_of(r, before, keys, sampled=False)
            for name, r in (("one", one), ("two", two), ("ours", ours))}
    result = {
        "steps": steps, "optimizer": optimizer, "head": head, "batch": batch, "frames": frames,
        "lr": lr, "seed": seed, "trained_tensors": len(keys),
        "published_losses": one["losses"].tolist(), "jax_losses": ours["losses"].tolist(),
        "jax_vs_published": trajectory_differences(full["ours"], full["one"]),
        "noise_floor": trajectory_differences(full["two"], full["one"]),
    }
    if record:
        write_fixture(record, result, {name: summary_of(r, before, keys, sampled=True)
                                       for name, r in (("one", one), ("two", two))}, keys)
    return result


def write_fixture(folder: str, result: dict, sampled: dict, keys: list[str]) -> None:
    """`trajectory.json` (settings, keys, the noise floor on the sampled entries) and
    `trajectory.npz` (the 1-thread published run) in `folder`, made if missing."""
    os.makedirs(folder, exist_ok=True)
    one = sampled["one"]
    arrays = {"losses": one["losses"], "eval_logits": one["eval_logits"],
              "bn_running_mean": one["bn_running_mean"], "bn_running_var": one["bn_running_var"]}
    arrays.update({f"update/{k}": v.astype(np.float32) for k, v in one["updates"].items()})
    np.savez_compressed(Path(folder) / "trajectory.npz", **arrays)
    settings = {k: result[k] for k in ("steps", "optimizer", "head", "batch", "frames", "lr",
                                       "seed")}
    meta = {**settings, "sample_case": SAMPLE_CASE, "sampled_entries": SAMPLED_ENTRIES,
            "trained_keys": keys,
            "noise_floor": trajectory_differences(sampled["two"], sampled["one"]),
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
    lines.append("JAX vs published (noise floor: published at 1 vs 2 threads):")
    for key, label in (("loss_rel", "loss, max relative"),
                       ("eval_logits_abs", "eval logits after training, max |delta|"),
                       ("bn_running_abs", "BatchNorm running statistics, max |delta|"),
                       ("update_rel_median", "parameter updates, median relative"),
                       ("update_rel_max", "parameter updates, max relative")):
        lines.append(f"  {label}: {d[key]:.2e} ({floor[key]:.2e})")
    return "\n".join(lines)
