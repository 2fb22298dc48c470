"""Helper for tests/test_train.py: the training CLI, as one process of a multi-process run.

    python tests/train_worker.py [--sigterm_at_step N] --syncs FILE -- <vtfpar train args>

Runs `vtfpar_jax.training.train.main` unchanged (jax.distributed comes from the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment), with
two observations added for the test:
- `--sigterm_at_step N`: the process sends itself SIGTERM while step N runs,
  a preemption notice arriving at the same step on every process;
- `--syncs FILE`: how many times the hosts synchronised on the preemption
  flag (`preemption.any_process`), written to FILE on exit.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    args, train_argv = sys.argv[1:], []
    if "--" in args:
        args, train_argv = args[:args.index("--")], args[args.index("--") + 1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--sigterm_at_step", type=int, default=0)
    parser.add_argument("--syncs", required=True)
    opts = parser.parse_args(args)
    sys.path.insert(0, REPO)
    from vtfpar_jax.training import preemption, train

    syncs = []
    any_process = preemption.any_process

    def counted(flag):
        syncs.append(flag)
        return any_process(flag)

    preemption.any_process = counted
    atexit.register(lambda: open(opts.syncs, "w").write(str(len(syncs))))

    if opts.sigterm_at_step:
        batches = train.Trainer.batches

        def batches_with_sigterm(self, step):
            for i, batch in enumerate(batches(self, step), start=step + 1):
                if i == opts.sigterm_at_step:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

        train.Trainer.batches = batches_with_sigterm
    train.main(train_argv)


if __name__ == "__main__":
    main()
