"""What a run runs, as one hash, and the fields that differ when two runs do not match.

A training run, an ablation point and a robustness run are each identified by
an *identity*: a JSON-able dict of everything that decides their numbers (the
fully resolved config, the attribute set, the data splits and, for robustness,
the corruption definitions). `fingerprint(identity)` is a short hash of it. The
identity is stored beside the hash, so that a resume that finds another
fingerprint can name each field that differs, with both values (`describe`).

A training work dir keeps the config it started with (config.json, written
once). A restart may change only `RUN_CONTROL_FIELDS`: how long the run goes
and how it is watched and checkpointed, not what a step computes. Each change
is appended to config_changes.jsonl with the step it applies from, and the
config in force is config.json with those changes replayed (`current_config`).
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import sys
from typing import Any

import ml_collections

from vtfpar_jax.errors import ConfigError

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


class ConfigChangeError(ConfigError):
    """A restart whose config differs from the work dir's in a field that shapes the run."""


def jsonable(value: Any) -> Any:
    """`value` as JSON stores it: ConfigDicts and dicts as dicts, tuples as lists."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    return value


def fingerprint(identity: dict) -> str:
    """A 16-hex-digit hash of `identity` (key order does not matter)."""
    text = json.dumps(jsonable(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def short_hash(value: Any) -> str:
    """6 hex digits naming a value (for labels that cannot spell it out)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:6]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'optimizer.lr': 1e-3, ...}: every leaf of nested dicts by its dotted name."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def differences(old: dict, new: dict, shared_only: bool = False) -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for each leaf that differs, in sorted order.

    `shared_only` compares only the fields both have (a record written before a
    field existed says nothing about it); otherwise a missing one is `ABSENT`.
    """
    a, b = flatten(jsonable(old)), flatten(jsonable(new))
    keys = sorted(set(a) & set(b) if shared_only else set(a) | set(b))
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in keys
            if a.get(k, ABSENT) != b.get(k, ABSENT)]


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    """'optimizer.lr 0.001 there, 0.002 now; ...' (the first `limit`, then a count)."""
    parts = [f"{k} {old!r} there, {new!r} now" for k, old, new in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more")
    return "; ".join(parts)


def attribute_set_name(dataset: str) -> str | None:
    """The attribute set of a TFDS builder name, from its class (nothing is read)."""
    import input_pipeline
    return getattr(input_pipeline.builder_class(dataset.partition("/")[0]), "ATTRIBUTE_SET",
                   None)


def run_identity(config: ml_collections.ConfigDict, splits: dict | None = None) -> dict:
    """What a training run (or an ablation point) runs: config, attribute set, splits."""
    return {"config": jsonable(config), "attribute_set": attribute_set_name(config.dataset),
            "splits": dict(splits or TRAINING_SPLITS)}


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


def current_config(workdir: str, stored: dict) -> dict:
    """The config in force in `workdir`: config.json's `stored` config with the
    changes of config_changes.jsonl applied, in order."""
    path = os.path.join(workdir, CHANGES_FILE)
    if not os.path.exists(path):
        return stored
    config = json.loads(json.dumps(stored))   # a deep copy
    with open(path) as f:
        for line in filter(str.strip, f):
            for key, change in json.loads(line)["changes"].items():
                *parents, leaf = key.split(".")
                node = config
                for name in parents:
                    node = node.setdefault(name, {})
                node[leaf] = change["new"]
    return config


def restart_changes(workdir: str, config: ml_collections.ConfigDict,
                    allow_change: bool = False) -> list[tuple[str, Any, Any]]:
    """The fields `config` changes against the run in `workdir` ([] for a new run).

    A change outside RUN_CONTROL_FIELDS is refused, naming each such field,
    unless `allow_change`. Only fields both configs have are compared, so a work
    dir written before a field existed still resumes.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            stored = json.load(f)["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigChangeError(f"{path}: cannot read the config this run started with ({e}); "
                                "use another work dir") from None
    diffs = differences(current_config(workdir, stored), jsonable(config), shared_only=True)
    refused = [d for d in diffs if d[0] not in RUN_CONTROL_FIELDS]
    if refused and not allow_change:
        names = ", ".join(k for k, _, _ in refused)
        raise ConfigChangeError(
            f"{workdir} holds a run with another config ({describe(refused)}); a restart may "
            f"change only {', '.join(RUN_CONTROL_FIELDS)}. Use another work dir, or allow "
            f"the change of {names} explicitly (train: --allow_config_change); it is then "
            f"recorded in {CHANGES_FILE}")
    return diffs


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
