"""Ctrl-C at random moments: does every interrupted command end as `interrupted:`, exit 130?

    python benchmarks/ctrl_c.py --model MODEL_DIR [--runs 40] [--seed 0] [--latest 6]

Starts evaluate, predict, robustness and track on MODEL_DIR in turn (`python -m vtfpar_jax`,
SIGINT restored to Python's default handler, as a terminal hands it), sends SIGINT once at a
uniformly random delay between 0.5 s and `--latest` seconds after the start (some runs
`--late` later still, so that the stop lands deep in the work), and sorts each run by how it
ended:
- stopped: exit 130 and one `interrupted:` line, no traceback;
- exit 0: the Ctrl-C was ignored;
- traceback: a Python traceback on stderr;
- crash: any other exit (a signal such as SIGSEGV, or another status).
The target is 0 ignored, 0 tracebacks, 0 crashes. Prints one line per run and the counts.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_IN_A_TERMINAL = ("import runpy, signal, sys; "
                    "signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "sys.argv[0] = 'vtfpar'; runpy.run_module('vtfpar_jax', run_name='__main__')")


def inputs(folder: str) -> dict[str, list[str]]:
    """The arguments of each command after `--model MODEL --out OUT`, with a small video."""
    import numpy as np

    from vtfpar_jax.inference import video
    street = os.path.join(folder, "street.mp4")
    frames = np.random.default_rng(0).integers(0, 255, (48, 96, 64, 3), np.uint8)
    video.write_video(street, frames)
    tracks = os.path.join(folder, "tracks.txt")
    with open(tracks, "w") as f:
        f.writelines(f"{t},1,8,8,24,64,1\n" for t in range(1, 49))
    return {"evaluate": [],
            "predict": [street],
            "robustness": ["--corruptions", "occlusion,motion_blur", "--severities", "1,3"],
            "track": [street, "--tracks", tracks]}


def one_run(command: str, model: str, args: list[str], out: str, delay: float,
            env: dict) -> tuple[str, int, str]:
    argv = [sys.executable, "-c", AS_IN_A_TERMINAL, command, "--model", model, "--out", out,
            *args]
    # SIGINT as a terminal hands it: not ignored, even where this harness runs as a
    # background job (whose children start with it ignored until Python's own handler).
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=600)
    status = process.returncode
    if "Traceback (most recent call last)" in stderr:
        kind = "traceback"
    elif status == 130 and [line for line in stderr.replace("\r", "\n").splitlines()
                            if line.startswith("interrupted: ")]:
        kind = "stopped"
    elif status == 0:
        kind = "exit 0"
    else:
        kind = "crash"
    return kind, status, stderr


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latest", type=float, default=6.0,
                        help="the latest delay of most runs, in seconds (the earliest: 0.5)")
    parser.add_argument("--late", type=float, default=15.0,
                        help="every fifth run waits up to this long instead")
    args = parser.parse_args(argv)
    draw = random.Random(args.seed)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    commands = ["evaluate", "predict", "robustness", "track"]
    counts: collections.Counter[str] = collections.Counter()
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        arguments = inputs(folder)
        for i in range(args.runs):
            command = commands[i % len(commands)]
            latest = args.late if i % 5 == 4 else args.latest
            delay = draw.uniform(0.5, latest)
            out = os.path.join(folder, f"out_{i}")
            kind, status, stderr = one_run(command, args.model, arguments[command], out,
                                           delay, env)
            counts[kind] += 1
            counts[f"{command}: {kind}"] += 1
            last = stderr.replace("\r", "\n").strip().splitlines()[-1:] or [""]
            print(f"{i + 1:3d} {command:<10} SIGINT at {delay:5.2f} s: {kind:<9} exit "
                  f"{status:4d}  {last[0][:110]}", flush=True)
            if kind in ("traceback", "crash"):
                print(stderr[-3000:], flush=True)
    total = sum(counts[k] for k in ("stopped", "exit 0", "traceback", "crash"))
    print(f"\n{total} runs in {time.time() - started:.0f} s: {counts['stopped']} stopped "
          f"(exit 130, one interrupted: line), {counts['exit 0']} exit 0, "
          f"{counts['traceback']} tracebacks, {counts['crash']} crashes")
    for command in commands:
        print(f"  {command}: " + ", ".join(f"{k.split(': ')[1]} {v}" for k, v in
                                          sorted(counts.items()) if k.startswith(command)))
    return dict(counts)


if __name__ == "__main__":
    main()
