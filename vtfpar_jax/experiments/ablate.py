"""Ablations: `vtfpar ablate --config configs/X.py[:arg]
--sweep 'model.spatial_aggregation=mean,max,attention' [--sweep ...] [--set key=value ...]
--workdir DIR`.

Trains and evaluates every point of the grid (the product of the sweeps) with
the trainer and evaluator of `vtfpar_jax.training.train`, each point in its own work dir
DIR/<point>. Writes DIR/ablation.json (every point's overrides and headline
metrics), DIR/ablation.md (a table) and DIR/ablation.png (a bar chart).

Each point is identified by its fully resolved config (the file, then --set, then
its sweep values, then a frozen_patterns preset), the attribute set and the data
splits, hashed into a fingerprint (vtfpar_jax.state.fingerprint). Rerunning into
the same work dir resumes: a finished point is kept only if its fingerprint is the
same, a point stopped halfway resumes only if its folder ran this very config, and
new sweep values add points. Every point's config is built and checked before the
first point trains. docs/experiments.md, "Ablations", gives the rules and messages.

Values are typed like the config field they set (true/false, numbers, strings;
tuples as Python literals, e.g. --sweep "frozen_patterns=('backbone/.*',),()").
`frozen_patterns` also takes these names, which make "side tuning against partial
or full fine-tuning" one command; they are resolved on each point's final config,
with the backbone's own split between vision tower and the rest (CLIP: text tower
and logit scale; SigLIP: text tower, logit scale and bias):
  side_tuning   all of the backbone frozen (the published method);
  last_block    the backbone frozen but for the deepest vision block the side nets read;
  full_vision   the whole vision tower trained (the text features stay fixed).
"""

from __future__ import annotations

import ast
import itertools
import os
import re

import ml_collections

from vtfpar_jax import cli_errors
from vtfpar_jax.errors import UserError, nearest
from vtfpar_jax.outputs import stop_signals
from vtfpar_jax.outputs.files import read_to_resume, save_figure, write_json, write_text
from vtfpar_jax.state import build, fingerprint
from vtfpar_jax.training import config_file, train

METRICS = (("group_f1", "group F1"), ("mA", "mA"), ("chen_f1", "Chen F1"),
           ("instance_f1", "instance F1"))
FROZEN_PRESETS = ("side_tuning", "last_block", "full_vision")


class AblationError(UserError, ValueError):
    """A work dir holding another ablation, or a sweep that cannot be run."""


