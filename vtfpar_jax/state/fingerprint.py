"""What a run runs, as one hash, and the fields that differ when two runs do not match.

A training run, an ablation point and a robustness run are each identified by an
*identity*: a JSON-able dict of everything that decides their numbers (the fully resolved
config, the attribute set, the data splits and, for robustness, the corruption
definitions). `fingerprint(identity)` is a short hash of it, stored beside the identity, so
that a resume that finds another fingerprint can name each field that differs, with both
values (`describe`).

A training work dir keeps the config it started with (config.json, written once). A restart
may change only `RUN_CONTROL_FIELDS`, each change appended to config_changes.jsonl with the
step it applies from (`current_config` replays them); it resumes only under the run's
random-stream scheme and the old value of each field added since (`ADDED_FIELDS`), and reads
a field renamed since by its name now (docs/experiments.md, "Restarting a training work dir").
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import sys
from typing import Any, NamedTuple

import ml_collections
from flax import traverse_util

from vtfpar_jax.errors import ConfigError
from vtfpar_jax.models import rng
from vtfpar_jax.state import old_names

# Fields a restarted training run may change. They decide when the run ends, where
# the data is read from and how often it logs, evaluates and checkpoints; none
# changes what one step computes from a batch. num_epochs also stretches the
# published per-epoch schedule of the steps still to run, hence the record.
RUN_CONTROL_FIELDS = ("num_epochs", "max_steps", "data_dir", "log_every_steps",
                      "eval_every_epochs", "checkpoint_every_steps", "keep_checkpoints",
                      "keep_every_steps", "checkpoint_retries")
# The splits a training run learns from and is scored on (vtfpar_jax.training.train).
TRAINING_SPLITS = {"train": "train", "evaluation": "test"}
CHANGES_FILE = "config_changes.jsonl"
ABSENT = "<absent>"

# Each field added to the config since config.json was first written (a7ca9d4), with the
# value that behaves as runs did before it existed (the commit that added it in the
# comment). NO_EQUIVALENT: no value does, so a work dir without the field never resumes.
NO_EQUIVALENT = ABSENT
ADDED_FIELDS = {
    "checkpoint_retries": 0,           # cf38212: a failed checkpoint write stopped the run
    "model.remat": "none",             # 607af18: nothing rematerialised
    "input.pad_pixels": 10,            # aa50662: the published padding, then fixed
    "model.attention": "xla",          # 1db70a4: XLA's attention, the only one then
    "input.frame_size": NO_EQUIVALENT,  # 17eea69: frames were resized on the host then
    "backbone.name": "clip",           # 2d1f5f4: CLIP, the only backbone then
    "model.head": "attribute",         # 499e09f: one logit per attribute, the only head then
}
# config.json gained its fingerprint (be913c5) on the commit after the named random streams
# (a226c52), and `random_streams` later still: a config.json with a fingerprint and no
# scheme was written under the first named scheme; one with neither, before them.
UNRECORDED_SCHEME = "named-streams/1"


class ConfigChangeError(ConfigError):
    """A restart whose config differs from the work dir's in a field that shapes the run."""


def jsonable(value: Any) -> Any:
    """`value` as JSON stores it: ConfigDicts and dicts as dicts, tuples as lists."""
    return json.loads(json.dumps(value, default=ml_collections.ConfigDict.to_dict))


