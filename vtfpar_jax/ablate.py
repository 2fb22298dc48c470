"""Ablations: `python -m vtfpar_jax.ablate --config configs/X.py[:arg]
--sweep 'model.spatial_aggregation=mean,max,attention' [--sweep ...] [--set key=value ...]
--workdir DIR`.

Trains and evaluates every point of the grid (the product of the sweeps) with
the trainer and evaluator of `vtfpar_jax.train`, each point in its own work dir
DIR/<point>. Writes DIR/ablation.json (every point's overrides and headline
metrics), DIR/ablation.md (a table) and DIR/ablation.png (a bar chart).

Rerunning the same command resumes: finished points are kept, and a point
stopped halfway resumes from its newest checkpoint. A rerun with another config
or other --set values is refused (its points would not compare); new sweep
values add points.

Values are typed like the config field they set (true/false, numbers, strings;
tuples as Python literals, e.g. --sweep "frozen_patterns=('clip/.*',),()").
`frozen_patterns` also takes these names, which make "side tuning against partial
or full fine-tuning" one command:
  side_tuning   all of CLIP frozen (the published method);
  last_block    CLIP frozen but for the deepest vision block the side nets read;
  full_vision   the whole CLIP vision tower trained (the text features stay fixed).
"""

from __future__ import annotations

import ast
import itertools
import logging
import os
import re

import ml_collections

from vtfpar_jax import cli_errors, train
from vtfpar_jax.errors import UserError, nearest
from vtfpar_jax.files import read_to_resume, save_figure, write_json, write_text

METRICS = (("group_f1", "group F1"), ("mA", "mA"), ("chen_f1", "Chen F1"),
           ("instance_f1", "instance F1"))
FROZEN_PRESETS = ("side_tuning", "last_block", "full_vision")


class AblationError(UserError, ValueError):
    """A work dir holding another ablation, or a sweep that cannot be run."""


