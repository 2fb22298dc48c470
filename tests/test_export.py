"""vtfpar_jax.tools.export: the demo model's logits from StableHLO (a fresh process) and ONNX.

The reference is the model run by JAX in this process (`predict.compute_logits`),
on inputs drawn at two batch sizes; onnxruntime, not our code, runs the ONNX file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from vtfpar_jax.inference import predict
from vtfpar_jax.tools import export

pytestmark = pytest.mark.slow

BATCHES = (1, 3)


@pytest.fixture(scope="module")
def loaded(demo_model):
    from vtfpar_jax.state import model_dir
    return model_dir.load(str(demo_model["model"]))


def _inputs(loaded, batch: int, seed: int) -> np.ndarray:
    cfg = loaded.model_cfg
    size = cfg.backbone.image_size
    # Normalised pixels lie in [-1, 1] ('published'); drawn there so the model sees its range.
    return np.random.default_rng(seed).uniform(
        -1, 1, (batch, cfg.frames, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def jax_logits(demo_model, loaded):
    """video -> the logits of the public `predict.compute_logits`, from the model dir's
    attribute tokens."""
    run = json.loads((demo_model["model"] / "config.json").read_text())
    tokens = np.asarray(run["tokens"], np.int32)
    return lambda video: predict.compute_logits(loaded.model_cfg, loaded.variables(), video,
                                                tokens)


def _export(demo_model, tmp_path, fmt: str, *options: str) -> tuple[str, dict]:
    out = str(tmp_path / f"model.{fmt}")
    export.main(["--model", str(demo_model["model"]), "--format", fmt, "--out", out,
                 *options])
    with open(export.metadata_path(out)) as f:
        return out, json.load(f)


def test_stablehlo_in_a_fresh_process_gives_jax_logits(demo_model, loaded, jax_logits,
                                                      tmp_path):
    path, metadata = _export(demo_model, tmp_path, "stablehlo")
    cfg = loaded.model_cfg
    assert metadata["input"]["shape"] == ["B", cfg.frames, cfg.backbone.image_size,
                                          cfg.backbone.image_size, 3]
    assert metadata["input"]["normalization"]["mean"] == [0.5, 0.5, 0.5]
    assert metadata["attributes"] == list(loaded.attribute_set.columns)
    inputs = {f"b{b}": _inputs(loaded, b, seed=b) for b in BATCHES}
    np.savez(tmp_path / "inputs.npz", **inputs)
    # Only jax and numpy in the child: the artefact must not need this package.
    script = textwrap.dedent(f"""
        import sys, numpy as np, jax
        sys.modules["vtfpar_jax"] = None   # any import of the package would fail here
        exported = jax.export.deserialize(open({path!r}, "rb").read())
        inputs = np.load({str(tmp_path / "inputs.npz")!r})
        np.savez({str(tmp_path / "outputs.npz")!r},
                 **{{k: np.asarray(exported.call(inputs[k])) for k in inputs.files}})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                   cwd=tmp_path)
    outputs = np.load(tmp_path / "outputs.npz")
    for b in BATCHES:
        expected = jax_logits(inputs[f"b{b}"])
        assert outputs[f"b{b}"].shape == (b, loaded.attribute_set.num_attributes)
        assert outputs[f"b{b}"].dtype == np.float32
        np.testing.assert_allclose(outputs[f"b{b}"], expected, rtol=0, atol=1e-5)


