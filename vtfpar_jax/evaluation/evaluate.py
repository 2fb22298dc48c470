"""Evaluation: `vtfpar evaluate --model DIR [--split test] [--step N]`.

Exact and deterministic: uniformly spaced frames, every tracklet once (padded
last batch, masked). Reports the four protocols of vtfpar_jax.evaluation.metrics (the
published group metrics at 0.45 are the headline) as a table, metrics.json and
a per-attribute bar chart. Periodic evaluation during training uses the same
`Evaluator`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from vtfpar_jax import cli_errors
from vtfpar_jax.evaluation import metrics
from vtfpar_jax.models import preprocess, vtfpar
from vtfpar_jax.outputs import files, stop_signals
from vtfpar_jax.state import optim, sharding

# (video (B, T, h, w, 3) uint8, tracklet index (B,)) -> video: see Evaluator.probabilities.
Corrupt = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Evaluator:
    """Runs the model in evaluation mode over a split and computes every metric."""

    def __init__(self, model_cfg, builder, attribute_set, frozen, mesh, input_config):
        from input_pipeline import pipeline
        self.model_cfg, self.builder, self.attribute_set = model_cfg, builder, attribute_set
        self.frozen, self.mesh, self.input = frozen, mesh, input_config
        self.pipeline = pipeline
        self.predict = jit_eval_logits(model_cfg, mesh,
                                       input_config.get("normalization", "published"))

    @classmethod
    def from_loaded(cls, loaded, split: str | None = None) -> Evaluator:
        """For a model dir as `model_dir.load` gives it (`split`: see `loaded.builder`)."""
        return cls(loaded.model_cfg, loaded.builder(split), loaded.attribute_set,
                   loaded.frozen, loaded.mesh, loaded.config.input)

    @classmethod
    def from_trainer(cls, trainer) -> Evaluator:
        return cls(trainer.model_cfg, trainer.builder, trainer.attribute_set, trainer.frozen,
                   trainer.mesh, trainer.config.input)

    def probabilities(self, state, split: str, corrupt: Corrupt | None = None,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probs, labels, mask) over `split`, gathered from every host.

        `corrupt(video, index)`, if given, changes each host batch's uint8 frames
        before they go to the devices (index: each row's tracklet, -1 on padding);
        e.g. a `vtfpar_jax.experiments.corruptions.corrupt_batch` with its corruption bound.
        """
        from tqdm import tqdm
        rows = []   # (probs, labels, mask) of each batch
        batches = self.pipeline.eval_batches(
            self.builder, split, batch_size=self.input.eval_batch_size,
            frames=self.model_cfg.frames, frame_size=self.pipeline.frame_size(self.input),
            process_index=jax.process_index(), process_count=jax.process_count())
        for local in tqdm(batches, desc=f"evaluate {split}", unit="batch", leave=False,
                          disable=not progress):
            index = local.pop("index")
            if corrupt is not None:
                local["video"] = corrupt(local["video"], index)
            batch = sharding.global_batch(local, self.mesh)
            logits = self.predict(state.trainable, state.batch_stats, self.frozen, batch["video"])
            # The batch-sharded global arrays, whole, on this host (from every host's shards).
            logits, labels, mask = multihost_utils.process_allgather(
                (logits, batch["labels"], batch["mask"]), tiled=True)
            rows.append((metrics.probabilities(logits, self.model_cfg), labels, mask))
        return tuple(np.concatenate(column) for column in zip(*rows, strict=True))

    def run(self, state, split: str, report_dir: str | None = None,
            corrupt: Corrupt | None = None, progress: bool = False) -> dict:
        probs, labels, mask = self.probabilities(state, split, corrupt, progress)
        results = metrics.evaluate_all(probs, labels, self.attribute_set, mask=mask)
        if report_dir and jax.process_index() == 0:
            # The step scored, so that a model card can tell whose metrics these are.
            metrics.save_report({**results, "step": int(state.step)}, self.attribute_set,
                                report_dir)
            files.write_text(os.path.join(report_dir, "table.txt"),
                             metrics.format_table(results, self.attribute_set))
        return results


def jit_eval_logits(cfg, mesh, normalization: str = "published"):
    """`eval_logits(trainable, batch_stats, frozen, video)` jitted; the logits stay
    sharded over the batch like the video (gathering them is the host's job, once,
    not a collective in every forward)."""
    return jax.jit(functools.partial(eval_logits, cfg, normalization=normalization),
                   out_shardings=sharding.batch_sharding(mesh))


