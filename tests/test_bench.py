"""Smoke test of the benchmark CLI: tiny CLIP on the CPU, JSON fields, and no TensorFlow.

No timing is asserted. The run happens in a subprocess whose import system
refuses tensorflow, tensorflow_datasets and ml_collections, as on the GPU
machine where none is installed: an import of any of them fails the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs before the benchmark in the child: a finder at the front of sys.meta_path
# makes the packages the GPU machine lacks unimportable.
BLOCKER = """
import importlib.abc, sys
BLOCKED = {"tensorflow", "tensorflow_datasets", "ml_collections"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the benchmark must not import it")
        return None
sys.meta_path.insert(0, Block())
from vtfpar_jax import cli
cli.main(["bench", *sys.argv[1:]])
"""


def _run(args, tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", BLOCKER, *args, "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_blocker_really_blocks(tmp_path):
    code = BLOCKER.replace('cli.main(["bench", *sys.argv[1:]])', "import ml_collections")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "blocked" in proc.stderr


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_field(tmp_path):
    result, stdout = _run(["--shape", "tiny", "--batch", "2", "--frames", "2", "--steps", "2",
                           "--warmup", "1", "--devices", "2", "--breakdown"], tmp_path)
    for key in ("device", "platform", "device_count", "batch", "frames", "dtype", "backbone_dtype",
                "remat", "attention",
                "compile_s", "step_s_median", "clips_per_s", "frames_per_s",
                "predict_compile_s", "predict_clips_per_s", "peak_bytes", "predict_peak_bytes",
                "peak_source", "rss_peak_bytes", "memory_analysis", "kernels",
                "trainable_params", "breakdown", "command"):
        assert key in result, key
    assert result["platform"] == "cpu" and result["device_count"] == 2
    assert result["batch"] == 2 and result["frames"] == 2
    # No option given: the project's defaults.
    assert result["remat"] == "dots" and result["attention"] == "auto"
    # The CPU backend keeps no peak counter: reported as None, RSS beside it.
    assert result["peak_bytes"] is None and result["peak_source"] is None
    assert result["rss_peak_bytes"] > 0
    assert result["finite"] and result["step_s_median"] > 0
    assert result["frames_per_s"] == pytest.approx(2 * result["clips_per_s"])
    b = result["breakdown"]
    assert b["backbone_s_median"] > 0
    assert b["backbone_share"] + b["side_share"] == pytest.approx(1)
    assert b["backbone_share"] == pytest.approx(   # the backbone-bound ratio
        result["frames_per_s"] / b["backbone_frames_per_s"])
    lines = stdout.strip().splitlines()
    assert len(lines) == 2 and "clips/s" in lines[0] and "backbone-bound" in lines[1]


def test_aot_target_errors_are_clear(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "vtfpar_jax", "bench", "--aot", "h300"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--aot 'h300': expected h100, h200" in proc.stderr


def test_devices_must_split_the_batch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "vtfpar_jax", "bench", "--shape", "tiny",
                           "--batch", "3", "--devices", "2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "does not split" in proc.stderr


@pytest.mark.parametrize("old, new", [("--clip", "--shape"), ("--clip-dtype", "--backbone-dtype")])
def test_the_options_named_clip_are_refused_naming_their_names_now(capsys, old, new):
    from vtfpar_jax.tools import bench, param_count
    with pytest.raises(SystemExit) as e:
        bench.main([old, "tiny" if old == "--clip" else "float32"])
    assert e.value.code == 2 and f"{old} is now {new}" in capsys.readouterr().err
    if old == "--clip":
        with pytest.raises(SystemExit) as e:
            param_count.main([old, "tiny"])
        assert e.value.code == 2 and "--clip is now --shape" in capsys.readouterr().err


def test_deviceless_compile_needs_only_jax_flax_optax():
    """`make aot-venv` installs jax, flax, optax and numpy only: what aot.compile_report
    imports, lazily included, must not reach PIL, TensorFlow, transformers or torch."""
    code = """
import sys
for name in ("PIL", "tensorflow", "transformers", "torch", "av", "cv2", "sentencepiece"):
    sys.modules[name] = None   # importing any of them now fails
import jax
from vtfpar_jax.backbones import registry
from vtfpar_jax.tools import aot, bench_setup
for backbone in ("clip", "siglip"):
    cfg = bench_setup.model_config(registry.shape_config(backbone, "tiny"), frames=2,
                                   dim=32, heads=4, num_attributes=3)
    jax.eval_shape(lambda: bench_setup.make_inputs(cfg, batch=2))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