def frozen_preset(name: str, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The frozen_patterns a preset name stands for, for this config's backbone and maps
    (the config must be final: the preset reads its backbone and interaction maps)."""
    from vtfpar_jax.models.side_nets import parse_interaction_map
    try:
        backbone = build.backbone(config).towers
    except UserError as e:
        raise AblationError(f"frozen_patterns={name}: {e}") from None
    if name == "side_tuning":
        return ("backbone/.*",)
    if name == "full_vision":
        return backbone.frozen_but_vision()
    if name == "last_block":
        m = config.model
        maps = ((m.spatial_map,) if m.use_spatial else ()) + (
            (m.temporal_map,) if m.use_temporal else ())
        try:
            deepest = max(s for spec in maps for s, _ in parse_interaction_map(spec))
        except ValueError as e:
            raise AblationError(f"frozen_patterns=last_block: {e}") from None
        if deepest == 0:
            raise AblationError(f"frozen_patterns=last_block: the side nets read only "
                                f"{backbone.display_name} feature 0 (the embeddings), no "
                                "block; fine-tune with full_vision or read a deeper feature")
        # Feature s is the output of block s, which is the vision tower's layers_{s-1}.
        return (*backbone.frozen_but_vision(), f"backbone/vision/(?!layers_{deepest - 1}/).*")
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
    fields = config_file.config_fields(config)
    if key not in fields:
        raise AblationError(f"{key!r}: the config has no such field{nearest(key, fields)}")
    kind = type(config[key])   # a ConfigDict reads a dotted key field by field
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


MAX_LABEL_TEXT = 40


def _label(key: str, value) -> str:
    """'field=value' spelled from the value, never from its place in the sweep. A value
    that cannot be spelled as it is (a tuple, punctuation, a long text) keeps a
    readable part and gets a short hash of the whole value."""
    if isinstance(value, (tuple, list)):
        text, exact = "+".join(map(str, value)) or "empty", False
    else:
        text = str(value).lower() if isinstance(value, (bool, int, float)) else str(value)
        exact = True
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:MAX_LABEL_TEXT]
    if not exact or readable != text:
        readable = f"{readable or 'value'}-{fingerprint.short_hash(value)}"
    return f"{key.rpartition('.')[2]}={readable}"


def grid(config: ml_collections.ConfigDict, sweeps: list[str]) -> dict[str, dict]:
    """{point label: {field: value}}, the product of the sweeps, in their order."""
    parsed = [parse_sweep(config, s) for s in sweeps]
    keys = [k for k, _ in parsed]
    if len(set(keys)) != len(keys):
        raise AblationError(f"--sweep: a field is swept twice ({keys})")
    for key, values in parsed:
        labels = [_label(key, v) for v in values]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise AblationError(f"--sweep {key}: values {values[labels.index(label)]!r} "
                                    f"and {values[i]!r} would share the label {label!r}")
    points = {}
    for combination in itertools.product(*[v for _, v in parsed]):
        label = "__".join(_label(k, v) for k, v in zip(keys, combination, strict=True))
        points[label] = dict(zip(keys, combination, strict=True))
    return points


def _is_preset(key: str, value) -> bool:
    return key == "frozen_patterns" and isinstance(value, str)


def _resolved(config_spec: str, sets: dict, overrides: dict) -> ml_collections.ConfigDict:
    """A point's config: the file, then `sets`, then its sweep values; a frozen_patterns
    preset last, on that final config (it depends on the backbone and the maps)."""
    values = {**sets, **overrides}
    preset = values.pop("frozen_patterns") if _is_preset(
        "frozen_patterns", values.get("frozen_patterns")) else None
    config = config_file.load_config_file(config_spec, **values)
    if preset is not None:
        config.frozen_patterns = frozen_preset(preset, config)
    return config


def checked_points(config_spec: str, sweeps: list[str], sets: dict
                   ) -> dict[str, tuple[dict, ml_collections.ConfigDict]]:
    """{label: (sweep values, final config)} for every point, each config built and
    checked as its run would check it, so a bad value is refused before any work."""
    base = config_file.load_config_file(config_spec,
                                        **{k: v for k, v in sets.items() if not _is_preset(k, v)})
    points = grid(base, sweeps)
    both = sorted(set(sets) & {k for overrides in points.values() for k in overrides})
    if both:
        raise AblationError(f"{', '.join(both)}: given to both --set and --sweep; keep one")
    checked = {}
    for label, overrides in points.items():
        try:
            config = _resolved(config_spec, sets, overrides)
            build.check_config(config)
        except UserError as e:
            # A preset's own message starts with the point's label: say it once.
            message = str(e) if str(e).startswith(label) else f"{label}: {e}"
            raise AblationError(f"point {message}") from None
        checked[label] = (overrides, config)
    return checked


def _start_over(workdir: str) -> str:
    """The advice of a refusal: where a fresh run goes, or what to move (all of it: a point
    folder left behind would resume)."""
    return (f"use another --workdir, or move {workdir} away to start over (ablation.json and "
            "the point folders in it)")


def _check_finished(workdir: str, label: str, stored: dict, identity: dict) -> None:
    """Refuse a finished point of ablation.json that ran something else than `identity`."""
    path = os.path.join(workdir, "ablation.json")
    if "identity" not in stored:
        raise AblationError(f"{path}: point {label} records no fingerprint (written by an "
                            "older version), so nothing says it ran this config; "
                            f"{_start_over(workdir)}")
    diffs = fingerprint.differences(fingerprint.identity_as_recorded(stored["identity"]),
                                    identity)
    if diffs:
        raise AblationError(f"{path}: point {label} was run with another config "
                            f"({fingerprint.describe(diffs)}); {_start_over(workdir)}")


def _check_unfinished(workdir: str, label: str, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a point stopped halfway unless its folder ran exactly this point:
    the config it started with is the point's, and no change was recorded since (a new
    num_epochs, say, would stretch its schedule mid-run, and the point would then be
    recorded as if it ran clean)."""
    point = os.path.join(workdir, label)
    again = f"move {point} away to start this point over, or {_start_over(workdir)}"
    try:
        started = fingerprint.started_run(point)
    except fingerprint.ConfigChangeError as e:
        raise AblationError(f"point {label}: {e}") from None
    if started is None:
        return
    diffs = fingerprint.differences(started.config, fingerprint.jsonable(config))
    if diffs:
        raise AblationError(
            f"point {label} stopped halfway in {point} with another config "
            f"({fingerprint.describe(diffs)}){fingerprint.predates(diffs, started.added)}; an "
            f"unfinished point resumes only with the config it started with: {again}")
    if started.changes:
        changed = "; ".join(f"{key} {change['old']!r} -> {change['new']!r} from step "
                            f"{entry['step']}" for entry in started.changes
                            for key, change in entry["changes"].items())
        raise AblationError(f"point {label} in {point} changed its config mid-run "
                            f"({changed}; {fingerprint.CHANGES_FILE}), so it would not be the "
                            f"point it is recorded as: {again}")


def run(config_spec: str, sweeps: list[str], workdir: str, sets: dict | None = None,
        progress: bool = True) -> dict:
    """Train and evaluate every point; returns what ablation.json holds."""
    from tqdm.auto import tqdm

    from vtfpar_jax.evaluation import evaluate

    sets = dict(sets or {})
    points = checked_points(config_spec, sweeps, sets)
    identities = {label: fingerprint.run_identity(config)
                  for label, (_, config) in points.items()}
    path = os.path.join(workdir, "ablation.json")
    # The whole file is not compared: each finished point is, by its fingerprint.
    done = read_to_resume(path, AblationError, "--workdir").get("points", {})
    for label, identity in identities.items():
        if done.get(label, {}).get("results") is not None:
            _check_finished(workdir, label, done[label], identity)
    report = {"config": config_spec, "sets": fingerprint.jsonable(sets),
              "sweeps": list(sweeps), "points": done}
    todo = [label for label in points if done.get(label, {}).get("results") is None]
    for label in todo:
        _check_unfinished(workdir, label, points[label][1])
    if len(todo) < len(points):
        print(f"{path}: {len(points) - len(todo)} of {len(points)} points already done, kept")
    bar = tqdm(todo, desc="ablation", unit="point", disable=not progress)
    for label in bar:
        bar.set_postfix_str(label)
        overrides, config = points[label]
        results = train.train_and_evaluate(config, os.path.join(workdir, label))
        if "preempted_at" in results:
            report["stopped"] = {"point": label, "step": results["preempted_at"]}
            return report
        done[label] = {"overrides": fingerprint.jsonable(overrides),
                       "frozen_patterns": list(config.frozen_patterns),
                       "fingerprint": fingerprint.fingerprint(identities[label]),
                       "identity": identities[label],
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
    from matplotlib.figure import Figure  # not pyplot: savefig renders with Agg

    labels = report["order"]
    figure = Figure(figsize=(max(6.0, 1.2 + 1.6 * len(labels)), 4.5), layout="constrained")
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
    # The file's name, not its path: from an install that is a site-packages path.
    config_file, sep, argument = report["config"].partition(":")
    ax.set_title(f"ablation of {os.path.basename(config_file)}{sep}{argument}")
    save_figure(figure, path, dpi=100)


def _typed_sets(config_spec: str, raw: dict) -> dict:
    """--set values typed like their fields; a frozen_patterns preset stays a name, resolved
    on each point's final config."""
    base = config_file.load_config_file(config_spec)
    return {key: parse_value(base, key, text) for key, text in raw.items()}


def points_kept(workdir: str, training: str | None = None) -> str:
    """What a stop leaves in `workdir`, asked at the stop: the finished points in
    ablation.json, and the point in training (`training`, else the newest point folder)."""
    path = os.path.join(workdir, "ablation.json")
    done = read_to_resume(path, AblationError, "--workdir").get("points", {})
    finished = [label for label, point in done.items() if point.get("results") is not None]
    kept = (f"the {len(finished)} finished point(s) are kept in {path}" if finished
            else "no point had finished")
    return f"{kept}; rerun the same command to go on" + (
        f" (point {training} resumes from its checkpoint)" if training else
        ", each unfinished point from its newest checkpoint, if it wrote one")


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="vtfpar ablate",
                                     description=__doc__.splitlines()[0].split(":")[0])
    parser.add_argument("--config", required=True, help="configs/<name>.py[:args]")
    parser.add_argument("--sweep", action="append", required=True,
                        help="field=value,value,... (repeat for a grid)")
    parser.add_argument("--set", action="append", default=[], dest="sets",
                        help="field=value for every point (repeatable)")
    parser.add_argument("--workdir", required=True)
    return cli_errors.parse_and_run(parser, argv, _ablate)


def _ablate(args) -> dict:
    from vtfpar_jax.outputs import out_folder
    out_folder.check_writable_folder(args.workdir, "--workdir")
    if bad := [item for item in args.sets if "=" not in item]:
        raise AblationError(f"--set {bad[0]!r}: expected 'field=value'")
    sets = _typed_sets(args.config, {key.strip(): value for key, _, value in (
        item.partition("=") for item in args.sets)})
    stop_signals.on_stop(lambda: points_kept(args.workdir))
    with out_folder.lock(args.workdir, "--workdir"):   # two runs would rewrite ablation.json
        report = run(args.config, args.sweep, args.workdir, sets)
    if "stopped" in report:   # preempted (SIGTERM): exit 143, as training does
        stopped = report["stopped"]
        stop_signals.on_stop(f"preempted at step {stopped['step']} of point {stopped['point']}, "
                           f"its checkpoint saved; {points_kept(args.workdir, stopped['point'])}")
        raise stop_signals.Terminated()
    print(report["table"], end="")
    print(f"written to {os.path.join(args.workdir, 'ablation.md')} and ablation.png")
    return report
