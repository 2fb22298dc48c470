"""Attributes per person in a street video: tracks in, per-track attributes and drawings out.

    vtfpar track VIDEO --model DIR [--tracks FILE] [--window N]
        [--detector hog|onnx:MODEL.onnx|hf:HUB_ID_OR_FOLDER] [--min_person_px 48]
        [--detect_every N] [--out DIR]

Tracks come from --tracks, a MOTChallenge text file (vtfpar_jax.inference.mot),
or, without it, from a person detector and ByteTrack
(vtfpar_jax.inference.detect_track; the `video` extra). Each track is cropped
from the frames and predicted as a tracklet, over the whole track and, with
--window N, over each sliding window of N of its frames
(vtfpar_jax.inference.tracklets); clips of all tracks are batched through
`predict.predict_clips`. The video is decoded as a stream, twice (crops, then
the annotated copy), and never held.

OUT (default tracks_out/) gets tracks.json, annotated.mp4, contact_sheet.png and
tracks.txt, and a table gives the seconds and frames/s of each stage
(vtfpar_jax.inference.stage_times). docs/inference.md, "Attributes per person in
a street video", says what each holds and how bad input is refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
from tqdm import tqdm

from vtfpar_jax import cli_errors, errors
from vtfpar_jax.evaluation import decisions
from vtfpar_jax.inference import (
    detectors,
    mot,
    predict,
    stage_times,
    track_outputs,
    tracklets,
)
from vtfpar_jax.inference import video as video_io
from vtfpar_jax.models import normalization
from vtfpar_jax.outputs import files, out_folder, stop_signals
from vtfpar_jax.state import model_dir


def predict_tracks(path: str, tracks: dict[int, mot.Track], loaded: model_dir.LoadedModel,
                   num_frames: int, window: int | None, batch: int, aspect: float,
                   context: float, progress: bool, times: stage_times.StageTimes
                   ) -> tuple[dict[tracklets.ClipPlan, np.ndarray], dict[int, np.ndarray]]:
    """(probabilities per clip plan, contact-sheet thumbnails per track id), in one pass.
    Clips go to the model `batch` at a time; the last call is padded to `batch` by
    repeating a clip, so every call has one shape and compiles once."""
    cfg = loaded.model_cfg
    plans = tracklets.plan(tracks, cfg.frames, window)
    collector = tracklets.CropCollector(tracks, plans, cfg.backbone.image_size, aspect, context)
    probabilities: dict[tracklets.ClipPlan, np.ndarray] = {}
    thumbnails: dict[int, np.ndarray] = {}
    pending: list[tracklets.Clip] = []
    track_bar = tqdm(total=len(tracks), desc="tracks", unit="track", position=1,
                     disable=not progress, leave=False)

    def predict_batch(clips: list[tracklets.Clip]) -> None:
        crops = [c.crops for c in clips]
        crops += [crops[-1]] * (batch - len(crops))
        probs = predict.predict_clips(
            loaded, normalization.normalize(np.stack(crops), loaded.normalization))
        for clip, row in zip(clips, probs, strict=False):
            probabilities[clip.plan] = row
            if clip.plan.window is None:
                thumbnails[clip.plan.track_id] = clip.thumbnails
                track_bar.update(1)

    last_wanted = max((max(p.sampled) for p in plans), default=0)
    with tqdm(total=num_frames, desc="frames (crops)", unit="frame", position=0,
              disable=not progress, leave=False) as frame_bar:
        for number, frame in times.timed("decode", video_io.iter_frames(path)):
            with times.stage("crop"):
                pending += collector.add(number, frame)
            with times.stage("predict"):
                while len(pending) >= batch:
                    predict_batch(pending[:batch])
                    del pending[:batch]
            frame_bar.update(1)
            if number >= last_wanted:   # no clip needs a later frame
                break
    with times.stage("predict"):
        if pending:
            predict_batch(pending)
    track_bar.close()
    missing = collector.unfinished()
    if missing:   # boxes past the probed end were dropped: the decoder gave fewer frames
        raise video_io.InputError(f"{path}: decoding ended before frame "
                                  f"{missing[0].sampled[-1]}, which track "
                                  f"{missing[0].track_id} needs")
    return probabilities, thumbnails


def _records(tracks, probabilities, loaded, threshold) -> dict[int, dict[str, Any]]:
    """tracks.json's record per track: its whole-track clip, then its windows in order."""
    whole = {p.track_id: probs for p, probs in probabilities.items() if p.window is None}
    windows = sorted((p for p in probabilities if p.window is not None), key=lambda p: p.window)
    return {i: track_outputs.track_record(
                track, whole[i],
                [(p.first, p.last, probabilities[p]) for p in windows if p.track_id == i],
                loaded.attribute_set, threshold)
            for i, track in tracks.items()}


