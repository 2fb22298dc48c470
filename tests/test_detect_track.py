"""The built-in detection path on drawn streets encoded as a camera encodes them (crf 23, 4:2:0):
small people found about as well as tall ones, nobody found on an empty street, and tracks
carried between detections with --detect_every."""

from __future__ import annotations

import numpy as np
import pytest

from vtfpar_jax.inference import detect_track, detectors, mot
from vtfpar_jax.inference import video as video_io
from vtfpar_jax.tools import mot_metrics, street_scene


def _found(video, truth: dict[int, mot.Track], detector) -> tuple[int, int]:
    """(true boxes that a detected box matches at IoU >= 0.5, true boxes), over all frames."""
    true_at: dict[int, list] = {}
    for track in truth.values():
        for b in track.boxes:
            true_at.setdefault(b.frame, []).append([b.x, b.y, b.w, b.h])
    hits = total = 0
    for number, frame in video_io.iter_frames(video):
        found = detector(frame)
        xywh = np.concatenate([found.xyxy[:, :2], found.xyxy[:, 2:] - found.xyxy[:, :2]], 1)
        true = np.asarray(true_at.get(number, [])).reshape(-1, 4)
        distances = mot_metrics.iou_distances(true, xywh)
        hits += int((~np.isnan(distances)).any(axis=1).sum())
        total += len(true)
    return hits, total


@pytest.mark.slow   # about 30 s: HOG on frames enlarged 3.3x, four streets of each height
def test_default_hog_finds_small_people_about_as_well_as_tall_ones(tmp_path):
    """On four streets (seeds 3-6) of each height. The default window alone found 0.57 of
    the 48 px people and 0.71 of the 192 px ones here; seed 3 alone, 0.48 and 0.79."""
    detector = detectors.build("hog")      # the defaults: people from 48 px
    recalls = {}
    # Frames at least 2.5 people tall: HOG's window holds a margin around the person.
    for person_px, size, per_lane in ((48, (240, 400), 3), (192, (480, 400), 2)):
        hits = total = 0
        for seed in (3, 4, 5, 6):
            scene = street_scene.walking_scene(size, person_px, num_frames=4, seed=seed,
                                               people_per_lane=per_lane)
            video = tmp_path / f"street_{person_px}_{seed}.mp4"
            truth = street_scene.write_video(scene, video)
            found, true = _found(video, truth, detector)
            hits, total = hits + found, total + true
        recalls[person_px] = hits / total
    assert abs(recalls[48] - recalls[192]) <= 0.10, recalls


def test_empty_street_gives_no_track_and_says_so(tmp_path):
    scene = street_scene.Scene((240, 320), (96, 48), 4, (), seed=3)
    video = tmp_path / "empty.mp4"
    street_scene.write_video(scene, video)
    made = detect_track.tracks_for(str(video), video_io.probe(video),
                                   detectors.build("hog"), progress=False)
    assert made.tracks == {} and made.boxes_found == 0
    assert made.warnings == ["no person was found on the 4 frame(s) searched (--min_person_px "
                             "may be above the people's height)"]


def test_tracks_are_carried_between_detections():
    """Boxes on frames 1 and 6 of a track: frames 2-5 are filled in on the straight line."""
    track = mot.Track(3, [mot.Box(1, 0, 10, 20, 40, 0.9), mot.Box(6, 50, 20, 20, 40, 0.7),
                          mot.Box(20, 90, 20, 20, 40, 0.8)])
    filled = detect_track.interpolate_gaps(track, longest=5)
    assert filled.frames == [1, 2, 3, 4, 5, 6, 20]       # the 14-frame gap is a lost track
    assert [(b.x, b.y, b.conf) for b in filled.boxes[1:5]] == [
        (10, 12, 0.7), (20, 14, 0.7), (30, 16, 0.7), (40, 18, 0.7)]


