"""`make demo`: build the synthetic set, train configs/demo.py, evaluate, show where things are.

    vtfpar demo --workdir runs/demo [--data_dir DIR] [--config_arg smoke]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vtfpar demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    parser.add_argument("--config_arg", default="", help="argument of configs/demo.py")
    parser.add_argument("--prepare_only", action="store_true", help="only build the dataset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("absl", "tensorflow", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

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
    results = train.train_and_evaluate(config, args.workdir)
    print(f"trained and evaluated in {time.time() - t1:.0f} s")
    if "preempted_at" in results:
        print(evaluate.summary_line(results))
        sys.exit(0)
    from vtfpar_jax import attributes
    from vtfpar_jax.evaluation import metrics
    print(metrics.format_table(results, attributes.get(results["attribute_set"])))
    print("trained:   " + evaluate.summary_line(results))
    untrained = train.untrained_results(config, args.workdir)
    print("untrained: " + evaluate.summary_line(untrained))
    print(f"work dir {args.workdir}: metrics.jsonl, training_curves.png, eval/ "
          f"(metrics.json, per_attribute.png); TensorBoard: tensorboard --logdir "
          f"{os.path.join(args.workdir, 'tensorboard')}")
