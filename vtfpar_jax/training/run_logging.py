"""What a run leaves for people: JSONL + TensorBoard scalars, a progress bar, curves."""

from __future__ import annotations

import json
import logging
import os
import sys

import jax

from vtfpar_jax.outputs import files

# INFO lines here are the run's own (cli_errors.set_verbosity shows them by default).
log = logging.getLogger(__name__)


class MetricsLogger:
    """Scalars to `metrics.jsonl` and TensorBoard (process 0), progress on the terminal."""

    def __init__(self, workdir: str, total_steps: int, initial_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.workdir = workdir
        self.bar = None
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self.jsonl = open(self.path, "a")  # noqa: SIM115 - closed in close()
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                            dynamic_ncols=True)

    def write(self, step: int, scalars: dict[str, float]):
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        for k, v in scalars.items():
            self.tb.add_scalar(k, v, step)
        text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(text)
        else:
            log.info("step %d %s", step, text)

    def close(self):
        if self.enabled:
            if self.bar is not None:
                self.bar.close()
            self.tb.close()
            self.jsonl.close()

    def plot_curves(self) -> None:
        """training_curves.png from metrics.jsonl: loss, learning rate, eval F1."""
        if not self.enabled or not os.path.exists(self.path):
            return
        from matplotlib.figure import Figure

        with open(self.path) as f:
            rows = [json.loads(line) for line in f]
        panels = [("loss", "training loss"), ("learning_rate", "learning rate"),
                  ("eval/group_f1", "test group F1")]
        fig = Figure(figsize=(12, 3.5))
        for ax, (key, title) in zip(fig.subplots(1, 3), panels, strict=True):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), marker="." if len(points) < 50 else None)
            ax.set_title(title)
            ax.set_xlabel("step")
        fig.tight_layout()
        files.save_figure(fig, os.path.join(self.workdir, "training_curves.png"), dpi=100)
