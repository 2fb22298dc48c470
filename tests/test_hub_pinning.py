"""Without a model: a backbone's origin is pinned (a Hub id to its commit and files, a path
never taken for a Hub id), and the model card carries the metrics of the published step only."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from vtfpar_jax.backbones import hf_clip
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.state import backbone_origin, digests, hub_snapshot
from vtfpar_jax.tools import hub

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache, used offline (what snapshot_download finds there, it returns)."""
    import huggingface_hub.constants as constants
    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cached_repo(cache, repo: str, files: dict[str, bytes]):
    """A snapshot of `repo` at COMMIT, laid out as snapshot_download leaves it."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)
    snapshot = base / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


@pytest.mark.parametrize("path", ["/gone/model/clip", "./clip", "runs/mars/clip", "~/clip"])
def test_a_path_that_is_no_folder_is_named_not_taken_for_a_hub_id(path):
    with pytest.raises(WeightImportError, match=f"^{path}: no such folder"):
        hf_clip.resolve_folder(path)


def test_a_hub_backbone_is_pinned_to_its_commit_and_checked(offline_cache):
    snapshot = _cached_repo(offline_cache, "org/tiny-clip", {
        "config.json": b"{}", "model.safetensors": b"weights", "merges.txt": b"m",
        "pytorch_model.bin": b"not read"})
    origin = backbone_origin.of_path("org/tiny-clip")
    assert origin == {"hub": "org/tiny-clip", "commit": COMMIT, "files": {
        name: digests.sha256(str(snapshot / name))
        for name in ("config.json", "merges.txt", "model.safetensors")}}
    # A model dir with that origin publishes it by name, not a copy.
    assert hub._backbone_entry(origin, None) == origin
    assert hub._backbone_entry({"folder": "/x"}, None) == {"shipped": "backbone"}
    assert hub._backbone_entry(None, None) == {"shipped": "backbone"}
    layout = {"hub": {"backbone": origin, "files": {}}}
    assert hub_snapshot.backbone_folder("layout", layout) == str(snapshot)
    (snapshot / "model.safetensors").write_bytes(b"weightz")
    with pytest.raises(hub_snapshot.HubLayoutError,
                       match=f"hf://org/tiny-clip@{COMMIT}: {snapshot}/model.safetensors is "
                             "missing or differs"):
        hub_snapshot.backbone_folder("layout", layout)


def _run(step_scored: int | None, folder: str, model) -> None:
    (model / folder).mkdir(parents=True)
    metrics = {"attribute_set": "toy", "num_samples": 3,
               "group": {"acc": .5, "prec": .5, "rec": .5, "f1": .25},
               "par": {"ma": .75, "f1": .5}, "chen": {"acc": .5, "f1": .125}}
    if step_scored is not None:
        metrics["step"] = step_scored
    (model / folder / "metrics.json").write_text(json.dumps(metrics))
    (model / folder / "table.txt").write_text(f"table of {folder}\n")


RUN = {"config": {"dataset": "toy_set"}, "attribute_set": "toy", "phrases": ["a", "b"],
       "backbone_origin": {"hub": "org/tiny-clip", "commit": COMMIT, "files": {}}}


def test_the_card_holds_the_metrics_of_the_published_step_only(tmp_path):
    _run(None, "eval", tmp_path)          # written before the step was recorded
    _run(7, "eval_test", tmp_path)
    card = ModelCard(str(hub.model_card(RUN, "org/name", 9, *hub._evaluation(str(tmp_path), 9))))
    assert card.data.eval_results is None and "table of" not in card.text
    assert "holds no evaluation of step 9" in card.text
    assert ("Left out, as not an evaluation of step 9: `eval/` scores an "
            "unrecorded step; `eval_test/` scores step 7.") in card.text
    assert card.data.base_model == "org/tiny-clip" and f"hf://org/tiny-clip@{COMMIT}" in card.text

    card = hub.model_card(RUN, "org/name", 7, *hub._evaluation(str(tmp_path), 7))
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "group_f1": .25, "group_acc": .5, "mA": .75, "instance_f1": .5, "chen_f1": .125}
    assert {r.dataset_name for r in card.data.eval_results} == {"toy_set"}
    assert "table of eval_test" in card.text and "`eval/` scores an unrecorded step" in card.text
