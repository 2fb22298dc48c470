"""The experiment commands on the smoke config: `ablate` (a two-point sweep of the new
aggregations, stopped after its first point, then resumed) and `robustness` on the model of
one of its points."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from smoke_runs import SMOKE, assert_default_modes

from vtfpar_jax import ablate, evaluate, files, robustness, train
from vtfpar_jax.corruptions import CorruptionError

SWEEP = "model.temporal_aggregation=max,attention"
POINTS = ["temporal_aggregation=max", "temporal_aggregation=attention"]


class Stopped(Exception):
    """Stands for the run being stopped (Ctrl-C, a lost machine) as the second point starts."""


@pytest.fixture(scope="module")
def ablation(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ablation")
    sets = {"data_dir": data_dir, "max_steps": 2, "eval_every_epochs": 0}
    real = train.train_and_evaluate
    first_run, second_run = [], []

    def stop_at_second_point(config, point_dir):
        first_run.append(os.path.basename(point_dir))
        if len(first_run) == 2:
            raise Stopped
        return real(config, point_dir)

    def counted(config, point_dir):
        second_run.append(os.path.basename(point_dir))
        return real(config, point_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "train_and_evaluate", stop_at_second_point)
        with pytest.raises(Stopped):
            ablate.run(SMOKE, [SWEEP], str(workdir), sets, progress=False)
        with open(workdir / "ablation.json") as f:
            after_stop = json.load(f)
        patch.setattr(train, "train_and_evaluate", counted)
        report = ablate.run(SMOKE, [SWEEP], str(workdir), sets, progress=False)
    return {"workdir": workdir, "sets": sets, "after_stop": after_stop, "report": report,
            "first_run": first_run, "second_run": second_run}


@pytest.mark.slow
def test_ablate_resumes_after_the_first_point(ablation):
    assert ablation["first_run"] == POINTS
    assert list(ablation["after_stop"]["points"]) == POINTS[:1]
    assert ablation["second_run"] == POINTS[1:]     # the finished point is not trained again
    assert list(ablation["report"]["points"]) == POINTS


@pytest.mark.slow
def test_ablate_writes_the_table_and_chart(ablation):
    workdir, report = ablation["workdir"], ablation["report"]
    table = (workdir / "ablation.md").read_text()
    lines = table.splitlines()
    assert "| point | model.temporal_aggregation | group F1 | mA | Chen F1 | instance F1 |" in lines
    for label in POINTS:
        row = next(line for line in lines if line.startswith(f"| {label} |"))
        assert f"{100 * report['points'][label]['results']['group_f1']:.2f}" in row
    assert (workdir / "ablation.png").stat().st_size > 10_000
    saved = json.loads((workdir / "ablation.json").read_text())
    assert saved["points"] == report["points"]
    # ablate's files and its points' work dirs: what open / mkdir make under the umask
    # (0644 / 0755 under 022; the writers' own temporaries are 0600 / 0700 until renamed)
    assert_default_modes(workdir, files.umask())


@pytest.mark.slow
def test_new_aggregations_save_and_restore(ablation):
    """Each point's newest checkpoint, restored, scores what its training run reported."""
    for label in POINTS:
        restored = evaluate.evaluate_workdir(str(ablation["workdir"] / label),
                                             report_dir=str(ablation["workdir"] / "unused"))
        got = evaluate.headline(restored)
        want = ablation["report"]["points"][label]["results"]
        assert got == pytest.approx(want, abs=1e-6), label


def test_ablate_refuses_another_ablation_in_the_same_workdir(tmp_path):
    (tmp_path / "ablation.json").write_text(json.dumps(
        {"config": SMOKE, "sets": {"max_steps": 2}, "points": {}}))
    with pytest.raises(ablate.AblationError, match=r"ablation.json holds another run "
                       r"\(sets {'max_steps': 2} there, {'max_steps': 3} now\)"):
        ablate.run(SMOKE, [SWEEP], str(tmp_path), {"max_steps": 3}, progress=False)


def test_sweeps_are_typed_by_their_field_and_bad_ones_named():
    config = train.load_config_file(SMOKE)
    points = ablate.grid(config, ["model.dim=32,64", "input.augment=true,false"])
    assert list(points) == ["dim=32__augment=true", "dim=32__augment=false",
                            "dim=64__augment=true", "dim=64__augment=false"]
    assert points["dim=64__augment=false"] == {"model.dim": 64, "input.augment": False}
    with pytest.raises(ablate.AblationError, match="did you mean 'model.dim'"):
        ablate.grid(config, ["model.dims=32"])
    with pytest.raises(ablate.AblationError, match=r"model.dim='wide': expected a int"):
        ablate.grid(config, ["model.dim=32,wide"])
    with pytest.raises(ablate.AblationError, match="a value is repeated"):
        ablate.grid(config, ["model.dim=32,32"])