def fingerprint(identity: dict) -> str:
    """A 16-hex-digit hash of `identity` (key order does not matter)."""
    text = json.dumps(jsonable(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def short_hash(value: Any) -> str:
    """6 hex digits naming a value (for labels that cannot spell it out)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:6]


def flatten(tree: dict) -> dict[str, Any]:
    """{'optimizer.lr': 1e-3, ...}: every leaf of nested dicts by its dotted name. An empty
    dict is a leaf (flax drops it), so that a group emptied or filled counts as a change."""
    return traverse_util.flatten_dict(tree, sep=".", is_leaf=lambda _, node: not node)


def differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for each leaf that differs, in sorted order;
    a field one of them lacks is `ABSENT` there."""
    a, b = flatten(jsonable(old)), flatten(jsonable(new))
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in keys
            if a.get(k, ABSENT) != b.get(k, ABSENT)]


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    """'optimizer.lr 0.001 there, 0.002 now; ...' (the first `limit`, then a count)."""
    parts = [f"{k} {old!r} there, {new!r} now" for k, old, new in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more")
    return "; ".join(parts)


def run_identity(config: ml_collections.ConfigDict, splits: dict | None = None) -> dict:
    """What a training run (or an ablation point) runs: config, attribute set (from the TFDS
    builder's class: nothing is read), splits and the random-stream scheme."""
    import input_pipeline
    builder = input_pipeline.builder_class(config.dataset.partition("/")[0])
    return {"config": jsonable(config), "attribute_set": getattr(builder, "ATTRIBUTE_SET", None),
            "splits": dict(splits or TRAINING_SPLITS), "random_streams": rng.SCHEME}


def identity_as_recorded(identity: dict) -> dict:
    """A stored run identity with what it leaves unsaid made explicit: the random streams
    of an identity written before they were recorded, and the old value of each field
    added to the config since (`ADDED_FIELDS`)."""
    return {"random_streams": UNRECORDED_SCHEME, **identity,
            "config": with_added_fields(identity["config"])[0]}


def corruption_definition(corruption) -> dict:
    """A corruption as robustness results depend on it.

    `unit` and `levels` are its own; `function` names its `apply`, and `source`
    hashes the whole module that defines it. A corruption's function calls
    helpers shared with other corruptions, so no narrower text covers all it
    runs; any edit of that module (a comment too) therefore counts as a change.
    That is conservative by design: a stale cell is never reused, at worst a
    cell is recomputed.
    """
    apply = corruption.apply
    module = sys.modules.get(apply.__module__)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):   # a module with no source file (built in the interpreter)
        source = ""
    code = getattr(apply, "__code__", None)
    return {"unit": corruption.unit, "levels": list(corruption.levels),
            "function": f"{apply.__module__}.{getattr(apply, '__qualname__', repr(apply))}",
            "source": hashlib.sha256(
                source.encode() + (code.co_code if code is not None else b"")).hexdigest()[:16]}


# ----------------------------------------------------- a training work dir's config


def current_config(stored: dict, changes: list[dict]) -> dict:
    """The config in force: config.json's `stored` config with `changes`, the entries of
    config_changes.jsonl (`read_changes`), applied in order."""
    config = json.loads(json.dumps(stored))   # a deep copy
    for entry in changes:
        for key, change in entry["changes"].items():
            _set(config, old_names.field(key), change["new"])
    return config


def read_changes(workdir: str) -> list[dict]:
    """The entries of `workdir`'s config_changes.jsonl, in order ([] without one)."""
    path = os.path.join(workdir, CHANGES_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in filter(str.strip, f)]


def with_added_fields(config: dict) -> tuple[dict, list[str]]:
    """A stored config as a run then ran it: each renamed field and value by its name now
    (`old_names.config`), each field of `ADDED_FIELDS` it lacks set to its old value
    (`NO_EQUIVALENT` when none behaves so); and the fields that were filled in."""
    config = old_names.config(config)   # a deep copy
    stored, filled = flatten(config), []
    for key, old in ADDED_FIELDS.items():
        if key not in stored:
            _set(config, key, old)
            filled.append(key)
    return config, filled


def _set(config: dict, key: str, value: Any) -> None:
    """config[a][b] = value for key 'a.b' (the groups made where missing)."""
    *parents, leaf = key.split(".")
    for name in parents:
        config = config.setdefault(name, {})
    config[leaf] = value


class StartedRun(NamedTuple):
    """What a work dir's run started with: `config` (config.json's, the fields added since
    filled in by `with_added_fields`), the names of those fields (`added`), the
    entries of config_changes.jsonl (`changes`) and the SHA-256 of its backbone/ files
    (`backbone_files`; None in a work dir written before they were recorded)."""
    config: dict
    added: list[str]
    changes: list[dict]
    backbone_files: dict[str, str] | None = None


def started_run(workdir: str) -> StartedRun | None:
    """The run `workdir` holds, or None for a new work dir. A run of another random-stream
    scheme than this version's is refused."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            run = json.load(f)
        config, added = with_added_fields(run["config"])
        changes = read_changes(workdir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigChangeError(f"{path}: cannot read the config this run started with ({e}); "
                                "use another work dir") from None
    _check_random_streams(path, run)
    return StartedRun(config, added, changes, run.get("backbone_files"))


def _check_random_streams(path: str, run: dict) -> None:
    scheme = run.get("random_streams", UNRECORDED_SCHEME if "fingerprint" in run else None)
    if scheme == rng.SCHEME:
        return
    then = ("was written before the named random streams" if scheme is None
            else f"records random streams {scheme!r}")
    raise ConfigChangeError(f"{path} {then}; this version draws {rng.SCHEME!r}, so the run "
                            "would resume with another data order and initialisation. Use "
                            "another work dir, or resume it with the version that started it")


def restart_changes(workdir: str, started: StartedRun | None, config: ml_collections.ConfigDict,
                    allow_change: bool = False) -> list[tuple[str, Any, Any]]:
    """The fields `config` changes against `started`, `started_run(workdir)` ([] if None).

    A change outside RUN_CONTROL_FIELDS is refused, naming each such field,
    unless `allow_change`. A field added to the config since the work dir was
    written counts as its old value (`ADDED_FIELDS`), so another value of it is
    a change; a run of another random-stream scheme was refused by `started_run`.
    """
    if started is None:
        return []
    diffs = differences(current_config(started.config, started.changes), jsonable(config))
    refused = [d for d in diffs if d[0] not in RUN_CONTROL_FIELDS]
    if refused and not allow_change:
        names = ", ".join(k for k, _, _ in refused)
        raise ConfigChangeError(
            f"{workdir} holds a run with another config ({describe(refused)})"
            f"{predates(refused, started.added)}; a restart may change only "
            f"{', '.join(RUN_CONTROL_FIELDS)}. Use another work dir, or allow the change of "
            f"{names} explicitly (train: --allow_config_change); it is then recorded in "
            f"{CHANGES_FILE}")
    return diffs


def predates(diffs: list[tuple[str, Any, Any]], added: list[str]) -> str:
    """What a refusal adds about the fields of `diffs` that the run predates: '' if none."""
    notes = []
    for key, old, _ in diffs:
        if key in added:
            notes.append(f"{key} came after that run started, and no value of it behaves as "
                         "the run did" if old == NO_EQUIVALENT else
                         f"{key} came after that run started, which ran as {key}={old!r}")
    return f" ({'; '.join(notes)})" if notes else ""


def record_changes(workdir: str, diffs: list[tuple[str, Any, Any]], step: int) -> None:
    """Append one line to config_changes.jsonl: the changes and the step they apply from.

    A change outside RUN_CONTROL_FIELDS got here only through allow_change; the
    line says so.
    """
    explicit = any(k not in RUN_CONTROL_FIELDS for k, _, _ in diffs)
    entry = {"step": step, "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "changes": {k: {"old": old, "new": new} for k, old, new in diffs},
        "allowed_by": "allow_config_change" if explicit else None}
    with open(os.path.join(workdir, CHANGES_FILE), "a") as f:
        f.write(json.dumps(entry) + "\n")


def check_same_run(path: str, previous: dict, identity: dict, error: type[Exception],
                   elsewhere: str) -> None:
    """Refuse to resume into `path` if what `previous` records differs from `identity`,
    naming each field that differs (a key the file lacks: it was written before
    that key was recorded, so nothing says it matches)."""
    missing = [(k, ABSENT, "recorded now") for k in identity if k not in previous]
    diffs = missing + differences({k: previous[k] for k in identity if k in previous},
                                  {k: identity[k] for k in identity if k in previous})
    if diffs:
        raise error(f"{path} holds another run ({describe(diffs)}); use another {elsewhere}, "
                    "or move it away to start over")