def eval_logits(cfg, trainable, batch_stats, frozen, video, normalization: str = "published"):
    """Evaluation-mode logits (B, cfg.num_logits) from a training state's pieces.

    `video`: the pipeline's (B, T, h, w, 3) uint8 frames, resized and normalised
    here (vtfpar_jax.models.preprocess, no augmentation), or float model input as it is.
    """
    video = preprocess.model_input(video, (cfg.backbone.image_size,) * 2,
                                   preprocess.Preprocess(normalization, augment=False))
    params = optim.merge(trainable, frozen.params)
    logits, _ = vtfpar.apply(cfg, {"params": params["model"], "batch_stats": batch_stats},
                             params["backbone"], video, frozen.text_features)
    return logits


def headline(results: dict) -> dict[str, float]:
    g, p = results["group"], results["par"]
    return {"group_acc": g["acc"], "group_prec": g["prec"], "group_rec": g["rec"],
            "group_f1": g["f1"], "mA": p["ma"], "instance_f1": p["f1"],
            "chen_acc": results["chen"]["acc"], "chen_f1": results["chen"]["f1"],
            **({f"marco_{k}": results["marco"][k] for k in ("acc", "f1_macro", "f1_micro")}
               if "marco" in results else {})}


def summary_line(results: dict) -> str:
    if "preempted_at" in results:
        return f"preempted at step {results['preempted_at']}; rerun the same command to resume"
    h = headline(results)
    return ("group (published, 0.45): acc {group_acc:.4f} prec {group_prec:.4f} rec "
            "{group_rec:.4f} F1 {group_f1:.4f} | mA {mA:.4f} instance F1 {instance_f1:.4f} | "
            "Chen acc {chen_acc:.4f} F1 {chen_f1:.4f}").format(**h) + (
            " | train_marco acc {marco_acc:.4f} macro F1 {marco_f1_macro:.4f} micro F1 "
            "{marco_f1_micro:.4f}".format(**h) if "marco_acc" in h else "")


def evaluate_workdir(workdir: str, split: str = "test", step: int | None = None,
                     report_dir: str | None = None, data_dir: str | None = None) -> dict:
    """Evaluate a work dir's newest good checkpoint (or `step`) on `split`."""
    from vtfpar_jax.state import model_dir
    loaded = model_dir.load(workdir, step=step, data_dir=data_dir)
    return Evaluator.from_loaded(loaded).run(
        loaded.state, split, report_dir or model_dir.folder_inside(workdir, f"eval_{split}"))


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="vtfpar evaluate", description=__doc__.splitlines()[0])
    cli_errors.add_model_options(parser)
    cli_errors.add_dataset_options(parser)
    cli_errors.add_out_options(parser, "results for the same model and split", None,
                               "MODEL/eval_SPLIT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return cli_errors.parse_and_run(parser, argv, _evaluate)


def _evaluate(args) -> dict:
    from vtfpar_jax.outputs import out_folder
    from vtfpar_jax.state import model_dir
    out_path = args.out or model_dir.folder_inside(args.model, f"eval_{args.split}")
    trained_on = model_dir.config_in_force(args.model, model_dir.read_run_file(args.model)
                                           ).get("data_dir")
    with out_folder.OutFolder(
            out_path, "evaluate", {"model": model_dir.identity(args.model),
                                   "split": args.split, "step": args.step,
                                   "data_dir": args.data_dir and os.path.abspath(args.data_dir)},
            args.overwrite, reads=[args.model, args.data_dir or trained_on]) as out:
        model_dir.check_dataset(args.model, args.split, args.data_dir)
        loaded = model_dir.load_announced(args.model, step=args.step, data_dir=args.data_dir)
        out.check_step(loaded.step)
        evaluator = Evaluator.from_loaded(loaded, args.split)
        stop_signals.on_stop(f"nothing was written to {out_path}; rerun the same command")
        with out.filling(loaded.step,
                         unreadable_newer_checkpoints=loaded.unreadable_newer) as folder:
            results = evaluator.run(loaded.state, args.split, folder,
                                    progress=not args.no_progress)
    print(metrics.format_table(results, loaded.attribute_set))
    print(summary_line(results))
    print(f"step {loaded.step}; written to {out_path}")
    return results
