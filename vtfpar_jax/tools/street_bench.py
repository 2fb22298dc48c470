"""Detection and tracking on a drawn street video: time per stage and MOT scores against the truth.

    vtfpar street-bench --size 1080x1920 --person_px 96 --frames 30 \
        --detect_every 1 5 [--detector hog] [--min_person_px 96] [--model DIR]

Draws a street (vtfpar_jax.tools.street_scene: people of one height walking in lanes,
H.264 at crf 23 4:2:0 as a camera encodes), then for each --person_px and each
--detect_every runs the detector and ByteTrack as track_attributes does and
prints the stage table (vtfpar_jax.inference.stage_times) and MOTA, IDF1, ID switches,
recall and precision against the drawn boxes (vtfpar_jax.tools.mot_metrics). With
--model, track_attributes itself also runs on the video (crops, predictions,
drawing) and prints its full table. --min_person_px defaults to the people's
height. --json FILE keeps every row.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from vtfpar_jax import cli_errors, errors
from vtfpar_jax.inference import detect_track, detectors, stage_times
from vtfpar_jax.inference import video as video_io
from vtfpar_jax.outputs import files
from vtfpar_jax.tools import mot_metrics, street_scene


def run_one(video: str, truth, detector, detect_every: int) -> dict:
    info = video_io.probe(video)
    times = stage_times.StageTimes(info.frames)
    made = detect_track.tracks_for(video, info, detector, detect_every=detect_every,
                                   times=times, progress=False)
    scores = mot_metrics.score(truth, made.tracks, info.frames)
    print(times.table())
    print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) and k != "num_switches" else
                    f"{k} {v:g}" for k, v in scores.items()))
    return {"detect_every": detect_every, "tracks": len(made.tracks), "warnings": made.warnings,
            "stage_seconds": times.as_dict(), **scores}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="vtfpar street-bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=errors.frame_size, default=(1080, 1920),
                        help="HxW, both even (H.264 at 4:2:0, as a camera encodes); "
                        "default 1080x1920")
    parser.add_argument("--person_px", type=errors.positive_int, nargs="+", default=[96])
    parser.add_argument("--frames", type=errors.positive_int, default=30)
    parser.add_argument("--detect_every", type=errors.positive_int, nargs="+",
                        default=[1, 5])
    detectors.add_options(parser, min_person_px=None, min_person_px_shown="the people's height")
    parser.add_argument("--people_per_lane", type=errors.positive_int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="also run track_attributes with it")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    height, width = args.size
    if height % 2 or width % 2:
        parser.error(f"argument --size: {height}x{width}: H.264 at 4:2:0 needs even sides, "
                     f"e.g. {height + height % 2}x{width + width % 2}")
    for person_px in args.person_px:
        try:
            street_scene.check_fits(args.size, person_px, args.people_per_lane)
        except ValueError as e:
            parser.error(f"argument --size/--person_px/--people_per_lane: {e}")
    return cli_errors.run(lambda: _street_bench(args))


def _street_bench(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for person_px in args.person_px:
            scene = street_scene.walking_scene(args.size, person_px, args.frames, args.seed,
                                               args.people_per_lane)
            video = os.path.join(folder, f"street_{person_px}.mp4")
            truth = street_scene.write_video(scene, video)
            min_px = args.min_person_px or person_px
            detector = detectors.build(args.detector, min_person_px=min_px,
                                       score_threshold=args.score_threshold)
            for every in args.detect_every:
                print(f"\n{args.size[1]}x{args.size[0]}, {len(truth)} people {person_px} px "
                      f"tall, {args.frames} frames; {detector.description}; "
                      f"--detect_every {every}")
                rows.append({"size": list(args.size), "person_px": person_px,
                             "min_person_px": min_px, "frames": args.frames,
                             "detector": detector.description,
                             **run_one(video, truth, detector, every)})
                if args.model:
                    from vtfpar_jax.inference import track_attributes
                    track_attributes.main([video, "--model", args.model, "--detector",
                                           args.detector, "--min_person_px", str(min_px),
                                           "--detect_every", str(every), "--no-progress",
                                           "--score_threshold", str(args.score_threshold),
                                           "--out", os.path.join(folder,
                                                         f"out_{person_px}px_every{every}")])
    if args.json:
        files.write_json(args.json, rows, indent=1)
    return rows
