"""A resumed run is the run it claims to be: an unfinished ablation point resumes only with
the config it started with, a work dir only under its own random streams, and a restart
runs the backbone its backbone/ folder holds rather than one drawn or fetched again."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from smoke_runs import SMOKE, smoke_config

from vtfpar_jax.experiments import ablate
from vtfpar_jax.models import rng, towers
from vtfpar_jax.state import build, fingerprint, model_dir
from vtfpar_jax.training import config_file, train

SWEEP = "model.temporal_aggregation=mean"
POINT = "temporal_aggregation=mean"


class Stopped(Exception):
    """Stands for the run being stopped (preemption, Ctrl-C) halfway through a point."""


def _write_started_run(point_dir: str, config) -> None:
    """config.json as a run writes it when it starts."""
    os.makedirs(point_dir, exist_ok=True)
    with open(os.path.join(point_dir, "config.json"), "w") as f:
        json.dump({"config": config.to_dict(), "random_streams": rng.SCHEME,
                   "fingerprint": fingerprint.fingerprint(fingerprint.run_identity(config))},
                  f, default=list)


@pytest.fixture
def stopped_point(tmp_path, monkeypatch):
    """An ablation of one point whose run started (config.json written) and was stopped;
    then training is faked: the list of point folders trained."""
    out = tmp_path / "out"

    def start_then_stop(config, point_dir):
        _write_started_run(point_dir, config)
        raise Stopped

    monkeypatch.setattr(train, "train_and_evaluate", start_then_stop)
    with pytest.raises(Stopped):
        ablate.run(SMOKE, [SWEEP], str(out), progress=False)
    trained = []

    def fake(config, point_dir):
        trained.append(os.path.basename(point_dir))
        return {"group": {"acc": 0.5, "prec": 0.5, "rec": 0.5, "f1": 0.5},
                "par": {"ma": 0.5, "f1": 0.5}, "chen": {"acc": 0.5, "f1": 0.5}}

    monkeypatch.setattr(train, "train_and_evaluate", fake)
    return out, trained


def test_an_unfinished_point_resumes_only_with_the_config_it_started_with(stopped_point):
    out, trained = stopped_point
    point = out / POINT
    with pytest.raises(ablate.AblationError) as refused:
        ablate.run(SMOKE, [SWEEP], str(out), {"num_epochs": 5}, progress=False)
    assert str(refused.value) == (
        f"point {POINT} stopped halfway in {point} with another config (num_epochs 2 there, "
        "5 now); an unfinished point resumes only with the config it started with: move "
        f"{point} away to start this point over, or use another --workdir, or move {out} "
        "away to start over (ablation.json and the point folders in it)")
    # A change its run recorded (an earlier version let num_epochs through) is refused too.
    fingerprint.record_changes(str(point), [("num_epochs", 2, 5)], step=3)
    with pytest.raises(ablate.AblationError, match=r"changed its config mid-run \(num_epochs "
                                                   r"2 -> 5 from step 3; config_changes"):
        ablate.run(SMOKE, [SWEEP], str(out), progress=False)
    assert trained == []
    os.remove(point / fingerprint.CHANGES_FILE)
    report = ablate.run(SMOKE, [SWEEP], str(out), progress=False)
    assert trained == [POINT] and report["points"][POINT]["results"]["group_f1"] == 0.5


def test_an_unfinished_point_of_other_random_streams_is_refused(stopped_point):
    out, trained = stopped_point
    run = json.loads((out / POINT / "config.json").read_text())
    del run["random_streams"], run["fingerprint"]
    (out / POINT / "config.json").write_text(json.dumps(run))
    with pytest.raises(ablate.AblationError, match=rf"^point {POINT}: \S+config.json was "
                                                   "written before the named random streams"):
        ablate.run(SMOKE, [SWEEP], str(out), progress=False)
    assert trained == []


def test_a_finished_point_from_before_the_scheme_was_recorded_is_kept(stopped_point):
    out, trained = stopped_point
    ablate.run(SMOKE, [SWEEP], str(out), progress=False)
    path = out / "ablation.json"
    saved = json.loads(path.read_text())
    del saved["points"][POINT]["identity"]["random_streams"]
    path.write_text(json.dumps(saved))
    ablate.run(SMOKE, [SWEEP], str(out), progress=False)
    assert trained == [POINT]                         # kept, not trained again
    saved["points"][POINT]["identity"]["config"]["seed"] = 1
    path.write_text(json.dumps(saved))
    with pytest.raises(ablate.AblationError, match=rf"was run with another config \(config.seed "
                                                   rf"1 there, 0 now\); use another --workdir, "
                                                   rf"or move {out} away to start over "
                                                   r"\(ablation.json and the point folders"):
        ablate.run(SMOKE, [SWEEP], str(out), progress=False)


def test_a_work_dir_of_other_random_streams_is_refused_before_anything_is_built(
        tmp_path, monkeypatch):
    config = smoke_config("/data")
    _write_started_run(str(tmp_path), config)
    run = json.loads((tmp_path / "config.json").read_text())
    run["random_streams"] = "named-streams/0"
    (tmp_path / "config.json").write_text(json.dumps(run))

    def not_built(*args):
        raise AssertionError("the trainer started building")

    monkeypatch.setattr(model_dir, "dataset_builder", not_built)   # its first step
    with pytest.raises(fingerprint.ConfigChangeError, match="records random streams "
                                                            "'named-streams/0'"):
        train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("backbone", ["clip", "siglip"])
def test_a_restart_runs_the_backbone_its_clip_folder_holds(tmp_path, monkeypatch, backbone):
    """The demo's random backbone is read back from backbone/, bit for bit, and not drawn again
    (another version could draw another one from the same seed)."""
    config = config_file.load_config_file(f"{SMOKE},backbone={backbone}")
    cfg = build.backbone_config(config)
    shapes = jax.eval_shape(lambda: towers.of(cfg).init_params(cfg, jax.random.key(0)))
    generator = np.random.default_rng(0)
    saved = jax.tree.map(lambda s: generator.standard_normal(s.shape).astype(s.dtype), shapes)
    monkeypatch.setattr(build, "load_backbone", lambda config, seed: ("drawn", seed))
    assert train.run_backbone(config, str(tmp_path), None) == ("drawn", config.seed)  # new
    build.save_backbone(cfg, saved, str(tmp_path / "backbone"))
    restarted_cfg, restarted = train.run_backbone(config, str(tmp_path), None)
    assert restarted_cfg == cfg
    assert all(jax.tree.leaves(jax.tree.map(
        lambda a, b: np.array_equal(np.asarray(a), b), restarted, saved)))