def write_annotated(path: str, out_path: str, info: video_io.VideoInfo,
                    tracks: dict[int, mot.Track], records: dict[int, dict[str, Any]],
                    progress: bool, times: stage_times.StageTimes) -> None:
    """The video again, with boxes and labels; written whole or not at all (a temporary
    file renamed when complete)."""
    boxes_at: dict[int, list] = {}
    for track in tracks.values():
        for b in track.boxes:
            boxes_at.setdefault(b.frame, []).append((track.id, (b.x, b.y, b.w, b.h)))
    labels = {i: track_outputs.top_decided(r) for i, r in records.items()}
    with files.atomic_file(out_path) as temporary, video_io.Writer(
            temporary, info.width, info.height, info.fps, container_format="mp4") as writer:
        for number, frame in tqdm(times.timed("decode", video_io.iter_frames(path)),
                                  total=info.frames, desc="frames (annotated video)",
                                  unit="frame", disable=not progress, leave=False):
            with times.stage("draw"):
                writer.write(track_outputs.annotate(frame, boxes_at.get(number, []), labels))


def too_small(info: video_io.VideoInfo, tracks: dict[int, mot.Track],
              image_size: int) -> list[str]:
    """Warnings for a video smaller than the model's input and for tracks with boxes under
    predict.MIN_PERSON_SIDE pixels: their crops are upscaled from few pixels, so their
    attributes are guesses."""
    found = []
    if min(info.width, info.height) < image_size:
        found.append(f"the video is {info.width}x{info.height}, smaller than the model's "
                     f"{image_size}x{image_size} input: every crop is upscaled, the "
                     "attributes are guesses")
    for track in tracks.values():
        smallest = min(track.boxes, key=lambda b: min(b.w, b.h))
        if min(smallest.w, smallest.h) < predict.MIN_PERSON_SIDE:
            found.append(f"track {track.id}: a box of {smallest.w:g}x{smallest.h:g} pixels on "
                         f"frame {smallest.frame} (under {predict.MIN_PERSON_SIDE}): its "
                         "attributes are guesses")
    return found


