"""A few frames of a video with a detector's person boxes drawn: a look before a long run.

    vtfpar detect VIDEO --frames 100 250 [--detector hog]
        [--min_person_px 48] [--score_threshold 0.5] [--scale 0.5] [--out frames_out]
        [--overwrite]

Writes OUT/frame_NNNNNN.png per frame asked for (boxes in red, the picture
scaled by --scale) and prints each frame's number of boxes and their heights.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

from vtfpar_jax import cli_errors
from vtfpar_jax.errors import UserError
from vtfpar_jax.inference import detectors
from vtfpar_jax.inference import video as video_io
from vtfpar_jax.outputs import out_folder


def draw(frame: np.ndarray, boxes: detectors.Boxes, scale: float) -> Image.Image:
    image = Image.fromarray(frame)
    pen = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes.xyxy:
        pen.rectangle([x0, y0, x1, y1], outline=(255, 0, 0), width=max(2, round(2 / scale)))
    if scale != 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.BILINEAR)
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vtfpar detect",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, nargs="+", required=True,
                        help="frame numbers, from 1")
    detectors.add_options(parser)
    parser.add_argument("--scale", type=float, default=0.5)
    cli_errors.add_out_options(parser, "frames for the same video and options", "frames_out")
    return cli_errors.parse_and_run(parser, argv, _detect)


def _detect(args: argparse.Namespace) -> None:
    info = video_io.probe(args.video)
    wanted = sorted(set(args.frames))
    if wanted[0] < 1 or wanted[-1] > info.frames:
        raise UserError(f"--frames {wanted[0]}..{wanted[-1]}: {args.video} has frames "
                        f"1..{info.frames}")
    with out_folder.OutFolder(
            args.out, "detect", {"video": os.path.abspath(args.video), "frames": wanted,
                                 "detector": args.detector,
                                 "min_person_px": args.min_person_px,
                                 "score_threshold": args.score_threshold,
                                 "scale": args.scale},
            args.overwrite, reads=[args.video]) as out:   # checked and locked first
        detector = detectors.build(args.detector, min_person_px=args.min_person_px,
                                   score_threshold=args.score_threshold)
        with out.filling(step=None) as folder:
            _draw_frames(args, wanted, detector, folder)


def _draw_frames(args: argparse.Namespace, wanted: list[int], detector, folder: str) -> None:
    for number, frame in video_io.iter_frames(args.video):
        if number in wanted:
            boxes = detector(frame)
            draw(frame, boxes, args.scale).save(
                os.path.join(folder, f"frame_{number:06d}.png"), optimize=True)
            heights = (boxes.xyxy[:, 3] - boxes.xyxy[:, 1]).round().astype(int).tolist()
            print(f"frame {number}: {len(boxes)} box(es), heights {heights}")
        if number >= wanted[-1]:
            break
