"""`vtfpar predict` and what it uses (inference.video, evaluation.visualize and decisions):
reading clips, the outputs, the errors.

One demo model (configs/demo.py:smoke on synthetic_pedestrians/tiny) is trained
once per session in a subprocess. Clips are drawn by the synthetic set's own
figure painter, as frame folders and as an H.264 mp4 written with PyAV.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vtfpar_jax import attributes
from vtfpar_jax.evaluation import decisions, visualize
from vtfpar_jax.inference import predict, video

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def loaded(demo_model):
    from vtfpar_jax.state import model_dir
    return model_dir.load(str(demo_model["model"]))


def _tracklet(seed: int, num_frames: int) -> list[bytes]:
    from input_pipeline import synthetic_figures
    _, frames = synthetic_figures.draw_tracklet(np.random.default_rng(seed), (128, 64),
                                                num_frames)
    return frames


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A frame folder (9 JPEGs), an mp4 of another tracklet, a 2-frame folder."""
    root = tmp_path_factory.mktemp("clips")
    folder = root / "walker"
    folder.mkdir()
    for i, data in enumerate(_tracklet(1, 9)):
        (folder / f"{i:03d}.jpg").write_bytes(data)
    short = root / "short"
    short.mkdir()
    for i, data in enumerate(_tracklet(2, 2)):
        (short / f"{i:03d}.jpg").write_bytes(data)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                        for b in _tracklet(3, 8)])
    mp4 = root / "runner.mp4"
    video.write_video(mp4, decoded)
    return {"folder": folder, "short": short, "mp4": mp4, "mp4_frames": decoded}


def _run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """predict.main in this process: (exit code, stdout, stderr)."""
    code = 0
    try:
        predict.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --- reading inputs ------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames,frames", [(9, 6), (6, 6), (2, 6), (1, 4), (100, 8)])
def test_frame_indices_are_the_pipeline_uniform_choice(num_frames, frames):
    import tensorflow as tf

    from input_pipeline import pipeline
    expected = pipeline._frame_indices(tf.constant(num_frames), frames, "uniform",
                                       tf.constant([0, 0], tf.int64)).numpy()
    got = video.frame_indices(num_frames, frames)
    np.testing.assert_array_equal(got, expected)
    assert np.all(np.diff(got) >= 0)   # in order; repeats only when num_frames < frames


def test_normalizations_are_the_pipelines():
    from vtfpar_jax.models import preprocess
    assert video.NORMALIZATIONS == preprocess.NORMALIZATIONS


@pytest.mark.parametrize("size", [(64, 64), (224, 224), (20, 12), (100, 40)])
def test_resize_matches_tensorflow_within_one_level(size):
    """PIL's uint8 bilinear vs the pipeline's float resize (antialiased when shrinking), rounded."""
    import tensorflow as tf
    frame = np.asarray(Image.open(io.BytesIO(_tracklet(4, 1)[0])).convert("RGB"))
    shrinks = frame.shape[0] > size[0] or frame.shape[1] > size[1]
    reference = tf.image.resize(frame, size, method="bilinear", antialias=shrinks).numpy()
    reference = np.clip(np.round(reference), 0, 255)
    got = video.resize(frame, size).astype(np.float64)
    assert got.shape == (*size, 3)
    assert np.abs(got - reference).max() <= 1


@pytest.mark.parametrize("size,normalization,frames",
                         [((64, 64), "published", 6), ((24, 16), "clip", 4),
                          ((224, 224), "published", 40)])
def test_read_frames_matches_the_eval_pipeline(demo_model, tmp_path, size, normalization,
                                              frames):
    """The first test tracklet through eval_batches and the device preprocessing, and
    through read_frames and model_input on its JPEGs.

    Tolerance 1/255 (in pixel levels, before normalisation): the resize differs
    by at most 1 level (test above); both decode JPEG with libjpeg's accurate
    DCT, as PIL and the published code do. The same frames are chosen (a wrong
    frame would differ by far more).
    """
    import tensorflow_datasets as tfds

    import input_pipeline
    from input_pipeline import pipeline
    from vtfpar_jax.models import preprocess
    builder = input_pipeline.get_builder("synthetic_pedestrians/tiny",
                                         str(demo_model["data_dir"]))
    ds = builder.as_dataset(split="test", decoders={"frames": tfds.decode.SkipDecoding()})
    example = next(iter(tfds.as_numpy(ds)))
    for i, data in enumerate(example["frames"]):
        (tmp_path / f"{i:04d}.jpg").write_bytes(data)
    batch = next(pipeline.eval_batches(builder, "test", batch_size=1, frames=frames))
    model_input = np.asarray(preprocess.model_input(
        batch["video"], size, preprocess.Preprocess(normalization, augment=False)))
    frames_uint8, clip = video.model_input(video.read_frames(tmp_path, frames), size,
                                           normalization)
    assert frames_uint8.shape == (frames, *size, 3) and frames_uint8.dtype == np.uint8
    assert clip.shape == (frames, *size, 3) and clip.dtype == np.float32
    std = np.asarray(video.NORMALIZATIONS[normalization][1], np.float32)
    levels = np.abs(model_input[0] - clip) * std * 255
    assert levels.max() <= 1 + 1e-3


