"""benchmarks/gpu_table.py: the GPU check's table from its JSON files (no GPU needed)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_table_gives_the_ratios_against_the_goals(tmp_path, capsys):
    for batch, (pub_s, ours_s) in {16: (0.2, 0.025), 64: (0.36, 0.072)}.items():
        compare = {"max_abs_logit_diff": 0.012,
                   "published": {"train_s_per_step": pub_s, "train_peak_bytes": 8 * 2**30,
                                 "predict_clips_per_s": 200.0},
                   "jax": {"train_s_per_step": ours_s, "train_peak_bytes": 2 * 2**30,
                           "predict_clips_per_s": 700.0}}
        bench = {"device": "1x NVIDIA H200",
                 "breakdown": {"backbone_share": 0.65, "side_share": 0.35}}
        (tmp_path / f"compare_b{batch}.json").write_text(json.dumps(compare))
        (tmp_path / f"bench_b{batch}.json").write_text(json.dumps(bench))
    table = runpy.run_path(str(REPO / "benchmarks" / "gpu_table.py"))
    table["main"](str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "device: 1x NVIDIA H200"
    assert lines[3].startswith("| 16 | 0.2000 / 0.0250 s = 8.00x (>= 8x)")
    assert "= 25% (<= 50%)" in lines[3] and "= 3.50x (>= 3x)" in lines[3]
    assert lines[4].startswith("| 64 | 0.3600 / 0.0720 s = 5.00x (>= 5x)")
    assert "| 65% (>= 60%) | 1.2e-02 |" in lines[4]