def frozen_preset(name: str, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The frozen_patterns a preset name stands for, for this config's CLIP and maps."""
    from vtfpar_jax.models.side_nets import parse_interaction_map
    if name == "side_tuning":
        return ("clip/.*",)
    if name == "full_vision":
        return ("clip/text/.*", "clip/logit_scale")
    if name == "last_block":
        m = config.model
        maps = ((m.spatial_map,) if m.use_spatial else ()) + (
            (m.temporal_map,) if m.use_temporal else ())
        deepest = max(s for spec in maps for s, _ in parse_interaction_map(spec))
        if deepest == 0:
            raise AblationError("frozen_patterns=last_block: the side nets read only CLIP "
                                "feature 0 (the embeddings), no block; fine-tune with "
                                "full_vision or read a deeper feature")
        # Feature s is the output of block s, which is the vision tower's layers_{s-1}.
        return ("clip/text/.*", "clip/logit_scale", f"clip/vision/(?!layers_{deepest - 1}/).*")
    raise AblationError(f"frozen_patterns={name!r}: expected a tuple of regexes or one of "
                        f"{', '.join(FROZEN_PRESETS)}{nearest(name, FROZEN_PRESETS)}")


def _split_values(text: str) -> list[str]:
    """'a,b,(1, 2)' -> ['a', 'b', '(1, 2)']: commas inside brackets or quotes stay."""
    values, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def parse_value(config: ml_collections.ConfigDict, key: str, text: str):
    """`text` typed as the config's field `key` is (a preset name stays a string)."""
    fields = train.config_fields(config)
    if key not in fields:
        raise AblationError(f"{key!r}: the config has no such field{nearest(key, fields)}")
    node = config
    for name in key.split("."):
        node = node[name]
    kind = type(node)
    if key == "frozen_patterns" and text in FROZEN_PRESETS:
        return text
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind in (int, float):
            return kind(text)
        if kind in (tuple, list):
            value = ast.literal_eval(text)
            if not isinstance(value, (tuple, list)):
                raise ValueError(text)
            return tuple(value)
        return text
    except (ValueError, SyntaxError):
        extra = (f" or one of {', '.join(FROZEN_PRESETS)}{nearest(text, FROZEN_PRESETS)}"
                 if key == "frozen_patterns" else "")
        raise AblationError(f"{key}={text!r}: expected a {kind.__name__}{extra}") from None


def parse_sweep(config: ml_collections.ConfigDict, spec: str) -> tuple[str, list]:
    """'model.dim=64,128' -> ('model.dim', [64, 128])."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not values.strip():
        raise AblationError(f"--sweep {spec!r}: expected 'field=value,value,...'")
    parsed = [parse_value(config, key, v) for v in _split_values(values)]
    if len(set(map(repr, parsed))) != len(parsed):
        raise AblationError(f"--sweep {spec!r}: a value is repeated")
    return key, parsed


def _label(key: str, value, position: int) -> str:
    text = value if isinstance(value, str) else (
        str(value).lower() if isinstance(value, (bool, int, float)) else f"v{position}")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or f"v{position}"
    return f"{key.rpartition('.')[2]}={text}"


def grid(config: ml_collections.ConfigDict, sweeps: list[str]) -> dict[str, dict]:
    """{point label: {field: value}}, the product of the sweeps, in their order."""
    parsed = [parse_sweep(config, s) for s in sweeps]
    keys = [k for k, _ in parsed]
    if len(set(keys)) != len(keys):
        raise AblationError(f"--sweep: a field is swept twice ({keys})")
    points = {}
    for combination in itertools.product(*[list(enumerate(v)) for _, v in parsed]):
        label = "__".join(_label(k, v, i) for k, (i, v) in zip(keys, combination, strict=True))
        points[label] = {k: v for k, (_, v) in zip(keys, combination, strict=True)}
    return points


def _resolved(config_spec: str, sets: dict, overrides: dict) -> ml_collections.ConfigDict:
    values = dict(sets)
    presets = {}
    for key, value in overrides.items():
        if key == "frozen_patterns" and isinstance(value, str):
            presets[key] = value
        else:
            values[key] = value
    config = train.load_config_file(config_spec, **values)
    for key, name in presets.items():
        config[key] = frozen_preset(name, config)
    return config


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def run(config_spec: str, sweeps: list[str], workdir: str, sets: dict | None = None,
        progress: bool = True) -> dict:
    """Train and evaluate every point; returns what ablation.json holds."""
    from tqdm.auto import tqdm

    from vtfpar_jax import evaluate

    sets = dict(sets or {})
    base = train.load_config_file(config_spec, **sets)
    points = grid(base, sweeps)
    for overrides in points.values():   # every point's config must load before any trains
        _resolved(config_spec, sets, overrides)
    path = os.path.join(workdir, "ablation.json")
    identity = {"config": config_spec, "sets": {k: _jsonable(v) for k, v in sets.items()}}
    done = read_to_resume(path, identity, AblationError, "--workdir").get("points", {})
    report = {**identity, "sweeps": list(sweeps), "points": done}
    todo = [label for label in points if done.get(label, {}).get("results") is None]
    bar = tqdm(todo, desc="ablation", unit="point", disable=not progress)
    for label in bar:
        bar.set_postfix_str(label)
        overrides = points[label]
        config = _resolved(config_spec, sets, overrides)
        results = train.train_and_evaluate(config, os.path.join(workdir, label))
        if "preempted_at" in results:
            logging.warning("point %s stopped at step %d; rerun the same command to resume",
                            label, results["preempted_at"])
            report["stopped"] = label
            return report
        done[label] = {"overrides": {k: _jsonable(v) for k, v in overrides.items()},
                       "frozen_patterns": list(config.frozen_patterns),
                       "results": evaluate.headline(results)}
        write_json(path, {k: v for k, v in report.items() if k != "table"})
    report["order"] = list(points)
    report["table"] = format_table(report)
    write_json(path, {k: v for k, v in report.items() if k != "table"})
    write_text(os.path.join(workdir, "ablation.md"), report["table"])
    save_chart(report, os.path.join(workdir, "ablation.png"))
    return report


def format_table(report: dict) -> str:
    """A markdown table: one row per point of this grid, its values and headline metrics."""
    labels = report["order"]
    fields = list(report["points"][labels[0]]["overrides"])
    header = ["point", *fields, *(title for _, title in METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        point = report["points"][label]
        values = [str(point["overrides"][k]) for k in fields]
        metrics = [f"{100 * point['results'][m]:.2f}" for m, _ in METRICS]
        lines.append("| " + " | ".join([label, *values, *metrics]) + " |")
    sets = ", ".join(f"{k}={v}" for k, v in report["sets"].items()) or "none"
    return (f"Ablation of {report['config']} (also set: {sets}); metrics in %, on the test "
            "split at the end of training.\n\n" + "\n".join(lines) + "\n")


def save_chart(report: dict, path: str) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = report["order"]
    figure = Figure(figsize=(max(6.0, 1.2 + 1.6 * len(labels)), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    width = 0.8 / len(METRICS)
    positions = np.arange(len(labels))
    for i, (metric, title) in enumerate(METRICS):
        values = [100 * report["points"][label]["results"][metric] for label in labels]
        bars = ax.bar(positions + (i - (len(METRICS) - 1) / 2) * width, values, width,
                      label=title)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(positions, [label.replace("__", "\n") for label in labels], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 115)   # room for the legend above the bars
    ax.legend(fontsize=8, ncols=len(METRICS), loc="upper center")
    ax.set_title(f"ablation of {report['config']}")
    save_figure(figure, path, dpi=100)


def _parse_sets(items: list[str]) -> dict:
    """--set key=value (typed when the config is loaded)."""
    sets = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise AblationError(f"--set {item!r}: expected 'field=value'")
        sets[key.strip()] = value
    return sets


def _typed_sets(config_spec: str, raw: dict) -> dict:
    base = train.load_config_file(config_spec)
    typed = {}
    for key, text in raw.items():
        value = parse_value(base, key, text)
        if key == "frozen_patterns" and isinstance(value, str):
            value = frozen_preset(value, base)
        typed[key] = value
    return typed


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].split(":")[0])
    parser.add_argument("--config", required=True, help="configs/<name>.py[:args]")
    parser.add_argument("--sweep", action="append", required=True,
                        help="field=value,value,... (repeat for a grid)")
    parser.add_argument("--set", action="append", default=[], dest="sets",
                        help="field=value for every point (repeatable)")
    parser.add_argument("--workdir", required=True)
    cli_errors.add_verbose(parser)
    args = parser.parse_args(argv)
    return cli_errors.run(lambda: _ablate(args), args.verbose)


def _ablate(args) -> dict:
    from vtfpar_jax import out_folder
    out_folder.check_writable_folder(args.workdir, "--workdir")
    sets = _typed_sets(args.config, _parse_sets(args.sets))
    cli_errors.on_stop(f"the points finished are kept in {args.workdir}/ablation.json, and "
                       "the one in training resumes from its newest checkpoint; rerun the "
                       "same command to go on")
    report = run(args.config, args.sweep, args.workdir, sets)
    if "stopped" in report:
        print(f"stopped during point {report['stopped']}; rerun the same command to resume")
        return report
    print(report["table"], end="")
    print(f"written to {os.path.join(args.workdir, 'ablation.md')} and ablation.png")
    return report


if __name__ == "__main__":
    main()