def test_read_frames_decodes_a_video(clips):
    frames_uint8, clip = video.model_input(video.read_frames(clips["mp4"], 4), (64, 64))
    assert frames_uint8.shape == (4, 64, 64, 3) and clip.shape == (4, 64, 64, 3)
    chosen = clips["mp4_frames"][video.frame_indices(len(clips["mp4_frames"]), 4)]
    expected = np.stack([video.resize(f, (64, 64)) for f in chosen]).astype(np.float64)
    # H.264 at yuv420p is lossy: close to the frames written, not equal.
    assert np.abs(frames_uint8 - expected).mean() < 6


# --- the model on clips --------------------------------------------------------------------


def test_predict_clips_shapes_and_fewer_frames(loaded, clips):
    size = (loaded.model_cfg.backbone.image_size,) * 2
    t = loaded.model_cfg.frames
    videos = np.stack([video.model_input(video.read_frames(clips[k], t), size)[1]
                       for k in ("folder", "mp4")])
    probs = predict.predict_clips(loaded, videos)
    assert probs.shape == (2, loaded.attribute_set.num_attributes)
    assert np.all((probs >= 0) & (probs <= 1))
    fewer = predict.predict_clips(loaded, videos[:, : t - 2])
    assert fewer.shape == probs.shape
    with pytest.raises(ValueError, match="at most"):
        predict.predict_clips(loaded, np.concatenate([videos, videos[:, :1]], axis=1))


def test_decisions_one_per_group():
    attribute_set = attributes.SYNTHETIC
    probs = np.linspace(0.0, 1.0, attribute_set.num_attributes)
    decided = decisions.decide(probs, attribute_set)
    assert [d["group"] for d in decided] == [g.name for g in attribute_set.groups]
    for d, group in zip(decided, attribute_set.groups, strict=True):
        if group.is_binary:
            assert d["present"] == (probs[group.columns[0]] > 0.45)
        else:   # increasing probabilities: the group's last column wins
            assert d["attribute"] == attribute_set.columns[group.columns[-1]]


# --- the CLI -------------------------------------------------------------------------------


def test_cli_writes_json_and_png_per_input(demo_model, clips, tmp_path, capsys):
    out = tmp_path / "out"
    tiny = tmp_path / "tiny"           # 8x8 frames: predicted, with a warning it records
    tiny.mkdir()
    Image.new("RGB", (8, 8), "red").save(tiny / "0.png")
    code, stdout, err = _run_cli(capsys, "--model", demo_model["model"], "--out", out,
                                 clips["folder"], clips["mp4"], clips["short"], tiny)
    assert code == 0, err
    warning = json.loads((out / "tiny.json").read_text())["warnings"]
    assert len(warning) == 1 and warning[0].startswith(
        f"{tiny}: frames of 8x8 pixels (a side under 16): upscaled to ")
    assert err.strip() == f"warning: {warning[0]}"
    attribute_set = attributes.SYNTHETIC
    for name in ("walker", "runner", "short"):
        record = json.loads((out / f"{name}.json").read_text())
        assert record["attribute_set"] == attribute_set.name
        assert record["threshold"] == 0.45 and "0.45" in record["decision_rules"]["binary"]
        assert list(record["probabilities"]) == list(attribute_set.columns)
        assert all(0 <= p <= 1 for p in record["probabilities"].values())
        assert [d["group"] for d in record["decisions"]] == [g.name for g in
                                                            attribute_set.groups]
        for d in record["decisions"]:
            assert record["probabilities"][d["attribute"]] == d["probability"]
            if d["kind"] == "binary":
                assert d["present"] == (d["probability"] > 0.45)
        image = Image.open(out / f"{name}.png")
        assert image.format == "PNG"
        assert image.size == visualize.pixel_size(attribute_set.num_attributes)
        pixels = np.asarray(image.convert("RGB")).astype(np.int32)
        # Not blank: the frames and the bars put many distinct colours on it.
        assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
        assert np.any(np.all(np.abs(pixels - (0xD9, 0x5F, 0x02)) < 8, axis=-1))  # decided bars
        assert record["warnings"] == []
    assert stdout.count(".json") == 4
    assert stdout.splitlines()[-1] == "4 done, 0 failed"


