"""`vtfpar track` (vtfpar_jax.inference.track_attributes) on a street video made here: tracks,
attributes, outputs, errors.

Six pedestrians drawn by the synthetic set's own painter (attributes known) walk
across a background in three lanes; their true boxes are written in MOT format.
The demo model (tests/conftest.py: demo_model) predicts them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vtfpar_jax import attributes
from vtfpar_jax.evaluation import decisions
from vtfpar_jax.inference import mot, predict, track_attributes, tracklets, video
from vtfpar_jax.models import normalization
from vtfpar_jax.tools import street_scene

pytestmark = pytest.mark.slow

FRAME_SIZE = (320, 480)      # (H, W)
PERSON_SIZE = (96, 48)       # (H, W): the training crops' 2:1
NUM_FRAMES = 36
LANES = (8, 112, 216)        # top y of each lane: boxes never overlap
# (id, lane, first frame, number of frames, x at the first frame, x step per frame)
PEOPLE = ((1, 0, 1, 16, 10, 8), (2, 1, 3, 18, 400, -7), (3, 2, 1, 14, 150, 6),
          (4, 0, 20, 17, 380, -9), (5, 1, 24, 13, 60, 10), (6, 2, 18, 19, 300, -5))


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> dict:
    """{'video', 'tracks' (MOT file), 'labels' {id: (A,)}, 'tracklets' {id: (n, 96, 48, 3)}}."""
    from input_pipeline import synthetic_figures
    root = tmp_path_factory.mktemp("street")
    rng = np.random.default_rng(17)
    background = street_scene.background(rng, FRAME_SIZE)
    people = {}
    for pid, lane, first, count, x0, dx in PEOPLE:
        look, jpegs = synthetic_figures.draw_tracklet(np.random.default_rng([17, pid]),
                                                      PERSON_SIZE, count)
        crops = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])
        people[pid] = dict(lane=lane, first=first, x0=x0, dx=dx, labels=look.labels(),
                           crops=crops)
    frames, lines = [], []
    for number in range(1, NUM_FRAMES + 1):
        frame = background.copy()
        for pid, p in people.items():
            t = number - p["first"]
            if 0 <= t < len(p["crops"]):
                x, y = p["x0"] + p["dx"] * t, LANES[p["lane"]]
                frame[y:y + PERSON_SIZE[0], x:x + PERSON_SIZE[1]] = p["crops"][t]
                lines.append(f"{number},{pid},{x},{y},{PERSON_SIZE[1]},{PERSON_SIZE[0]},1,-1,-1,-1")
        frames.append(frame)
    street_scene.write_mp4(root / "street.mp4", frames, lossless=True, fps=10)
    (root / "tracks.txt").write_text("\n".join(lines) + "\n")
    return {"video": root / "street.mp4", "tracks": root / "tracks.txt", "root": root,
            "labels": {pid: p["labels"] for pid, p in people.items()},
            "tracklets": {pid: p["crops"] for pid, p in people.items()}}


@pytest.fixture(scope="module")
def loaded(demo_model):
    from vtfpar_jax.state import model_dir
    return model_dir.load(str(demo_model["model"]))


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = 0
    try:
        track_attributes.main([str(a) for a in args] + ["--no-progress"])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _agreement(probs: np.ndarray, labels: np.ndarray,
               attribute_set: attributes.AttributeSet) -> np.ndarray:
    """(N, groups) bool: each group's published decision equals the truth."""
    rows = []
    for p, y in zip(probs, labels, strict=True):
        decided = decisions.decided_columns(decisions.decide(p, attribute_set), attribute_set)
        rows.append([set(g.columns) & decided == {c for c in g.columns if y[c]}
                     for g in attribute_set.groups])
    return np.asarray(rows)