def run(video: str, loaded: model_dir.LoadedModel, tracks: dict[int, mot.Track], out: str,
        *, window: int | None = None, batch: int = 8, aspect: float = tracklets.TRAINING_ASPECT,
        context: float = tracklets.CONTEXT, threshold: float | None = None,
        info: video_io.VideoInfo | None = None, about: dict[str, Any] | None = None,
        evidence: dict[int, dict[str, Any]] | None = None, progress: bool = True,
        times: stage_times.StageTimes | None = None) -> dict[str, Any]:
    """Predict every track and write OUT's files; returns tracks.json's content.
    `evidence`: per track, what the detector found of it (detect_track.evidence), added to
    its record; None for tracks given by the user. `threshold` None: the head's own
    (decisions.default_threshold)."""
    cfg = loaded.model_cfg
    threshold = decisions.default_threshold(cfg.head) if threshold is None else threshold
    info = info or video_io.probe(video)
    times = times or stage_times.StageTimes(info.frames)
    tracks, warnings = mot.fit_to_video(tracks, info.width, info.height, info.frames)
    warnings += too_small(info, tracks, cfg.backbone.image_size)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    probabilities, thumbnails = predict_tracks(video, tracks, loaded, info.frames, window,
                                               batch, aspect, context, progress, times)
    records = _records(tracks, probabilities, loaded, threshold)
    for track_id, record in records.items():
        record.update((evidence or {}).get(track_id, {}))
    result = {
        **(about or {}), "video": video,
        "video_frames": info.frames, "width": info.width, "height": info.height,
        "fps": float(info.fps), "step": loaded.step, "frames_per_clip": cfg.frames,
        "image_size": [cfg.backbone.image_size] * 2,
        "normalization": loaded.normalization,
        "crop": {"aspect": aspect, "context": context},
        "window": window, "attribute_set": loaded.attribute_set.name, "head": cfg.head,
        "threshold": threshold, "decision_rules": decisions.decision_rules(cfg.head, threshold),
        "warnings": warnings,
        "tracks": {str(i): r for i, r in records.items()},
    }
    os.makedirs(out, exist_ok=True)
    # The video first: its pass decodes to the last frame (the crops' pass may stop early),
    # so a decoding error there leaves no record of a run that did not finish.
    write_annotated(video, os.path.join(out, "annotated.mp4"), info, tracks, records, progress,
                    times)
    mot.write_tracks(os.path.join(out, "tracks.txt"), tracks)
    sheet = track_outputs.contact_sheet(
        [{"record": records[i], "thumbnails": thumbnails[i]} for i in sorted(records)],
        cfg.frames)
    files.save_figure(sheet, os.path.join(out, "contact_sheet.png"))
    result["stage_seconds"] = times.as_dict()   # the drawing pass included
    files.write_json(os.path.join(out, "tracks.json"), result, indent=1)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="vtfpar track",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a video file (mp4, avi, ...; decoded with PyAV)")
    predict.add_options(parser, out_default="tracks_out")
    parser.add_argument("--tracks", default=None,
                        help="MOTChallenge tracks (frame,id,x,y,w,h,conf,...); default: "
                        "detect and track people (needs the 'video' extra)")
    parser.add_argument("--detections", default=None,
                        help="without --tracks: person detections in MOT format (id -1) to "
                        "track instead of running a detector")
    detectors.add_options(parser)
    parser.add_argument("--detect_every", type=errors.positive_int,
                        default=1, help="run the detector on every N-th frame; tracks are "
                        "carried between (default %(default)s)")
    parser.add_argument("--window", type=errors.positive_int, default=None,
                        help="also predict each sliding window of N track frames "
                        "(stride N // 2)")
    parser.add_argument("--batch", type=errors.positive_int, default=8,
                        help="clips per model call (default %(default)s)")
    parser.add_argument("--context", type=float, default=tracklets.CONTEXT,
                        help="margin added on each side of a box, as a fraction of its size "
                        "(default %(default)s)")
    parser.add_argument("--aspect", type=float, default=tracklets.TRAINING_ASPECT,
                        help="height / width of the crops (default %(default)s, as MARS's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return cli_errors.parse_and_run(parser, argv, _track_attributes)


def _track_attributes(args: argparse.Namespace) -> dict[str, Any]:
    if args.tracks and args.detections:
        cli_errors.fail("--tracks and --detections: give one (tracks are used as they are; "
                        "detections are tracked first)")
    if args.context < 0 or args.aspect <= 0:
        cli_errors.fail(f"--context {args.context} / --aspect {args.aspect}: expected "
                        "context >= 0 and aspect > 0")
    # The inputs, the detector and --out first, then the model: the cheapest mistakes are
    # reported soonest.
    info = video_io.probe(args.video)
    tracks = mot.read_tracks(args.tracks) if args.tracks else None
    detections = mot.read_detections(args.detections) if args.detections else None
    if tracks is not None and not mot.fit_to_video(tracks, info.width, info.height,
                                                   info.frames)[0]:
        cli_errors.fail(f"{args.tracks}: no track has a box inside the video "
                        f"({info.width}x{info.height}, {info.frames} frames)")
    detector = None if tracks is not None or detections is not None else detectors.build(
        args.detector, min_person_px=args.min_person_px, score_threshold=args.score_threshold)
    made_by = f"{args.detector}+bytetrack"
    tracks_from = args.tracks or args.detections or made_by
    with out_folder.OutFolder(
            args.out, "track_attributes",
            {"model": model_dir.identity(args.model), "video": os.path.abspath(args.video),
             "tracks_from": os.path.abspath(tracks_from) if tracks_from != made_by else made_by,
             "min_person_px": args.min_person_px if detector else None,
             "score_threshold": args.score_threshold if detector else None,
             "detect_every": args.detect_every if detector else 1,
             "step": args.step, "window": args.window, "context": args.context,
             "aspect": args.aspect, "threshold": args.threshold},
            args.overwrite, reads=[args.model, args.video, args.tracks,
                                   args.detections]) as out:
        return _track_into(out, args, info, tracks, detections, detector, tracks_from)


def _track_into(out: out_folder.OutFolder, args: argparse.Namespace, info, tracks,
                detections, detector, tracks_from: str) -> dict[str, Any]:
    times, about, evidence = stage_times.StageTimes(info.frames), {}, None
    with times.stage("load"):
        loaded = model_dir.load_announced(args.model, step=args.step)
    out.check_step(loaded.step)
    if tracks is None:
        from vtfpar_jax.inference import detect_track
        made = detect_track.tracks_for(args.video, info, detector, detections,
                                       args.detect_every, times,
                                       progress=not args.no_progress)
        for note in made.warnings:
            print(f"warning: {note}", file=sys.stderr)
        tracks, evidence = made.tracks, made.evidence
        about = {"detector": detector.description if detector else None,
                 "detect_every": args.detect_every if detector else 1,
                 "detection_warnings": made.warnings}
    stop_signals.on_stop(f"nothing was written to {args.out}; rerun the same command")
    with out.filling(loaded.step, unreadable_newer_checkpoints=loaded.unreadable_newer) as folder:
        result = run(args.video, loaded, tracks, folder, window=args.window,
                     batch=args.batch, aspect=args.aspect, context=args.context,
                     threshold=args.threshold, info=info, progress=not args.no_progress,
                     times=times, evidence=evidence, about={"model": args.model, **about,
                                                            "tracks_from": tracks_from})
    for track_id, record in result["tracks"].items():
        doubt = (f" [low confidence: found on {record['detections']} frame(s)]"
                 if record.get("low_confidence") else "")
        print(f"track {track_id} (frames {record['first_frame']}-{record['last_frame']}): "
              f"{record['summary']}{doubt}")
    print(f"{len(result['tracks'])} track(s): {args.out}/tracks.json, annotated.mp4, "
          "contact_sheet.png")
    print(times.table())
    return result
