"""A group-head model (configs/demo.py:smoke,head=group) through every command that reads a
model: evaluate, predict, track and export say which head made their outputs, and read its
logits as the softmax within each group."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from vtfpar_jax.inference import predict, video

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def group_model(data_dir, tmp_path_factory) -> Path:
    """The smoke recipe with the group head, trained once (a few steps) in a subprocess."""
    model = tmp_path_factory.mktemp("group") / "model"
    subprocess.run([sys.executable, "-m", "vtfpar_jax", "train", "--config",
                    "configs/demo.py:smoke,head=group", "--workdir", str(model),
                    f"--config.data_dir={data_dir}"], cwd=REPO, check=True, capture_output=True)
    return model


@pytest.fixture(scope="module")
def loaded(group_model):
    from vtfpar_jax.state import model_dir
    return model_dir.load(str(group_model))


@pytest.fixture(scope="module")
def walker(tmp_path_factory) -> dict:
    """One drawn tracklet: as a folder of frames, and as an mp4 with its MOT track."""
    from input_pipeline import synthetic_figures
    _, encoded = synthetic_figures.draw_tracklet(np.random.default_rng(5), (128, 64), 8)
    root = tmp_path_factory.mktemp("walker")
    folder = root / "frames"
    folder.mkdir()
    for i, data in enumerate(encoded):
        (folder / f"{i:03d}.jpg").write_bytes(data)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded])
    mp4 = root / "walker.mp4"
    video.write_video(mp4, decoded)
    tracks = root / "tracks.txt"
    tracks.write_text("".join(f"{f + 1},1,0,0,64,128,1,-1,-1,-1\n" for f in range(8)))
    return {"folder": folder, "mp4": mp4, "tracks": tracks}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_evaluate_reports_the_published_group_metric(group_model, tmp_path, capsys):
    from vtfpar_jax.evaluation import evaluate
    results = evaluate.main(["--model", str(group_model), "--out", str(tmp_path / "eval"),
                             "--no-progress"])
    marco, chen = results["marco"], results["chen"]
    # Argmax per group is Chen's rule at 0.5; micro F1 of one class per sample is accuracy.
    assert marco["acc"] == pytest.approx(chen["acc"])
    assert marco["f1_macro"] == pytest.approx(chen["f1"])
    assert marco["f1_micro"] == pytest.approx(marco["acc"])
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["marco"]["groups"].keys() == marco["groups"].keys()
    assert "train_marco" in capsys.readouterr().out


def test_predict_writes_softmax_probabilities_and_argmax_decisions(group_model, loaded, walker,
                                                                   tmp_path):
    from vtfpar_jax.models import group_head
    (record,) = predict.main([str(walker["folder"]), "--model", str(group_model),
                              "--out", str(tmp_path / "out")])
    assert record["head"] == "group" and record["threshold"] == 0.5
    assert "argmax" in record["decision_rules"]["binary"]
    s = loaded.attribute_set
    chosen = video.read_frames(walker["folder"], loaded.model_cfg.frames)
    clip = video.model_input(chosen, (loaded.model_cfg.backbone.image_size,) * 2, "published")[1]
    run = json.loads((group_model / "config.json").read_text())
    logits = predict.compute_logits(loaded.model_cfg, loaded.variables(), clip[None],
                                    np.asarray(run["tokens"], np.int32))[0]
    assert logits.shape == (loaded.model_cfg.num_logits,)
    blocks = np.split(logits, np.cumsum(group_head.class_counts(s.head_groups))[:-1])
    probabilities = record["probabilities"]
    for group, block, decision in zip(s.groups, blocks, record["decisions"], strict=True):
        softmax = _softmax(block.astype(np.float64))
        if group.is_binary:
            np.testing.assert_allclose(probabilities[s.columns[group.columns[0]]], softmax[1],
                                       rtol=1e-5)
            assert decision["present"] == (int(np.argmax(block)) == 1)
        else:
            np.testing.assert_allclose([probabilities[s.columns[c]] for c in group.columns],
                                       softmax, rtol=1e-5, atol=1e-7)
            assert decision["attribute"] == s.columns[group.columns[int(np.argmax(block))]]


def test_track_says_which_head(group_model, walker, tmp_path):
    from vtfpar_jax.inference import track_attributes
    result = track_attributes.main([str(walker["mp4"]), "--model", str(group_model),
                                    "--tracks", str(walker["tracks"]),
                                    "--out", str(tmp_path / "track"), "--no-progress"])
    assert result["head"] == "group" and result["threshold"] == 0.5
    written = json.loads((tmp_path / "track" / "tracks.json").read_text())
    assert written["head"] == "group"
    assert "argmax" in written["decision_rules"]["binary"]


def test_export_metadata_spans_the_group_logits(group_model, loaded, tmp_path):
    from vtfpar_jax.tools import export
    out = str(tmp_path / "model.stablehlo")
    export.main(["--model", str(group_model), "--format", "stablehlo", "--out", out])
    metadata = json.loads(Path(export.metadata_path(out)).read_text())
    assert metadata["head"] == "group"
    assert metadata["output"]["shape"] == ["B", loaded.model_cfg.num_logits]
    spans = [g["logits"] for g in metadata["groups"]]
    assert spans[0][0] == 0 and spans[-1][1] == loaded.model_cfg.num_logits
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    size = loaded.model_cfg.backbone.image_size
    clip = np.random.default_rng(0).uniform(-1, 1, (2, loaded.model_cfg.frames, size, size, 3))
    exported = jax.export.deserialize(Path(out).read_bytes())
    logits = np.asarray(exported.call(clip.astype(np.float32)))
    probabilities = predict.predict_clips(loaded, clip)
    for group, (start, end) in zip(metadata["groups"], spans, strict=True):
        softmax = _softmax(logits[:, start:end].astype(np.float64))
        expected = softmax[:, 1:] if group["binary"] else softmax
        np.testing.assert_allclose(probabilities[:, group["columns"]], expected, rtol=1e-4,
                                   atol=1e-6)