@pytest.fixture(scope="module")
def result(street, demo_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracks_out")
    record = track_attributes.main([str(street["video"]), "--model", str(demo_model["model"]),
                                    "--tracks", str(street["tracks"]), "--out", str(out),
                                    "--window", "8", "--context", "0", "--no-progress"])
    return {"out": out, "record": record}


def test_every_track_is_recovered_with_its_boxes(street, result):
    written = json.loads((result["out"] / "tracks.json").read_text())
    assert written == json.loads(json.dumps(result["record"]))
    truth = mot.read_tracks(street["tracks"])
    assert sorted(int(i) for i in written["tracks"]) == sorted(truth)
    for track_id, track in truth.items():
        record = written["tracks"][str(track_id)]
        assert record["first_frame"] == track.boxes[0].frame
        assert record["last_frame"] == track.boxes[-1].frame
        assert [b[0] for b in record["boxes"]] == track.frames
        assert record["num_boxes"] == len(track.boxes)
        # --window 8 over 13..19 boxes: windows of 8 frames, stride 4, the last one at the end.
        spans = tracklets.window_spans(len(track.boxes), 8)
        assert [(w["first_frame"], w["last_frame"]) for w in record["windows"]] == [
            (track.frames[s], track.frames[e - 1]) for s, e in spans]
    assert written["warnings"] == []


def test_track_probabilities_are_predict_on_the_tracklet(street, result, loaded):
    """With no context, a track's crops are the pasted tracklet frames (through a lossless
    codec), so its whole-track probabilities are `predict` on those frames."""
    size = (loaded.model_cfg.backbone.image_size,) * 2
    frames = loaded.model_cfg.frames
    for track_id, crops in street["tracklets"].items():
        chosen = crops[video.frame_indices(len(crops), frames)]
        clip = normalization.normalize(np.stack([video.resize(f, size) for f in chosen]))
        expected = predict.predict_clips(loaded, clip[None])[0]
        got = np.asarray(list(result["record"]["tracks"][str(track_id)]["probabilities"]
                              .values()))
        # 4:4:4 at crf 0 is lossless in YUV; RGB <-> YUV rounding moves pixels a level or two.
        np.testing.assert_allclose(got, expected, atol=0.02)


def test_decided_attributes_agree_with_the_truth_as_on_the_test_split(street, result, loaded,
                                                                      demo_model):
    """Group decisions right on the street's tracks about as often as on the model's test
    split: no worse than the test split's rate minus three standard errors of the difference."""
    import input_pipeline
    from input_pipeline import pipeline
    from vtfpar_jax.models import preprocess
    builder = input_pipeline.get_builder("synthetic_pedestrians/tiny", str(demo_model["data_dir"]))
    size = (loaded.model_cfg.backbone.image_size,) * 2
    probs, labels = [], []
    for batch in pipeline.eval_batches(builder, "test", batch_size=4,
                                       frames=loaded.model_cfg.frames):
        clips = np.asarray(preprocess.model_input(batch["video"], size,
                                                  preprocess.Preprocess(augment=False)))
        probs.append(predict.predict_clips(loaded, clips))
        labels.append(np.asarray(batch["labels"]))
    attribute_set = loaded.attribute_set
    test_rate = _agreement(np.concatenate(probs), np.concatenate(labels), attribute_set)
    tracks = result["record"]["tracks"]
    ids = sorted(street["labels"])
    street_probs = np.asarray([list(tracks[str(i)]["probabilities"].values()) for i in ids])
    street_rate = _agreement(street_probs, np.stack([street["labels"][i] for i in ids]),
                             attribute_set)
    p = test_rate.mean()
    noise = np.sqrt(max(p * (1 - p), 0.05) * (1 / test_rate.size + 1 / street_rate.size))
    assert street_rate.mean() >= p - 3 * noise, (street_rate.mean(), p, noise)
    # The recorded decisions are the published rules on the recorded probabilities.
    for i in ids:
        record = tracks[str(i)]
        assert record["decisions"] == decisions.decide(
            np.asarray(list(record["probabilities"].values())), attribute_set)


def test_labels_of_people_close_together_do_not_cover_each_other():
    from vtfpar_jax.inference.track_outputs import place_labels
    # Two people side by side at the top of a small frame, one at its bottom right; labels
    # 40x30. The first's label above, moved into the frame, would cover both people: below
    # instead (covering 60 px of the second's box). The second's below would cover the
    # first's label: above, moved in (525 px of boxes). The third's fits above its box.
    boxes = [(10, 5, 20, 40), (25, 10, 20, 40), (140, 100, 20, 20)]
    placed = place_labels(boxes, [(40, 30)] * 3, (120, 160))
    assert placed == [(10, 47, 50, 77), (25, 0, 65, 30), (120, 68, 160, 98)]


def test_annotated_video_and_contact_sheet(street, result):
    source = video.probe(street["video"])
    annotated = video.probe(result["out"] / "annotated.mp4")
    assert (annotated.frames, annotated.width, annotated.height) == (
        source.frames, source.width, source.height) == (NUM_FRAMES, FRAME_SIZE[1], FRAME_SIZE[0])
    # Boxes are drawn: frame 5 differs from the source where person 1's box outline runs.
    first = next(f for n, f in video.iter_frames(result["out"] / "annotated.mp4") if n == 5)
    plain = next(f for n, f in video.iter_frames(street["video"]) if n == 5)
    box = mot.read_tracks(street["tracks"])[1].boxes[4]
    x, y = int(box.x), int(box.y)
    outline = first[y:y + int(box.h), x].astype(int) - plain[y:y + int(box.h), x].astype(int)
    assert np.abs(outline).mean() > 40
    sheet = Image.open(result["out"] / "contact_sheet.png")
    assert sheet.format == "PNG"
    rows = (sheet.size[1] - 28) // (tracklets.THUMBNAIL[0] + 12)
    assert rows == len(PEOPLE)
    assert mot.read_tracks(result["out"] / "tracks.txt").keys() == \
        mot.read_tracks(street["tracks"]).keys()


def test_another_run_into_the_same_out_is_refused_and_changes_nothing(street, result,
                                                                     demo_model, capsys,
                                                                     monkeypatch):
    from vtfpar_jax.state import model_dir
    monkeypatch.setattr(model_dir, "load", lambda *a, **k: pytest.fail("model loaded"))
    out = result["out"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["annotated.mp4", "contact_sheet.png", "run.json", "tracks.json",
                              "tracks.txt"]
    code, _, err = _cli(capsys, street["video"], "--model", demo_model["model"], "--tracks",
                        street["tracks"], "--out", out, "--window", "4")
    assert code == 1
    assert err.startswith(f"error: --out {out} holds annotated.mp4, contact_sheet.png, "
                          "run.json and 2 more (track_attributes's results for other inputs")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_tiny_video_and_boxes_are_warned_and_recorded(demo_model, tmp_path, capsys):
    path = tmp_path / "tiny.mp4"
    video.write_video(path, np.full((4, 8, 8, 3), 200, np.uint8))
    tracks = tmp_path / "tracks.txt"
    tracks.write_text("".join(f"{f},1,0,0,4,8,1\n" for f in range(1, 5)))
    code, _, err = _cli(capsys, path, "--model", demo_model["model"], "--tracks", tracks,
                        "--out", tmp_path / "out")
    assert code == 0, err
    recorded = json.loads((tmp_path / "out" / "tracks.json").read_text())["warnings"]
    assert any("the video is 8x8, smaller than the model's" in w for w in recorded), recorded
    assert any(w.startswith("track 1: a box of 4x8 pixels on frame 1") for w in recorded)
    for warning in recorded:
        assert f"warning: {warning}" in err


def test_collector_holds_only_open_clips():
    """Crops of a clip are kept only between its first and last sampled frame."""
    tracks = {i: mot.Track(i, [mot.Box(f, 0, 0, 8, 16) for f in range(s, s + 10)])
              for i, s in ((1, 1), (2, 30), (3, 60))}
    plans = tracklets.plan(tracks, 4, window=None)
    collector = tracklets.CropCollector(tracks, plans, 16)
    frame = np.zeros((32, 32, 3), np.uint8)
    most, done = 0, []
    for number in range(1, 80):
        done += list(collector.add(number, frame))
        most = max(most, collector.open_clips)
    assert most == 1 and len(done) == 3 and not collector.unfinished()


# --- bad input -----------------------------------------------------------------------------


def test_unreadable_video_is_one_line(demo_model, street, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 no video here")
    code, _, err = _cli(capsys, bad, "--model", demo_model["model"], "--tracks",
                        street["tracks"], "--out", tmp_path / "out")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "broken.mp4" in lines[0]
    assert "not a readable video" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,fragment", [
    ("1,1,10,10,20,40,1\n2,1,10,oops,20,40,1\n", "line 2"),
    ("1,1,10,10,20,40,1\n\n3,1,10,10\n", "line 3"),
    ("0,1,10,10,20,40,1\n", "line 1: frame '0'"),
    ("1,1,10,10,-5,40,1\n", "line 1: box"),
    ("", "no tracks"),
    ("# only a comment\n\n", "no tracks"),
])
def test_bad_tracks_file_is_one_line(demo_model, street, tmp_path, capsys, content, fragment):
    tracks = tmp_path / "tracks.txt"
    tracks.write_text(content)
    code, _, err = _cli(capsys, street["video"], "--model", demo_model["model"], "--tracks",
                        tracks, "--out", tmp_path / "out")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(tracks) in lines[0] and fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_boxes_outside_the_frame_are_clamped_with_warnings(demo_model, street, tmp_path,
                                                           capsys):
    h, w = FRAME_SIZE
    tracks = tmp_path / "tracks.txt"
    tracks.write_text(f"1,7,-20,10,48,96,1\n2,7,{w - 30},10,48,96,1\n3,7,100,{h + 50},48,96,1\n"
                      f"4,7,100,100,48,96,1\n{NUM_FRAMES + 4},7,100,100,48,96,1\n")
    out = tmp_path / "out"
    code, _, err = _cli(capsys, street["video"], "--model", demo_model["model"], "--tracks",
                        tracks, "--out", out)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 4, err
    assert "track 7, frame 1" in warnings[0] and "clamped to (0, 10, 28, 96)" in warnings[0]
    assert "track 7, frame 2" in warnings[1] and "clamped" in warnings[1]
    assert "track 7, frame 3" in warnings[2] and "dropped" in warnings[2]
    assert f"track 7, frame {NUM_FRAMES + 4}" in warnings[3] and "last frame" in warnings[3]
    record = json.loads((out / "tracks.json").read_text())
    assert record["warnings"] == [w.removeprefix("warning: ") for w in warnings]
    assert [b[:5] for b in record["tracks"]["7"]["boxes"]] == [
        [1, 0, 10, 28, 96], [2, w - 30, 10, 30, 96], [4, 100, 100, 48, 96]]

    # Every box outside: an error, nothing written.
    tracks.write_text(f"1,7,{w + 5},10,48,96,1\n")
    code, _, err = _cli(capsys, street["video"], "--model", demo_model["model"], "--tracks",
                        tracks, "--out", tmp_path / "none")
    assert code == 1 and "no track has a box inside the video" in err
    assert not (tmp_path / "none").exists()


# --- the built-in path: detections, then ByteTrack -------------------------------------------


def _check_outputs(out: Path, source: Path) -> dict:
    """tracks.json, tracks.txt, contact_sheet.png and annotated.mp4 agree and are readable."""
    record = json.loads((out / "tracks.json").read_text())
    made = mot.read_tracks(out / "tracks.txt") if record["tracks"] else {}
    assert sorted(made) == sorted(int(i) for i in record["tracks"])
    for track_id, track in record["tracks"].items():
        assert [b[0] for b in track["boxes"]] == made[int(track_id)].frames
        assert len(track["probabilities"]) == 24 and len(track["decisions"]) == 11
    assert Image.open(out / "contact_sheet.png").format == "PNG"
    a, b = video.probe(out / "annotated.mp4"), video.probe(source)
    assert (a.frames, a.width, a.height) == (b.frames, b.width, b.height)
    return record


def _iou(a: list[float], b: list[float]) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    w = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    h = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    return w * h / (aw * ah + bw * bh - w * h)


def test_detections_file_is_tracked_into_the_true_tracks(street, demo_model, tmp_path, capsys):
    """The true boxes given as anonymous detections (id -1): ByteTrack links them back into
    one track per person."""
    truth = mot.read_tracks(street["tracks"])
    detections = tmp_path / "detections.txt"
    detections.write_text("".join(f"{b.frame},-1,{b.x},{b.y},{b.w},{b.h},0.9\n"
                                  for t in truth.values() for b in t.boxes))
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, street["video"], "--model", demo_model["model"],
                             "--detections", detections, "--out", out)
    assert code == 0, err
    record = _check_outputs(out, street["video"])
    # The stage table: every stage timed, printed and recorded.
    assert list(record["stage_seconds"]) == ["load", "decode", "detect", "track", "crop",
                                             "predict", "draw"]
    assert all(record["stage_seconds"][s]["seconds"] > 0
               for s in ("load", "decode", "predict", "draw"))
    assert record["stage_seconds"]["load"]["frames_per_s"] is None   # once, not per frame
    assert "stage " in stdout and "\ntotal " in stdout
    found = {int(i): {b[0]: b[1:] for b in t["boxes"]} for i, t in record["tracks"].items()}
    assert len(found) == len(truth)
    chosen = []
    for track in truth.values():
        boxes = {b.frame: [b.x, b.y, b.w, b.h] for b in track.boxes}
        # The found track that holds this person's box on the most frames holds it on all
        # (ByteTrack confirms a new track one frame late; its first box is taken back).
        overlaps = {i: [f for f in set(f_boxes) & set(boxes) if _iou(f_boxes[f], boxes[f]) > 0.9]
                    for i, f_boxes in found.items()}
        best = max(overlaps, key=lambda i: len(overlaps[i]))
        assert len(overlaps[best]) == len(track.frames), (track.id, overlaps)
        chosen.append(best)
    assert len(set(chosen)) == len(truth)   # one found track per person