def test_implausibly_tall_boxes_are_dropped():
    boxes = detectors.Boxes([[0, 0, 10, 20], [0, 0, 50, 95], [5, 5, 30, 85]], [0.9, 0.8, 0.7])
    kept, dropped = detect_track.plausible(boxes, frame_height=100)
    assert dropped == 1 and kept.scores.tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize("spec,fragment", [
    ("onnx:missing.onnx", "--detector onnx:missing.onnx: no such file"),
    ("hf:", "--detector hf: give a Hub id or a folder"),
])
def test_bad_detector_is_one_error_line_before_the_model_loads(tmp_path, capsys, spec, fragment):
    from vtfpar_jax.inference import track_attributes
    video = tmp_path / "empty.mp4"
    street_scene.write_video(street_scene.Scene((64, 64), (32, 16), 2, (), seed=0), video)
    with pytest.raises(SystemExit) as stopped:
        track_attributes.main([str(video), "--model", str(tmp_path / "no_model"), "--detector",
                               spec, "--out", str(tmp_path / "out"), "--no-progress"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stopped.value.code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_tracks_seen_at_the_last_detection_frame_are_carried_to_the_end():
    track = mot.Track(1, [mot.Box(6, 10, 0, 8, 16), mot.Box(11, 20, 5, 8, 16)])
    carried = detect_track.extend_to(track, searched=11, last=14, frame_size=(40, 40))
    assert [(b.frame, b.x, b.y) for b in carried.boxes[2:]] == [(12, 22, 6), (13, 24, 7),
                                                                (14, 26, 8)]
    # Lost before the end: not carried; walking out of the frame: carried up to its edge.
    assert detect_track.extend_to(track, 16, 19, (40, 40)) == track
    assert detect_track.extend_to(track, 11, 14, (40, 31)).frames == [6, 11, 12]


def test_detect_frames_draws_the_frames_asked_for(tmp_path, capsys):
    from vtfpar_jax.inference import detect_frames
    video = tmp_path / "empty.mp4"
    street_scene.write_video(street_scene.Scene((64, 96), (32, 16), 3, (), seed=0), video)
    detect_frames.main([str(video), "--frames", "2", "--out", str(tmp_path / "out")])
    assert capsys.readouterr().out == "frame 2: 0 box(es), heights []\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frame_000002.png",
                                                                    "run.json"]
    with pytest.raises(SystemExit):
        detect_frames.main([str(video), "--frames", "4", "--out", str(tmp_path / "none")])
    assert "error: --frames 4..4" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    # Other frames into the same --out: refused, the first run's frames kept; --overwrite
    # replaces them whole.
    with pytest.raises(SystemExit):
        detect_frames.main([str(video), "--frames", "1", "--out", str(tmp_path / "out")])
    assert "detect's results for other inputs or options" in capsys.readouterr().err
    detect_frames.main([str(video), "--frames", "1", "--out", str(tmp_path / "out"),
                        "--overwrite"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frame_000001.png",
                                                                    "run.json"]


class _Scripted(detectors.Detector):
    """Boxes given per call: the detector's answer on each frame searched, in order."""

    def __init__(self, answers):
        self.answers = iter(answers)

    def __call__(self, frame):
        return next(self.answers)


def test_a_walker_born_between_detections_is_tracked_every_5_frames(tmp_path):
    """A person first found on frame 6, walking about 30 px (half their width) per 5
    frames, with HOG's boxes and scores on the 1080p benchmark street: ByteTrack alone never
    matched the second detection to the new track, and the person had no track at all."""
    video = tmp_path / "blank.mp4"
    street_scene.write_mp4(video, (np.zeros((200, 240, 3), np.uint8) for _ in range(21)),
                           lossless=False)
    xywh = [(143, 22, 63, 126), (110, 14, 69, 138), (81, 22, 61, 121), (54, 23, 58, 117)]
    answers = [detectors.Boxes.empty()] + [
        detectors.Boxes([[x, y, x + w, y + h]], [score])
        for (x, y, w, h), score in zip(xywh, (0.72, 0.84, 0.82, 0.77), strict=True)]
    made = detect_track.tracks_for(str(video), video_io.probe(video), _Scripted(answers),
                                   detect_every=5, progress=False)
    assert [track.frames for track in made.tracks.values()] == [list(range(6, 22))]
    found = [(b.frame, b.x, b.y, b.w, b.h) for b in next(iter(made.tracks.values())).boxes
             if b.frame % 5 == 1]
    assert found == [(6 + 5 * k, *box) for k, box in enumerate(xywh)]   # not grown


def test_a_track_found_on_few_frames_is_marked_low_confidence(tmp_path):
    """A person found on all 6 frames, a box that flickers on frames 2 and 3 only, and a
    person who enters on frame 5, found on both frames left: not doubted."""
    video = tmp_path / "blank.mp4"
    street_scene.write_mp4(video, (np.zeros((160, 240, 3), np.uint8) for _ in range(6)),
                           lossless=False)
    person = [[20 + 2 * k, 10, 60 + 2 * k, 90] for k in range(6)]
    flicker, entering = [[150, 60, 190, 140]], [[190, 70, 230, 150]]
    answers = [detectors.Boxes([person[k]] + (flicker if k in (1, 2) else [])
                               + (entering if k >= 4 else []),
                               [0.8] + ([0.6] if k in (1, 2) else []) + ([0.7] if k >= 4 else []))
               for k in range(6)]
    made = detect_track.tracks_for(str(video), video_io.probe(video), _Scripted(answers),
                                   progress=False)
    by_start = {track.frames[0]: made.evidence[i] for i, track in made.tracks.items()}
    assert by_start == {1: {"detections": 6, "detection_score": 0.8, "low_confidence": False},
                        2: {"detections": 2, "detection_score": 0.6, "low_confidence": True},
                        5: {"detections": 2, "detection_score": 0.7, "low_confidence": False}}
    flicker = next(i for i, track in made.tracks.items() if track.frames[0] == 2)
    assert made.warnings == [f"1 of 3 track(s) were found on fewer than 3 of the frames "
                             f"searched (track(s) {flicker}): marked low_confidence in "
                             "tracks.json, perhaps not a person"]
