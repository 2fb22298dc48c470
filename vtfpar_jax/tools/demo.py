"""`make demo`: build the synthetic set, train configs/demo.py, evaluate, show where things are.

    vtfpar demo --workdir runs/demo [--data_dir DIR] [--config_arg smoke]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from vtfpar_jax import cli_errors
from vtfpar_jax.outputs import stop_signals


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vtfpar demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    parser.add_argument("--config_arg", default="", help="argument of configs/demo.py")
    parser.add_argument("--prepare_only", action="store_true", help="only build the dataset")
    return cli_errors.parse_and_run(parser, argv, _demo)


def _demo(args) -> None:
    logging.getLogger().setLevel(logging.INFO)   # the step lines; the libraries stay quiet

    import input_pipeline
    from configs import demo
    from vtfpar_jax.evaluation import evaluate
    from vtfpar_jax.training import train

    config = demo.get_config(args.config_arg)
    config.data_dir = args.data_dir
    t0 = time.time()
    builder = input_pipeline.get_builder(config.dataset, args.data_dir)
    builder.download_and_prepare()
    print(f"dataset {config.dataset}: ready in {time.time() - t0:.0f} s ({args.data_dir})")
    if args.prepare_only:
        return
    t1 = time.time()
    stop_signals.on_stop(lambda: train.checkpoints_kept(args.workdir))
    results = train.train_and_evaluate(config, args.workdir)
    if "preempted_at" in results:
        train.preempted(results["preempted_at"], args.workdir)
    print(f"trained and evaluated in {time.time() - t1:.0f} s")
    from vtfpar_jax import attributes
    from vtfpar_jax.evaluation import metrics
    print(metrics.format_table(results, attributes.get(results["attribute_set"])))
    print("trained:   " + evaluate.summary_line(results))
    untrained = train.untrained_results(config, args.workdir)
    print("untrained: " + evaluate.summary_line(untrained))
    print(f"work dir {args.workdir}: metrics.jsonl, training_curves.png, eval/ "
          f"(metrics.json, per_attribute.png); TensorBoard: tensorboard --logdir "
          f"{os.path.join(args.workdir, 'tensorboard')}")