def test_no_one_found_still_writes_valid_outputs(demo_model, tmp_path, capsys):
    """HOG + ByteTrack on an empty street (the background alone): no track, and every
    output is still written and readable."""
    frames = [street_scene.background(np.random.default_rng(3), FRAME_SIZE)] * 6
    source = tmp_path / "empty.mp4"
    street_scene.write_mp4(source, frames, lossless=False, fps=10)
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, source, "--model", demo_model["model"], "--out", out)
    assert code == 0, err
    record = _check_outputs(out, source)
    assert record["tracks"] == {} and record["tracks_from"] == "hog+bytetrack"
    assert "0 track(s)" in stdout


def test_hog_detector_finds_tall_people_in_a_camera_encoded_mp4(demo_model, tmp_path, capsys):
    """Two figures 192 px tall walk across; the mp4 is what a camera's encoder makes (H.264,
    crf 23, 4:2:0). HOG + ByteTrack must follow at least one of them."""
    from input_pipeline import synthetic_figures
    rng = np.random.default_rng(5)
    h, w, ph, pw, count = 400, 560, 192, 96, 12
    background = np.clip(120 + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    people = []
    for pid, (x0, dx, y) in enumerate(((20, 14, 10), (440, -12, 200)), start=1):
        _, jpegs = synthetic_figures.draw_tracklet(np.random.default_rng([5, pid]), (ph, pw),
                                                   count)
        people.append((pid, x0, dx, y, [np.asarray(Image.open(io.BytesIO(j)).convert("RGB"))
                                       for j in jpegs]))
    frames, truth = [], {}
    for t in range(count):
        frame = background.copy()
        for pid, x0, dx, y, crops in people:
            x = x0 + dx * t
            frame[y:y + ph, x:x + pw] = crops[t]
            truth[(pid, t + 1)] = [x, y, pw, ph]
        frames.append(frame)
    source = tmp_path / "camera.mp4"
    street_scene.write_mp4(source, frames, lossless=False, fps=10)
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, source, "--model", demo_model["model"], "--out", out)
    assert code == 0, err
    record = _check_outputs(out, source)
    assert record["tracks"] and record["tracks_from"] == "hog+bytetrack"
    assert f"{len(record['tracks'])} track(s)" in stdout
    followed = {pid for track in record["tracks"].values() for f, *box in track["boxes"]
                for pid in (1, 2) if _iou(box, truth[(pid, f)]) > 0.3}
    assert followed, record["tracks"]
    assert all(track["detections"] <= count and 0 < track["detection_score"] < 1
               and (track["detections"] < 3 or not track["low_confidence"])
               for track in record["tracks"].values()), record["tracks"]


def test_empty_detections_file_is_one_line(street, demo_model, tmp_path, capsys):
    detections = tmp_path / "detections.txt"
    detections.write_text("\n")
    code, _, err = _cli(capsys, street["video"], "--model", demo_model["model"],
                        "--detections", detections, "--out", tmp_path / "out")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "no detections" in lines[0]
    assert not (tmp_path / "out").exists()
