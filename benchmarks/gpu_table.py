"""The table of benchmarks/gpu_check.sh: its JSON files against the performance goals.

    python benchmarks/gpu_table.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Train speed-up over the published model, at least; peak memory share, at most;
# prediction speed-up, at least; share of the backbone bound at batch 64, at least.
GOALS = {16: {"train": 8.0, "memory": 0.5, "predict": 3.0},
         64: {"train": 5.0, "memory": 0.5, "predict": 3.0, "backbone": 0.6}}


def row(out: Path, batch: int) -> str:
    compare = json.loads((out / f"compare_b{batch}.json").read_text())
    bench = json.loads((out / f"bench_b{batch}.json").read_text())
    p, j, goal = compare["published"], compare["jax"], GOALS[batch]
    train = p["train_s_per_step"] / j["train_s_per_step"]
    memory = j["train_peak_bytes"] / p["train_peak_bytes"]
    predict = j["predict_clips_per_s"] / p["predict_clips_per_s"]
    backbone = bench["breakdown"]["backbone_share"]   # also the backbone-bound ratio
    cells = [
        f"{batch}",
        f"{p['train_s_per_step']:.4f} / {j['train_s_per_step']:.4f} s = {train:.2f}x "
        f"(>= {goal['train']:g}x)",
        f"{p['train_peak_bytes'] / 2**30:.2f} / {j['train_peak_bytes'] / 2**30:.2f} GiB = "
        f"{memory:.0%} (<= {goal['memory']:.0%})",
        f"{p['predict_clips_per_s']:.0f} / {j['predict_clips_per_s']:.0f} clips/s = "
        f"{predict:.2f}x (>= {goal['predict']:g}x)",
        f"{bench['breakdown']['backbone_share']:.0%} / {bench['breakdown']['side_share']:.0%}",
        f"{backbone:.0%}" + (f" (>= {goal['backbone']:.0%})" if "backbone" in goal else ""),
        f"{compare['max_abs_logit_diff']:.1e}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(out: str) -> None:
    out = Path(out)
    device = json.loads((out / "bench_b16.json").read_text())["device"]
    print(f"device: {device}")
    print("| batch | train published / ours | peak published / ours | predict published / "
          "ours | CLIP / side share | backbone bound | max dlogits |")
    print("|---|---|---|---|---|---|---|")
    for batch in (16, 64):
        print(row(out, batch))


if __name__ == "__main__":
    main(sys.argv[1])