def test_frozen_patterns_presets_and_literals():
    config = train.load_config_file(SMOKE)   # map '0': CLIP features 0..4 of a 4-block CLIP
    literal = "('clip/text/.*', 'clip/logit_scale')"
    points = ablate.grid(config, [f"frozen_patterns=side_tuning,last_block,full_vision,{literal}"])
    assert list(points) == ["frozen_patterns=side_tuning", "frozen_patterns=last_block",
                            "frozen_patterns=full_vision", "frozen_patterns=v3"]
    assert points["frozen_patterns=v3"]["frozen_patterns"] == ("clip/text/.*", "clip/logit_scale")
    last = ablate.frozen_preset("last_block", config)
    trained = [p for p in ("clip/vision/layers_3/fc1/kernel", "clip/vision/layers_2/fc1/kernel",
                           "clip/vision/embeddings/patch/kernel", "clip/text/layers_0/fc1/kernel")
               if not any(re.fullmatch(pattern, p) for pattern in last)]
    assert trained == ["clip/vision/layers_3/fc1/kernel"]   # feature 4 = after block 4
    demo = train.load_config_file(SMOKE.replace(":smoke", ""))   # reads feature 0 only
    with pytest.raises(ablate.AblationError, match="only CLIP feature 0"):
        ablate.frozen_preset("last_block", demo)
    with pytest.raises(ablate.AblationError, match="did you mean 'last_block'"):
        ablate.grid(config, ["frozen_patterns=last_blok"])


@pytest.fixture(scope="module")
def robustness_run(ablation, tmp_path_factory):
    model = str(ablation["workdir"] / POINTS[0])
    out = tmp_path_factory.mktemp("robustness")
    report = robustness.run(model, "test", "occlusion,dropped_frames", "1,5", seed=0,
                            out=str(out), progress=False)
    return {"model": model, "out": out, "report": report}


@pytest.mark.slow
def test_robustness_cells_table_and_figures(robustness_run, ablation):
    report, out = robustness_run["report"], robustness_run["out"]
    cells = report["cells"]
    assert sorted(cells) == ["clean", "dropped_frames/1", "dropped_frames/5", "occlusion/1",
                             "occlusion/5"]
    # The clean cell is the plain evaluation the training run ended with.
    assert cells["clean"]["headline"] == pytest.approx(
        ablation["report"]["points"][POINTS[0]]["results"], abs=1e-6)
    assert cells["occlusion/5"]["headline"] != cells["clean"]["headline"]
    assert set(cells["clean"]["groups"]) == set(cells["occlusion/5"]["groups"])
    table = (out / "table.txt").read_text()
    for title in ("group F1 (published, 0.45)", "mA", "Chen F1", "fail first"):
        assert title in table
    row = next(line for line in table.splitlines() if line.startswith("occlusion "))
    assert f"{100 * cells['occlusion/5']['headline']['group_f1']:.2f}" in row
    for name in ("robustness.png", "groups.png"):
        assert (out / name).stat().st_size > 10_000
    saved = json.loads((out / "robustness.json").read_text())
    assert saved["cells"] == cells and saved["seed"] == 0 and saved["split"] == "test"


@pytest.mark.slow
def test_robustness_resumes_and_refuses_other_settings(robustness_run, monkeypatch):
    evaluated = []
    real = evaluate.Evaluator.run

    def counted(self, state, split, report_dir=None, corrupt=None):
        evaluated.append(corrupt.keywords if corrupt is not None else "clean")
        return real(self, state, split, report_dir, corrupt)

    monkeypatch.setattr(evaluate.Evaluator, "run", counted)
    before = json.loads((robustness_run["out"] / "robustness.json").read_text())["cells"]
    report = robustness.run(robustness_run["model"], "test", "occlusion,dropped_frames", "1,3,5",
                            seed=0, out=str(robustness_run["out"]), progress=False)
    assert [(e["name"], e["severity"]) for e in evaluated] == [("occlusion", 3),
                                                               ("dropped_frames", 3)]
    assert all(report["cells"][k] == v for k, v in before.items())
    with pytest.raises(robustness.RobustnessError, match="seed 0 there, 1 now"):
        robustness.run(robustness_run["model"], "test", "occlusion", "1", seed=1,
                       out=str(robustness_run["out"]), progress=False)


def test_robustness_cli_refuses_bad_names_and_severities(tmp_path, capsys):
    for argv, message in ((["--corruptions", "fog"], "unknown corruption 'fog'"),
                          (["--severities", "0,2"], "valid severities are 1, 2, 3, 4, 5")):
        with pytest.raises(SystemExit):
            robustness.main(["--model", str(tmp_path), *argv])
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cell_order_and_failing_groups():
    cells = {"clean": {"groups": {"a": 0.9, "b": 0.8}},
             "occlusion/5": {"groups": {"a": 0.5, "b": 0.79}}}
    worst = robustness.failing_groups(cells, "occlusion", 5)
    assert [g for g, _ in worst] == ["a", "b"]
    np.testing.assert_allclose([d for _, d in worst], [40.0, 1.0])
    assert robustness.cell_key("occlusion", 0) == "clean"
    with pytest.raises(CorruptionError):
        robustness.run("nowhere", names="occlusion", severities="7")


@pytest.mark.slow
def test_last_block_preset_trains_that_clip_block_only(data_dir, tmp_path):
    """Experiment 1's middle point: the deepest CLIP block read is trained, no other."""
    import jax

    from vtfpar_jax import model_dir
    from vtfpar_jax.convert import hf_clip
    config = ablate._resolved(SMOKE, {"data_dir": data_dir, "max_steps": 1,
                                      "eval_every_epochs": 0},
                              {"frozen_patterns": "last_block"})
    train.train_and_evaluate(config, str(tmp_path))
    loaded = model_dir.load(str(tmp_path))
    assert list(loaded.state.trainable["clip"]["vision"]) == ["layers_3"]
    _, initial = hf_clip.load(str(tmp_path / "clip"))    # the CLIP the run started from
    now = loaded.variables()["clip"]["vision"]
    for block, changed in (("layers_2", False), ("layers_3", True)):
        moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
            jax.tree.leaves(now[block]), jax.tree.leaves(initial["vision"][block]), strict=True))
        assert (moved > 0) == changed, block
