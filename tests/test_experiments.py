"""The experiment commands on the smoke config: `ablate` (a two-point sweep of the new
aggregations, stopped after its first point, then resumed) and `robustness` on the model of
one of its points."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from smoke_runs import REPO, SMOKE, assert_default_modes, subprocess_env

from vtfpar_jax.evaluation import evaluate
from vtfpar_jax.experiments import ablate, corruptions, robustness
from vtfpar_jax.experiments.corruptions import CorruptionError
from vtfpar_jax.outputs import files
from vtfpar_jax.state import fingerprint
from vtfpar_jax.training import config_file, train

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


def _fake_results(config) -> dict:
    """Results that spell the config they came from (group F1 = lr x 100, mA = the
    number of frozen patterns / 10), as if training had run it."""
    f1, ma = 100 * config.optimizer.lr, len(config.frozen_patterns) / 10
    return {"group": {"acc": f1, "prec": f1, "rec": f1, "f1": f1}, "par": {"ma": ma, "f1": ma},
            "chen": {"acc": ma, "f1": ma}}


@pytest.fixture
def fake_training(monkeypatch):
    """train.train_and_evaluate replaced by `_fake_results`; the list of point dirs run."""
    trained = []

    def fake(config, point_dir):
        trained.append(os.path.basename(point_dir))
        return _fake_results(config)

    monkeypatch.setattr(train, "train_and_evaluate", fake)
    return trained


def test_ablate_never_reuses_a_result_of_another_run(tmp_path, fake_training):
    """Swapped sweep values keep their own results; an edited config file or another
    --set is refused naming the field, old and new values."""
    config_file = tmp_path / "edited.py"
    config_file.write_text("from configs.demo import get_config as demo\n\n\n"
                           "def get_config(arg=None):\n    c = demo(arg)\n"
                           "    c.optimizer.lr = 0.001\n    return c\n")
    spec, out = f"{config_file}:smoke", str(tmp_path / "out")
    one, two = "('backbone/.*',)", "('backbone/text/.*', 'backbone/logit_scale')"
    first = ablate.run(spec, [f"frozen_patterns={one},{two}"], out, progress=False)
    labels = first["order"]
    assert all("v0" not in label and "v1" not in label for label in labels)
    swapped = ablate.run(spec, [f"frozen_patterns={two},{one}"], out, progress=False)
    assert fake_training == labels                        # nothing trained again
    assert swapped["order"] == labels[::-1]
    for label in labels:   # each value keeps the results of its own config
        point = swapped["points"][label]
        assert point["results"]["mA"] == len(point["overrides"]["frozen_patterns"]) / 10
        assert point["fingerprint"] == first["points"][label]["fingerprint"]
    with pytest.raises(ablate.AblationError, match=r"was run with another config "
                       r"\(config.max_steps 0 there, 3 now\)"):
        ablate.run(spec, [f"frozen_patterns={one}"], out, {"max_steps": 3}, progress=False)
    config_file.write_text(config_file.read_text().replace("0.001", "0.002"))
    with pytest.raises(ablate.AblationError, match=r"was run with another config "
                       r"\(config.optimizer.lr 0.001 there, 0.002 now\)"):
        ablate.run(spec, [f"frozen_patterns={one}"], out, progress=False)
    assert fake_training == labels


@pytest.mark.parametrize("sweeps", [
    ["model.spatial_aggregation=mean,max,bogus"],
    ["model.temporal_aggregation=bogus,mean", "input.augment=true,false"],
    ["model.dim=32,64,30"],                       # 30: not a multiple of the 4 heads
    ["frozen_patterns=side_tuning,last_block"],    # map '0' of the demo: no block read
])
def test_a_bad_sweep_value_anywhere_is_refused_before_any_work(tmp_path, fake_training,
                                                              sweeps):
    spec = SMOKE.replace(":smoke", "") if "last_block" in sweeps[0] else SMOKE
    with pytest.raises(ablate.AblationError, match=r"^point \S+: "):
        ablate.run(spec, sweeps, str(tmp_path / "out"), progress=False)
    assert fake_training == [] and not (tmp_path / "out").exists()


def test_ablate_cli_names_the_bad_point(tmp_path, capsys, fake_training):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        ablate.main(["--config", SMOKE, "--sweep", "model.spatial_aggregation=bogus,mean",
                     "--workdir", str(out)])
    err = capsys.readouterr().err
    assert err.startswith("error: point spatial_aggregation=bogus: config: unknown "
                          "spatial_aggregation 'bogus'") and err.count("\n") == 1
    assert not out.exists()


def test_a_second_ablation_into_the_same_workdir_is_refused(tmp_path, monkeypatch,
                                                           fake_training):
    """Two ablations in one --workdir would each rewrite ablation.json without the other's
    points: the second, another process, is refused in one line naming the folder."""
    out = tmp_path / "out"
    argv = ["--config", SMOKE, "--sweep", SWEEP, "--workdir", str(out)]
    second = []

    def second_ablation_meanwhile(config, point_dir):
        if not second:
            second.append(subprocess.run([sys.executable, "-m", "vtfpar_jax", "ablate", *argv],
                                         cwd=REPO, env=subprocess_env(), capture_output=True,
                                         text=True))
        return _fake_results(config)
    monkeypatch.setattr(train, "train_and_evaluate", second_ablation_meanwhile)
    ablate.main(argv)
    assert second[0].returncode == 1, second[0].stderr
    assert second[0].stderr.strip() == (
        f"error: --workdir {out} is in use by pid {os.getpid()}, another run writing there: "
        "one run per --workdir at a time")
    assert sorted(os.listdir(tmp_path)) == ["out"]   # the lock went with the first ablation


def test_a_preempted_ablation_exits_143_naming_what_it_kept(tmp_path, capsys, monkeypatch,
                                                            fake_training):
    """The second point is preempted: exit 143 (a requeue policy reruns it), one line."""
    def preempted_second(config, point_dir):
        fake_training.append(os.path.basename(point_dir))
        return {"preempted_at": 2} if len(fake_training) == 2 else _fake_results(config)
    monkeypatch.setattr(train, "train_and_evaluate", preempted_second)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        ablate.main(["--config", SMOKE, "--sweep", SWEEP, "--workdir", str(out)])
    assert exit_.value.code == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"terminated: preempted at step 2 of point {POINTS[1]}, its checkpoint saved; the 1 "
        f"finished point(s) are kept in {out}/ablation.json; rerun the same command to go on "
        f"(point {POINTS[1]} resumes from its checkpoint)")


def test_labels_spell_their_values_and_never_collide():
    config = config_file.load_config_file(SMOKE)
    points = ablate.grid(config, ["text.template=a b,a_b"])   # once both 'template=a_b'
    assert list(points) == [f"template=a_b-{fingerprint.short_hash('a b')}", "template=a_b"]
    with pytest.raises(ablate.AblationError, match="a value is repeated"):
        ablate.grid(config, ["frozen_patterns=('a',),('a',)"])


def test_sweeps_are_typed_by_their_field_and_bad_ones_named():
    config = config_file.load_config_file(SMOKE)
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
    config = config_file.load_config_file(SMOKE)   # map '0': CLIP features 0..4 of a 4-block CLIP
    literal = "('backbone/text/.*', 'backbone/logit_scale')"
    points = ablate.grid(config, [f"frozen_patterns=side_tuning,last_block,full_vision,{literal}"])
    named = "frozen_patterns=backbone_text_._backbone_logit_scale-" + fingerprint.short_hash(
        ("backbone/text/.*", "backbone/logit_scale"))
    assert list(points) == ["frozen_patterns=side_tuning", "frozen_patterns=last_block",
                            "frozen_patterns=full_vision", named]
    assert points[named]["frozen_patterns"] == ("backbone/text/.*", "backbone/logit_scale")
    last = ablate.frozen_preset("last_block", config)
    trained = [p for p in ("backbone/vision/layers_3/fc1/kernel",
                           "backbone/vision/layers_2/fc1/kernel",
                           "backbone/vision/embeddings/patch/kernel",
                           "backbone/text/layers_0/fc1/kernel")
               if not any(re.fullmatch(pattern, p) for pattern in last)]
    assert trained == ["backbone/vision/layers_3/fc1/kernel"]   # feature 4 = after block 4
    demo = config_file.load_config_file(SMOKE.replace(":smoke", ""))   # reads feature 0 only
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
    # An edited corruption is another run: its cells are never reused.
    monkeypatch.setitem(corruptions.CORRUPTIONS, "occlusion", dataclasses.replace(
        corruptions.CORRUPTIONS["occlusion"], levels=(0.1, 0.2, 0.35, 0.4, 0.5)))
    with pytest.raises(robustness.RobustnessError, match=r"definitions.occlusion.levels "
                       r"\[0.1, 0.2, 0.3, 0.4, 0.5\] there, \[0.1, 0.2, 0.35, 0.4, 0.5\] now"):
        robustness.run(robustness_run["model"], "test", "occlusion", "1", seed=0,
                       out=str(robustness_run["out"]), progress=False)
    assert len(evaluated) == 2


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


@pytest.fixture(scope="module")
def last_block_point(data_dir, tmp_path_factory):
    """A one-point ablation of one step, with --set maps reading CLIP feature 2 and
    --set frozen_patterns=last_block: (its point dir, report, the --set values)."""
    workdir = tmp_path_factory.mktemp("last_block")
    sets = ablate._typed_sets(SMOKE, {"data_dir": data_dir, "max_steps": "1",
                                      "eval_every_epochs": "0", "model.spatial_map": "2->0",
                                      "model.temporal_map": "2->0",
                                      "frozen_patterns": "last_block"})
    report = ablate.run(SMOKE, ["model.temporal_aggregation=mean"], str(workdir), sets,
                        progress=False)
    return workdir / "temporal_aggregation=mean", report, sets


@pytest.mark.slow
def test_last_block_preset_follows_the_final_maps(last_block_point):
    """Experiment 1's middle point: the preset is resolved on the final config, so block 2
    (layers_1), the deepest the side nets read, is trained and no other CLIP leaf moves."""
    import jax

    from vtfpar_jax.backbones import hf_clip
    from vtfpar_jax.state import model_dir
    point, report, _ = last_block_point
    assert report["points"][point.name]["frozen_patterns"][-1] == "backbone/vision/(?!layers_1/).*"
    loaded = model_dir.load(str(point))
    assert list(loaded.state.trainable["backbone"]["vision"]) == ["layers_1"]
    _, initial = hf_clip.load(str(point / "backbone"))    # the CLIP the run started from
    now, start = (jax.tree_util.tree_flatten_with_path(tree)[0]
                  for tree in (loaded.variables()["backbone"], initial))
    moved = sorted({jax.tree_util.keystr(path[:2]) for (path, a), (_, b) in zip(
        now, start, strict=True) if np.abs(np.asarray(a) - np.asarray(b)).max() > 0})
    assert moved == ["['vision']['layers_1']"]


@pytest.mark.slow
def test_a_point_restarts_under_the_training_check(last_block_point, caplog):
    """Restarting a training work dir: another lr is refused, naming it; more epochs
    continue, and the change is recorded with its step and said in a warning (shown
    without --verbose); config.json stays as written."""
    from vtfpar_jax.state import model_dir
    from vtfpar_jax.state.checkpoint import CheckpointStore
    point, _, sets = last_block_point
    config = ablate._resolved(SMOKE, sets, {"model.temporal_aggregation": "mean"})
    config.optimizer.lr = 2e-3
    with pytest.raises(fingerprint.ConfigChangeError, match=r"\(optimizer.lr 0.001 there, "
                                                            r"0.002 now\)"):
        train.train_and_evaluate(config, str(point))
    config.optimizer.lr, config.num_epochs, config.max_steps = 1e-3, 3, 2
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(config, str(point))
    assert ("config changed from step 1 on: max_steps 1 there, 2 now; num_epochs 2 there, 3 "
            "now") in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert CheckpointStore(str(point)).steps()[-1] == 2
    lines = (point / fingerprint.CHANGES_FILE).read_text().splitlines()
    assert [json.loads(line) | {"time": None} for line in lines] == [
        {"step": 1, "time": None, "allowed_by": None, "changes": {
            "max_steps": {"old": 1, "new": 2}, "num_epochs": {"old": 2, "new": 3}}}]
    assert json.loads((point / "config.json").read_text())["config"]["num_epochs"] == 2
    assert model_dir.load(str(point)).config.num_epochs == 3