def test_cli_batch_does_the_good_inputs_and_lists_the_failures(demo_model, clips, tmp_path,
                                                               capsys):
    """A truncated mp4, a text file named .mp4 and a missing path among the inputs."""
    data = clips["mp4"].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    missing = tmp_path / "nowhere.mp4"
    out = tmp_path / "out"
    code, stdout, err = _run_cli(capsys, "--model", demo_model["model"], "--out", out,
                                 truncated, clips["mp4"], text, missing)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "runner.json", "runner.png"]
    assert len(json.loads((out / "run.json").read_text())["failed"]) == 3
    assert json.loads((out / "runner.json").read_text())["input"] == str(clips["mp4"])
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors), err
    for path, reason in ((truncated, "not a readable video"), (text, "not a readable video"),
                         (missing, "no such file")):
        assert sum(str(path) in line and reason in line for line in errors) == 1, (path, err)
    assert stdout.splitlines()[-1] == "1 done, 3 failed"

    # --fail-fast: the first unreadable input stops the run, nothing is written.
    code, stdout, err = _run_cli(capsys, "--fail-fast", "--model", demo_model["model"], "--out",
                                 tmp_path / "fast", clips["mp4"], truncated, text)
    assert code == 1 and not (tmp_path / "fast").exists()
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1 and str(truncated) in errors[0], err


def test_cli_never_mixes_two_runs_in_one_out(demo_model, clips, tmp_path, capsys):
    """Another run's results are refused and left byte-identical; --overwrite replaces them
    whole (nothing of the first run is left beside the second)."""
    out = tmp_path / "out"
    model = demo_model["model"]
    code, _, err = _run_cli(capsys, "--model", model, "--out", out, clips["folder"])
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["run.json", "walker.json", "walker.png"]
    code, _, err = _run_cli(capsys, "--model", model, "--out", out, clips["mp4"])
    assert code == 1
    assert err.strip() == (f"error: --out {out} holds run.json, walker.json, walker.png "
                           "(predict's results for other inputs or options); use a new or "
                           "empty folder, or --overwrite to replace it whole")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, _, err = _run_cli(capsys, "--overwrite", "--model", model, "--out", out,
                            clips["mp4"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "runner.json", "runner.png"]
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "predict" and run["identity"]["inputs"] == [str(clips["mp4"])]
    assert run["step"] == json.loads((out / "runner.json").read_text())["step"]


def test_output_names_are_unique(tmp_path):
    names = predict.output_names([tmp_path / "a" / "clip", tmp_path / "b" / "clip.mp4",
                                  tmp_path / "c.avi"])
    assert names == ["clip", "clip_2", "c"]


def _bad_inputs(root: Path, model: Path) -> dict[str, tuple[list, str]]:
    """case -> (CLI args, a fragment the error line must contain)."""
    text_mp4 = root / "notes.mp4"
    text_mp4.write_text("this is not a video\n")
    empty = root / "empty"
    empty.mkdir()
    texts = root / "texts"
    texts.mkdir()
    for i in range(3):
        (texts / f"{i}.txt").write_text("no pixels here")
    mixed = root / "mixed"
    shutil.copytree(texts, mixed)
    Image.new("RGB", (16, 32), "red").save(mixed / "3.png")
    no_ckpt = root / "no_checkpoint"
    no_ckpt.mkdir()
    for name in ("config.json", "backbone"):
        src = model / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, no_ckpt / name)
    good = root / "good"
    good.mkdir()
    Image.new("RGB", (16, 32), "blue").save(good / "0.png")
    return {
        "unreadable video": (["--model", model, text_mp4], "not a readable video"),
        "empty folder": (["--model", model, empty], "empty folder"),
        "folder of non-images": (["--model", model, texts], "no image"),
        "folder with a non-image": (["--model", model, mixed], "not images"),
        "model without checkpoint": (["--model", no_ckpt, good], "no checkpoint"),
        "not a model dir": (["--model", root, good], "not a model dir"),
        "missing path": (["--model", model, root / "nowhere.mp4"], "no such file"),
        "too many frames": (["--model", model, "--frames", "9", good], "at most"),
    }


@pytest.mark.parametrize("case", ["unreadable video", "empty folder", "folder of non-images",
                                  "folder with a non-image", "model without checkpoint",
                                  "not a model dir", "missing path", "too many frames"])
def test_cli_bad_input_is_one_clear_line(demo_model, tmp_path, capsys, case):
    args, fragment = _bad_inputs(tmp_path, demo_model["model"])[case]
    code, _, err = _run_cli(capsys, *args, "--out", tmp_path / "out")
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_process_exit_code_and_stderr(demo_model, tmp_path):
    """The real command: non-zero status, one line on stderr, no traceback."""
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 not a video")
    result = subprocess.run([sys.executable, "-m", "vtfpar_jax", "predict", "--model",
                             str(demo_model["model"]), "--out", str(tmp_path / "out"), str(bad)],
                            cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "broken.mp4" in errors[0], result.stderr