def test_stablehlo_fixed_batch_and_more_platforms(demo_model, loaded, jax_logits, tmp_path):
    """--batch 2 refuses another batch size; lowered for CPU and GPUs (no GPU needed), the
    artefact still runs here, on the CPU."""
    path, metadata = _export(demo_model, tmp_path, "stablehlo", "--batch", "2",
                             "--platforms", "cpu,cuda")
    assert metadata["input"]["shape"][0] == 2 and metadata["platforms"] == ["cpu", "cuda"]
    exported = jax.export.deserialize(open(path, "rb").read())
    assert exported.platforms == ("cpu", "cuda")
    video = _inputs(loaded, 2, seed=5)
    np.testing.assert_allclose(np.asarray(exported.call(video)), jax_logits(video),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        exported.call(_inputs(loaded, 3, seed=6))


def test_onnx_under_onnxruntime_gives_jax_logits(demo_model, loaded, jax_logits, tmp_path, capsys):
    import onnx
    import onnxruntime

    path, metadata = _export(demo_model, tmp_path, "onnx")
    printed = capsys.readouterr()   # one summary line, no converter chatter (jax2onnx DEBUG)
    assert printed.out.startswith(f"{path}: onnx, ") and printed.out.count("\n") == 1
    assert "DEBUG" not in printed.err
    proto = onnx.load(path)
    embedded = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(embedded["vtfpar"]) == metadata
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["video"]
    for b in BATCHES:
        video = _inputs(loaded, b, seed=10 + b)
        (got,) = session.run(["logits"], {"video": video})
        assert got.shape == (b, loaded.attribute_set.num_attributes)
        np.testing.assert_allclose(got, jax_logits(video), rtol=0, atol=1e-4)


def test_onnx_names_an_op_it_cannot_convert():
    """A primitive no converter knows (made here: jax2onnx covers every lax op the model
    uses) stops the export with one error naming it."""
    from jax.extend.core import Primitive
    unknown = Primitive("op_without_onnx_conversion")
    unknown.def_impl(lambda x: x)
    unknown.def_abstract_eval(lambda x: x)
    target = export.Exportable(lambda x: unknown.bind(x) + 1, (3,), {})
    with pytest.raises(export.ExportError, match="'op_without_onnx_conversion'"):
        export.to_onnx(target, {})


@pytest.mark.parametrize("args,fragment", [
    (["--batch", "0"], "--batch '0'"),
    (["--batch", "many"], "--batch 'many'"),
    (["--format", "onnx", "--platforms", "cuda"], "--platforms"),
    (["--platforms", "cpu,gpu"], "--platforms 'cpu,gpu'"),
])
def test_cli_bad_options_are_one_line(demo_model, tmp_path, capsys, args, fragment):
    out = tmp_path / "model.bin"
    argv = ["--model", str(demo_model["model"]), "--out", str(out)]
    if "--format" not in args:
        argv += ["--format", "stablehlo"]
    with pytest.raises(SystemExit) as e:
        export.main(argv + args)
    assert e.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not out.exists() and not (tmp_path / "model.bin.json").exists()


def test_metadata_alone_reproduces_predict_on_a_camera_clip(demo_model, loaded, tmp_path):
    """An H.264 4:2:0 clip (libx264, crf 23), preprocessed from the metadata alone with
    PyAV, PIL and numpy, through both artefacts: `predict`'s probabilities to 1e-5."""
    import av
    import onnxruntime
    from PIL import Image

    from vtfpar_jax.inference import video

    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:96, 0:48]
    frames = [np.clip(np.stack([ys * 2 + 4 * i, xs * 5, 128 + 60 * np.sin((ys + 3 * i) / 7)], -1)
                      + rng.normal(0, 12, (96, 48, 3)), 0, 255).astype(np.uint8)
              for i in range(23)]   # 23 frames: the middles of T segments are not evenly spread
    clip = tmp_path / "walk.mp4"
    video.write_video(clip, np.stack(frames))
    size = loaded.model_cfg.backbone.image_size
    _, expected_input = video.model_input(video.read_frames(clip, loaded.model_cfg.frames),
                                          (size, size), loaded.normalization)
    expected = predict.predict_clips(loaded, expected_input[None])

    stablehlo, metadata = _export(demo_model, tmp_path, "stablehlo")
    onnx_path, onnx_metadata = _export(demo_model, tmp_path, "onnx")
    pre = metadata["preprocessing"]
    assert onnx_metadata["preprocessing"] == pre
    assert (pre["resize"]["method"], pre["resize"]["antialias"], pre["resize"]["crop"],
            pre["colour_order"]) == ("bilinear", True, "none", "RGB")
    # From here on: the metadata, PyAV, PIL and numpy only.
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    n, t = len(decoded), pre["frame_choice"]["frames"]
    middles = (np.arange(t, dtype=np.float32) + np.float32(0.5)) * np.float32(n) / np.float32(t)
    chosen = np.minimum(np.floor(middles).astype(np.int64), n - 1)
    height, width = pre["resize"]["size"]
    resized = np.stack([np.asarray(Image.fromarray(decoded[i]).resize(
        (width, height), Image.Resampling.BILINEAR)) for i in chosen])
    mean, std = (np.asarray(pre["normalization"][k], np.float32) for k in ("mean", "std"))
    clip_input = ((resized.astype(np.float32) / np.float32(255.0) - mean) / std)[None]

    def sigmoid(logits):
        return 1 / (1 + np.exp(-np.asarray(logits, np.float64)))

    exported = jax.export.deserialize(open(stablehlo, "rb").read())
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"video": clip_input})
    np.testing.assert_allclose(sigmoid(exported.call(clip_input)), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sigmoid(onnx_logits), expected, rtol=0, atol=1e-5)
