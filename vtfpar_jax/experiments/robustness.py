"""Robustness: `vtfpar robustness --model DIR [--split test]
[--corruptions occlusion,motion_blur,...] [--severities 1,3,5] [--seed 0] [--out DIR]`.

Evaluates the clean split, then every corruption x severity
(vtfpar_jax.experiments.corruptions), with the evaluation code and its
protocols. Writes to OUT (default MODEL/robustness_SPLIT) robustness.json (per
cell the headline metrics and every attribute group's F1), table.txt,
robustness.png and groups.png.

robustness.json is rewritten after every cell, so an interrupted run resumes
with the next cell; new corruptions or severities add cells. It records what its
cells ran (the model dir, step and config, the split, data dir and seed, and each
corruption's definition: `fingerprint.corruption_definition`), and a rerun into
the same OUT that differs in any of these is refused, naming the fields. Works on
training work dirs and converted published checkpoints alike. docs/experiments.md,
"Robustness", describes each output and the rules.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from vtfpar_jax import cli_errors
from vtfpar_jax.errors import UserError
from vtfpar_jax.experiments import corruptions
from vtfpar_jax.outputs import stop_signals
from vtfpar_jax.outputs.files import read_to_resume, save_figure, write_json, write_text
from vtfpar_jax.state import fingerprint, old_names

DEFAULT_CORRUPTIONS = ("occlusion", "motion_blur", "dropped_frames")
DEFAULT_SEVERITIES = (1, 3, 5)
METRICS = (("group_f1", "group F1 (published, 0.45)"), ("mA", "mA"), ("chen_f1", "Chen F1"))
CLEAN = "clean"


class RobustnessError(UserError, ValueError):
    """An output folder holding results of another model step, split or seed."""


def cell_key(name: str, severity: int) -> str:
    return CLEAN if severity == 0 else f"{name}/{severity}"


def _identity(model: str, loaded, split: str, seed: int, names) -> dict:
    """What the cells of robustness.json ran (`loaded`: the model dir as loaded)."""
    from vtfpar_jax.state import model_dir
    return {"model": model_dir.identity(model), "step": loaded.step, "split": split, "seed": seed,
            "attribute_set": loaded.attribute_set.name, "data_dir": loaded.config.data_dir,
            "model_config": fingerprint.jsonable(loaded.config),
            "definitions": {n: fingerprint.corruption_definition(corruptions.CORRUPTIONS[n])
                            for n in names}}


def _resume(path: str, identity: dict) -> dict:
    """The cells already in `path` if they ran what `identity` says; else refused.
    Corruptions that only one of the two runs has are not compared (new ones add cells)."""
    previous = read_to_resume(path, RobustnessError, "--out")
    if not previous:
        return {}
    kept = previous.get("definitions", {})
    now = {**identity, "definitions": {n: d for n, d in identity["definitions"].items()
                                       if n in kept}}
    before = {**previous, "definitions": {n: d for n, d in kept.items()
                                          if n in identity["definitions"]}}
    if "model_config" in before:   # recorded, maybe, under the backbone's old names
        before["model_config"] = old_names.config(before["model_config"])
    fingerprint.check_same_run(path, before, now, RobustnessError, "--out")
    identity["definitions"] = {**kept, **identity["definitions"]}
    return previous.get("cells", {})


def run(model: str, split: str = "test", names=DEFAULT_CORRUPTIONS,
        severities=DEFAULT_SEVERITIES, seed: int = 0, out: str | None = None,
        step: int | None = None, data_dir: str | None = None, progress: bool = True) -> dict:
    """Evaluate `model` clean and under every corruption x severity; returns robustness.json."""
    from tqdm.auto import tqdm

    from vtfpar_jax.evaluation import evaluate
    from vtfpar_jax.state import model_dir

    names = corruptions.parse_names(names)
    severities = corruptions.parse_severities(severities)
    loaded = model_dir.load(model, step=step, data_dir=data_dir)
    out = out or model_dir.folder_inside(model, f"robustness_{split}")
    path = os.path.join(out, "robustness.json")
    identity = _identity(model, loaded, split, seed, names)
    cells = _resume(path, identity)
    evaluator = evaluate.Evaluator.from_loaded(loaded)
    report = {**identity, "fingerprint": fingerprint.fingerprint(identity), "cells": cells}
    wanted = [(CLEAN, 0)] + [(n, s) for n in names for s in severities]
    todo = [(n, s) for n, s in wanted if cell_key(n, s) not in cells]
    if len(todo) < len(wanted):
        print(f"{path}: {len(wanted) - len(todo)} of {len(wanted)} cells already done, kept")
    bar = tqdm(todo, desc="robustness", unit="cell", disable=not progress)
    for name, severity in bar:
        bar.set_postfix_str(cell_key(name, severity))
        corrupt = None if severity == 0 else functools.partial(
            corruptions.corrupt_batch, name=name, severity=severity, seed=seed)
        results = evaluator.run(loaded.state, split, corrupt=corrupt)
        cells[cell_key(name, severity)] = {
            "corruption": name, "severity": severity, "headline": evaluate.headline(results),
            "groups": {group: g["f1"] for group, g in results["group"]["groups"].items()},
            "num_samples": results["num_samples"]}
        write_json(path, report)
    report["table"] = format_table(report, names, severities)
    write_text(os.path.join(out, "table.txt"), report["table"])
    save_figures(report, names, severities, out)
    return report


def _value(cells: dict, name: str, severity: int, metric: str) -> float | None:
    cell = cells.get(cell_key(name, severity))
    return None if cell is None else cell["headline"][metric]


def failing_groups(cells: dict, name: str, severity: int) -> list[tuple[str, float]]:
    """(group, F1 drop from clean in points) under `name` at `severity`, largest first."""
    clean, hit = cells[CLEAN]["groups"], cells[cell_key(name, severity)]["groups"]
    return sorted(((g, 100.0 * (clean[g] - hit[g])) for g in clean), key=lambda x: -x[1])


def format_table(report: dict, names, severities) -> str:
    cells = report["cells"]
    columns = [0, *severities]
    width = max(len(n) for n in [*names, CLEAN, "corruption"])
    lines = [f"model {report['model']} (step {report['step']}), split {report['split']!r}, "
             f"{cells[CLEAN]['num_samples']} tracklets, seed {report['seed']}", ""]
    for metric, title in METRICS:
        lines.append(f"{title}, % (severity 0 = clean)")
        lines.append(f"{'corruption':<{width}}" + "".join(f"{s:>8}" for s in columns))
        lines.append(f"{CLEAN:<{width}}{100 * _value(cells, CLEAN, 0, metric):8.2f}")
        for name in names:
            row = [_value(cells, name, s, metric) for s in severities]
            lines.append(f"{name:<{width}}{'':8}" + "".join(
                f"{100 * v:8.2f}" if v is not None else f"{'-':>8}" for v in row))
        lines.append("")
    top = max(severities)
    lines.append(f"attribute groups that fail first (group F1 drop from clean, points, at "
                 f"severity {top})")
    for name in names:
        worst = failing_groups(cells, name, top)[:3]
        lines.append(f"{name:<{width}}  " + ", ".join(f"{g} {d:+.1f}" for g, d in worst))
    return "\n".join(lines) + "\n"


def save_figures(report: dict, names, severities, out: str) -> None:
    """robustness.png (metrics against severity) and groups.png (F1 drop per group)."""
    from matplotlib.figure import Figure  # not pyplot: savefig renders with Agg

    cells = report["cells"]
    figure = Figure(figsize=(13, 4), layout="constrained")
    axes = figure.subplots(1, len(METRICS))
    for ax, (metric, title) in zip(axes, METRICS, strict=True):
        for name in names:
            xs = [0, *severities]
            ys = [100 * _value(cells, name, s, metric) for s in xs]
            ax.plot(xs, ys, marker="o", label=name)
        ax.set(xticks=range(0, max(severities) + 1), xlabel="severity (0 = clean)",
               ylabel="%", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{report['attribute_set']}, split {report['split']!r}, step "
                    f"{report['step']}")
    save_figure(figure, os.path.join(out, "robustness.png"), dpi=100)

    top = max(severities)
    groups = list(cells[CLEAN]["groups"])
    drops = np.array([[dict(failing_groups(cells, n, top))[g] for n in names] for g in groups])
    order = np.argsort(-drops.mean(axis=1))       # the groups that fail most, on top
    figure = Figure(figsize=(2.2 + 1.3 * len(names), 1.2 + 0.35 * len(groups)),
                    layout="constrained")
    ax = figure.subplots()
    limit = max(1.0, float(np.abs(drops).max()))
    image = ax.imshow(drops[order], cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(drops[order]):
        ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(groups)), [groups[i] for i in order])
    figure.colorbar(image, ax=ax, label="group F1 drop from clean (points)")
    ax.set_title(f"severity {top}")
    save_figure(figure, os.path.join(out, "groups.png"), dpi=100)


def cells_kept(path: str) -> str:
    """What a stop leaves at `path` (robustness.json), asked at the stop."""
    cells = read_to_resume(path, RobustnessError, "--out").get("cells", {})
    if not cells:
        return "no cell had finished; nothing was written; rerun the same command"
    return (f"the {len(cells)} cell(s) finished are kept in {path}; rerun the same command "
            "to resume with the next")


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        prog="vtfpar robustness", description=__doc__.splitlines()[0].split(":")[0],
        epilog=f"corruptions: {', '.join(corruptions.CORRUPTIONS)} (or 'all'); severities 1-5")
    cli_errors.add_model_options(parser)
    cli_errors.add_dataset_options(parser)
    parser.add_argument("--corruptions", default=",".join(DEFAULT_CORRUPTIONS))
    parser.add_argument("--severities", default=",".join(map(str, DEFAULT_SEVERITIES)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default MODEL/robustness_SPLIT")
    return cli_errors.parse_and_run(parser, argv, _robustness)


def _robustness(args) -> dict:
    from vtfpar_jax.outputs import out_folder
    from vtfpar_jax.state import model_dir
    out = args.out or model_dir.folder_inside(args.model, f"robustness_{args.split}")
    corruptions.parse_names(args.corruptions)   # every option before the model loads
    corruptions.parse_severities(args.severities)
    out_folder.check_writable_folder(out)
    with out_folder.lock(out):   # two runs would each rewrite the other's cells away
        model_dir.check_dataset(args.model, args.split, args.data_dir)
        stop_signals.on_stop(lambda: cells_kept(os.path.join(out, "robustness.json")))
        report = run(args.model, args.split, args.corruptions, args.severities, args.seed,
                     args.out, args.step, args.data_dir)
    print(report["table"], end="")
    print(f"written to {out}")
    return report
