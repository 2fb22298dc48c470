"""Data parallelism that divides the work: on 8 simulated CPU devices, the compiled train
step and evaluation forward keep every activation sharded over the batch.

SPMD partitioning is the same on every backend, so what is checked here holds for GPU
hosts and TPU slices too (`vtfpar bench --aot ...` compiles for those).
The compiles run in a child process: the CPU device count is fixed when JAX starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from smoke_runs import subprocess_env

from vtfpar_jax.tools import compiled_stats

CONFIGS = {
    "default": {},
    "temporal_only": {"use_spatial": False},
    "lstm": {"spatial_aggregation": "lstm", "temporal_aggregation": "lstm"},
}
# A narrow model: 2 frames, width 32, 5 attributes, the tiny CLIP (interaction map '0').
CHILD = """
import json, sys
from vtfpar_jax.tools import aot
aot.prepare("cpux8")
out = {name: aot.compile_report("cpux8", "tiny", batch=16, frames=2, dtype="float32",
                                dim=32, heads=4, num_attributes=5, **options)
       for name, options in json.loads(sys.argv[1]).items()}
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def compiled() -> dict:
    env = subprocess_env()
    # The partitioner decides the collectives; the backend's optimisations do not.
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(CONFIGS)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_activation_moves_between_devices(compiled, name):
    r = compiled[name]
    assert r["devices"] == 8 and r["batch_per_device"] == 2
    for program in ("train", "predict"):
        moved = {op: c for op, c in r[program]["collectives"].items()
                 if op in compiled_stats.NON_REDUCE_COLLECTIVES}
        assert not moved, (program, moved)
    assert "all-reduce" not in r["predict"]["collectives"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_train_step_all_reduces_the_gradients_and_batch_statistics_only(compiled, name):
    """Within 10 %: the partitioner may reduce a smaller intermediate instead of a
    gradient (e.g. d(words) before the text projection's kernel gradient)."""
    r = compiled[name]
    expected = r["gradient_bytes"] + r["batch_norm_bytes"]
    reduced = r["train"]["collectives"]["all-reduce"]["bytes"]
    assert abs(reduced - expected) <= 0.1 * expected, (reduced, expected)


def test_collectives_are_read_from_hlo_text():
    hlo = """
  %all-reduce.1 = f32[240,960]{1,0} all-reduce(f32[240,960]{1,0} %p), replica_groups={}
  %ag = (bf16[2,196,240]{2,1,0}, bf16[16,196,240]{2,1,0}) all-gather-start(bf16[2,196,240] %x)
  %agd = bf16[16,196,240]{2,1,0} all-gather-done(%ag)
  %t = (f32[43]{0}, f32[43]{0}) all-reduce(f32[43]{0} %m, f32[43]{0} %v), to_apply=%sum
  ROOT %cp = f32[8]{0} collective-permute(f32[8]{0} %y), source_target_pairs={{0,1}}
"""
    assert compiled_stats.collectives(hlo) == {
        "all-reduce": {"count": 2, "bytes": 240 * 960 * 4 + 2 * 43 * 4},
        "all-gather": {"count": 1, "bytes": 16 * 196 * 240 * 2},
        "collective-permute": {"count": 1, "bytes": 32},
    }
