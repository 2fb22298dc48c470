"""The Hub layout of the demo model, loaded through hf:// offline from a local Hub cache (its
snapshot folder read as it lies) and as a --local folder: predict, evaluate, track and export
give the original model dir's numbers, and nothing is copied anywhere."""

from __future__ import annotations

import json
import os
import shutil
import stat

import jax
import numpy as np
import pytest
from huggingface_hub import ModelCard

from vtfpar_jax.tools import hub

pytestmark = pytest.mark.slow

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _publish_offline(layout, cache, repo: str) -> None:
    """What snapshot_download leaves in a cache: refs/main and snapshots/<commit>/."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)
    shutil.copytree(layout, base / "snapshots" / COMMIT)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))   # where a second cache would go
    return cache


def _files(folder) -> dict[str, int]:
    """{relative path: size} of every file under `folder`."""
    return {os.path.relpath(os.path.join(root, name), folder):
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(folder) for name in names}


def test_hub_layout_gives_the_model_dirs_numbers(demo_model, offline_hub, tmp_path):
    from vtfpar_jax.evaluation import evaluate
    from vtfpar_jax.evaluation.evaluate import headline
    from vtfpar_jax.inference import predict, track_attributes, video
    from vtfpar_jax.tools import export

    model, layout = str(demo_model["model"]), tmp_path / "layout"
    hub.main([model, "demo/vtfpar-demo", "--local", str(layout)])
    umask = os.umask(0o022)
    os.umask(umask)
    assert {stat.S_IMODE(os.stat(layout / name).st_mode)
            for name in ("model.safetensors", "config.json", "README.md")} == {0o666 & ~umask}
    run = json.loads((layout / "config.json").read_text())
    assert sorted(run["hub"]["files"])[-1] == "model.safetensors"
    # A random backbone: its recipe recorded, its weights shipped.
    assert run["backbone_origin"]["random"] == "tiny" and "seed" in run["backbone_origin"]
    assert run["hub"]["backbone"] == {"shipped": "backbone"} and (layout / "backbone").is_dir()
    card = ModelCard.load(layout / "README.md")
    assert card.data.library_name == "vtfpar-jax" and "hf://demo/vtfpar-demo" in card.text
    # The demo run evaluated its last step, the one published, into eval/.
    evaluated = json.loads((demo_model["model"] / "eval" / "metrics.json").read_text())
    assert evaluated["step"] == run["hub"]["step"]
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        key: round(value, 4) for key, value in headline(evaluated).items()
        if key in hub._CARD_METRICS}
    assert (demo_model["model"] / "eval" / "table.txt").read_text().rstrip() in card.text
    _publish_offline(layout, offline_hub, "demo/vtfpar-demo")
    spec = "hf://demo/vtfpar-demo"
    snapshot = offline_hub / "models--demo--vtfpar-demo" / "snapshots" / COMMIT
    published = _files(snapshot)

    frames = np.random.default_rng(1).integers(0, 256, (9, 64, 32, 3), dtype=np.uint8)
    video.write_video(tmp_path / "walk.mp4", frames)
    records = {name: predict.main([str(tmp_path / "walk.mp4"), "--model", m, "--out",
                                   str(tmp_path / name)])[0]
               for name, m in (("dir", model), ("hub", spec), ("local", str(layout)))}
    for name in ("hub", "local"):
        np.testing.assert_allclose(list(records[name]["probabilities"].values()),
                                   list(records["dir"]["probabilities"].values()),
                                   rtol=0, atol=1e-6)
    # The snapshot is read as it lies: no copy of it, nothing written into it.
    assert not (tmp_path / "home" / ".cache" / "vtfpar").exists()
    assert _files(snapshot) == published

    tracks = tmp_path / "tracks.txt"   # one person box on every frame (MOT: frame,id,x,y,w,h)
    tracks.write_text("".join(f"{frame},1,4,8,24,48,1,-1,-1,-1\n" for frame in range(1, 10)))
    people = {name: track_attributes.main([str(tmp_path / "walk.mp4"), "--model", m, "--tracks",
                                           str(tracks), "--out", str(tmp_path / f"t_{name}"),
                                           "--no-progress"])["tracks"]
              for name, m in (("dir", model), ("hub", spec))}
    assert list(people["hub"]) == list(people["dir"]) == ["1"]
    np.testing.assert_allclose(list(people["hub"]["1"]["probabilities"].values()),
                               list(people["dir"]["1"]["probabilities"].values()),
                               rtol=0, atol=1e-6)
    # The output records the commit it ran, not a path made of the hf:// spec.
    ran = json.loads((tmp_path / "t_hub" / "run.json").read_text())
    assert f"hf://demo/vtfpar-demo@{COMMIT}" in json.dumps(ran)

    scores = {name: evaluate.evaluate_workdir(m, "test", report_dir=str(tmp_path / f"e_{name}"),
                                              data_dir=str(demo_model["data_dir"]))
              for name, m in (("dir", model), ("hub", spec))}
    assert json.dumps(scores["hub"], sort_keys=True) == json.dumps(scores["dir"], sort_keys=True)
    assert _files(snapshot) == published

    logits = {}
    for name, m in (("dir", model), ("hub", spec)):
        out = str(tmp_path / f"{name}.stablehlo")
        export.main(["--model", m, "--format", "stablehlo", "--out", out])
        meta = json.loads(open(out + ".json").read())["input"]
        clip_input = video.model_input(video.read_frames(tmp_path / "walk.mp4", meta["frames"]),
                                       tuple(meta["image_size"]), "published")[1][None]
        logits[name] = np.asarray(jax.export.deserialize(open(out, "rb").read()).call(clip_input))
    np.testing.assert_allclose(logits["hub"], logits["dir"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("command, folder", [("evaluate", "eval_test"),
                                             ("robustness", "robustness_test")])
def test_a_hub_model_needs_an_out_folder(offline_hub, capsys, command, folder):
    """evaluate and robustness write next to a model dir by default: a Hub model has none."""
    from vtfpar_jax import cli
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--model", "hf://demo/vtfpar-demo"])
    assert stop.value.code != 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --model hf://demo/vtfpar-demo: give --out; a model from the Hub has no folder "
        f"of yours to write {folder} into")


def _change_last_byte(path) -> None:
    with open(path, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))


def test_a_file_changed_after_a_load_is_named_at_the_next(demo_model, offline_hub, tmp_path):
    """Every load checks what it reads: a byte changed in the Hub cache after a good load
    (where a copy checked once would go on being used) is refused at the next one."""
    from vtfpar_jax.state import model_dir
    layout = tmp_path / "layout"
    hub.write_layout(str(demo_model["model"]), str(layout))
    _publish_offline(layout, offline_hub, "demo/changed")
    snapshot = offline_hub / "models--demo--changed" / "snapshots" / COMMIT
    assert model_dir.load("hf://demo/changed").step == json.loads(
        (layout / "config.json").read_text())["hub"]["step"]
    _change_last_byte(snapshot / "model.safetensors")
    with pytest.raises(hub.HubLayoutError, match=f"{snapshot}/model.safetensors: differs from"):
        model_dir.load("hf://demo/changed")
    shutil.copy(layout / "model.safetensors", snapshot / "model.safetensors")
    weights = sorted((snapshot / "backbone").glob("*.safetensors"))[0]
    _change_last_byte(weights)
    with pytest.raises(hub.HubLayoutError, match=f"{weights}: missing or differs"):
        model_dir.load("hf://demo/changed")
    with pytest.raises(hub.HubLayoutError, match="hf://ORG/NAME"):
        model_dir.load("hf://just-a-name")


def test_a_model_dirs_backbone_changed_after_it_was_written_is_named(demo_model, tmp_path):
    """A model dir's config.json records the SHA-256 of its backbone/ files: a load and a
    restart refuse a changed byte or an added file, naming it, where they would read it."""
    from configs import demo
    from vtfpar_jax.state import digests, fingerprint, model_dir
    from vtfpar_jax.training import train
    model = tmp_path / "model"
    shutil.copytree(demo_model["model"], model)
    recorded = json.loads((model / "config.json").read_text())["backbone_files"]
    assert sorted(recorded) == sorted(
        os.path.relpath(p, model) for p in (model / "backbone").rglob("*") if p.is_file())
    weights = sorted((model / "backbone").glob("*.safetensors"))[0]
    _change_last_byte(weights)
    with pytest.raises(digests.DigestError, match=f"{weights}: missing or differs from the "
                       f"SHA-256 that {model}/config.json records"):
        model_dir.load(str(model))
    with pytest.raises(digests.DigestError, match=f"{weights}: missing or differs"):
        train.run_backbone(demo.get_config("smoke"), str(model),
                           fingerprint.started_run(str(model)))
    _change_last_byte(weights)   # back as it was
    (model / "backbone" / "notes.txt").write_text("added")
    with pytest.raises(digests.DigestError, match="backbone/notes.txt: not listed in"):
        model_dir.load(str(model))


def test_a_layout_written_before_backbones_were_pinned_loads(demo_model, tmp_path):
    """Layouts of 62072ed said `backbone_repo: null` (backbone/ shipped) for `backbone`; the
    rest of their config.json, and every file, is the same (docs/sharing.md)."""
    from vtfpar_jax.inference import predict
    from vtfpar_jax.state import model_dir
    layout = tmp_path / "layout"
    hub.write_layout(str(demo_model["model"]), str(layout))
    run = json.loads((layout / "config.json").read_text())
    assert run["hub"].pop("backbone") == {"shipped": "backbone"}
    run["hub"]["backbone_repo"] = None
    (layout / "config.json").write_text(json.dumps(run))
    videos = np.random.default_rng(0).random((2, 6, 48, 48, 3), dtype=np.float32)
    probabilities = [np.asarray(predict.predict_clips(model_dir.load(m), videos))
                     for m in (str(demo_model["model"]), str(layout))]
    np.testing.assert_allclose(probabilities[1], probabilities[0], rtol=0, atol=1e-6)


def test_a_backbone_from_the_hub_is_named_at_its_commit_and_checked(demo_model, offline_hub,
                                                                     tmp_path):
    """A model dir whose backbone came from a Hub repo publishes no copy of it: the layout
    names the repo at its commit, and loading fetches it and checks its files."""
    from vtfpar_jax.inference import predict
    from vtfpar_jax.state import backbone_origin, model_dir
    model = tmp_path / "model"
    shutil.copytree(demo_model["model"], model)
    # The demo's random backbone, as if it had been read from the Hub repo demo/tiny-clip.
    _publish_offline(model / "backbone", offline_hub, "demo/tiny-clip")
    run = json.loads((model / "config.json").read_text())
    run["backbone_origin"] = backbone_origin.of_path("demo/tiny-clip")
    (model / "config.json").write_text(json.dumps(run))

    layout = tmp_path / "layout"
    hub.write_layout(str(model), str(layout), "demo/named")
    published = json.loads((layout / "config.json").read_text())
    assert published["hub"]["backbone"]["commit"] == COMMIT and not (layout / "backbone").exists()
    assert ModelCard.load(layout / "README.md").data.base_model == "demo/tiny-clip"
    _publish_offline(layout, offline_hub, "demo/named")

    videos = np.random.default_rng(0).random((2, 6, 48, 48, 3), dtype=np.float32)
    probabilities = {name: np.asarray(predict.predict_clips(model_dir.load(m), videos))
                     for name, m in (("dir", str(model)), ("hub", "hf://demo/named"))}
    np.testing.assert_allclose(probabilities["hub"], probabilities["dir"], rtol=0, atol=1e-6)

    weights = offline_hub / "models--demo--tiny-clip" / "snapshots" / COMMIT / "model.safetensors"
    _change_last_byte(weights)
    with pytest.raises(hub.HubLayoutError, match=f"the backbone hf://demo/tiny-clip@{COMMIT}: "
                                                 f"{weights} is missing or differs"):
        model_dir.load("hf://demo/named")
