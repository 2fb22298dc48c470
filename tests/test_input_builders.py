"""The TFDS builders: synthetic, MARS and DukeMTMC-VID on dummy data made in tmp dirs."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import duke, get_builder, mars, synthetic
from vtfpar_jax import attributes

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_dummy_data import make_dummy_data  # noqa: E402

BUILDER_NAMES = {"mars": "mars_attribute", "duke": "dukemtmc_vid_attribute"}
SKIP = {"frames": tfds.decode.SkipDecoding()}


def _prepare(name: str, data_dir: Path, manual_dir: Path | None = None, **kwargs):
    builder = get_builder(name, data_dir, **kwargs)
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    return builder


def _examples(builder, split: str) -> dict[str, dict]:
    ds = builder.as_dataset(split=split, decoders=SKIP)
    return {ex["tracklet_name"].decode(): ex for ex in tfds.as_numpy(ds)}


class _GeneratedDummyData:
    """Mixin for DatasetBuilderTestCase: the dummy data is generated, not committed."""

    LAYOUT = ""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.mkdtemp()
        if cls.LAYOUT:
            cls.EXAMPLE_DIR = str(make_dummy_data(cls._tmp)[cls.LAYOUT]["raw"])
        else:   # the synthetic builder downloads nothing; the test case still wants a dir
            cls.EXAMPLE_DIR = cls._tmp
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls._tmp, ignore_errors=True)


class SyntheticPedestriansTest(_GeneratedDummyData, tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = synthetic.SyntheticPedestrians
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
    SPLITS = {"train": 24, "test": 8}


class MarsAttributeTest(_GeneratedDummyData, tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = mars.MarsAttribute
    LAYOUT = "mars"
    SPLITS = {"train": 3, "test": 2}


class DukemtmcVidAttributeTest(_GeneratedDummyData, tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = duke.DukemtmcVidAttribute
    LAYOUT = "duke"
    SPLITS = {"train": 3, "test": 2}


@pytest.fixture(scope="module")
def dummy(tmp_path_factory) -> dict:
    return make_dummy_data(tmp_path_factory.mktemp("manual"))


@pytest.fixture(scope="module")
def built(dummy, tmp_path_factory) -> dict:
    """{(dataset, layout): builder} prepared once for the module."""
    out = tmp_path_factory.mktemp("prepared")
    return {(ds, layout): _prepare(BUILDER_NAMES[ds], out / f"{ds}_{layout}",
                                   dummy[ds][layout])
            for ds in BUILDER_NAMES for layout in ("raw", "preprocessed")}


@pytest.mark.parametrize("dataset", ["mars", "duke"])
@pytest.mark.parametrize("layout", ["raw", "preprocessed"])
def test_layouts_give_the_expected_tracklets(dummy, built, dataset, layout):
    builder = built[(dataset, layout)]
    expected = dummy[dataset]
    assert builder.info.features["labels"].shape == (
        attributes.get(builder.ATTRIBUTE_SET).num_attributes,)
    for split in ("train", "test"):
        got = _examples(builder, split)
        assert sorted(got) == sorted(expected["splits"][split])
        for name, example in got.items():
            np.testing.assert_array_equal(example["labels"], expected["labels"][name])
            # Frames are the bytes read from disk, in order, not re-encoded.
            assert list(example["frames"]) == expected["frames"][name]
            assert example["num_frames"] == len(expected["frames"][name])
            pid, camera, tracklet = (int(v) for v in
                                     name.replace("C", " ").replace("T", " ").split())
            assert (example["pid"], example["camera"], example["tracklet"]) == (
                pid, camera, tracklet)


@pytest.mark.parametrize("dataset", ["mars", "duke"])
def test_raw_and_preprocessed_agree(built, dataset):
    for split in ("train", "test"):
        raw = _examples(built[(dataset, "raw")], split)
        pre = _examples(built[(dataset, "preprocessed")], split)
        assert raw.keys() == pre.keys()
        for name in raw:
            for key in ("labels", "pid", "camera", "tracklet", "num_frames"):
                np.testing.assert_array_equal(raw[name][key], pre[name][key])


def test_chen_columns_land_in_the_named_attributes(tmp_path):
    """One hand-checked row: class indices go to the columns attributes.py names."""
    cells = [1, 4] + [0] * 7 + [8, 2, 3] + [1, 0, 0, 1, 0, 0, 1, 1, 0]
    labels = mars.MARS_CSV.labels(cells)
    on = {attributes.MARS.columns[i] for i in np.flatnonzero(labels)}
    assert on == {"top length (short)", "backpack", "hair (long)", "gender (female)",
                  "pose: back", "motion: running", "top colour: complex",
                  "bottom colour: black", "age: old"}
    duke_cells = [3, 0] + [1] * 7 + [0, 1, 0, 0, 1, 0, 0, 1] + [6, 2]
    on = {attributes.DUKE.columns[i] for i in np.flatnonzero(duke.DUKE_CSV.labels(duke_cells))}
    assert on == {"shoulder bag", "gender (female)", "top length (long)", "pose: frontal",
                  "motion: staying", "top colour: red", "bottom colour: brown"}


def _copy(dummy, dataset: str, layout: str, tmp_path: Path) -> Path:
    target = tmp_path / f"{dataset}_{layout}"
    shutil.copytree(dummy[dataset][layout], target)
    return target


def _edit_csv_line(path: Path, line: int, edit) -> None:
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    lines[line - 1] = ",".join(edit(cells))
    path.write_text("\n".join(lines) + "\n")


def test_missing_manual_dir_gives_the_instructions(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*bbox_train"):
        _prepare("mars_attribute", tmp_path / "out", tmp_path / "nowhere")


def test_manual_dir_with_neither_layout(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "readme.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match="holds neither layout.*raw lacks train"):
        _prepare("dukemtmc_vid_attribute", tmp_path / "out", tmp_path / "manual")


def test_missing_image_folder(dummy, tmp_path):
    root = _copy(dummy, "mars", "raw", tmp_path)
    shutil.rmtree(root / "bbox_train" / "0002")
    with pytest.raises(FileNotFoundError, match="image folders do not exist.*bbox_train/0002"):
        _prepare("mars_attribute", tmp_path / "out", root)


def test_csv_tracklet_without_images(dummy, tmp_path):
    root = _copy(dummy, "mars", "raw", tmp_path)
    csv_path = root / "mars_attributes.csv"
    row = csv_path.read_text().splitlines()[1].split(",")
    csv_path.write_text(csv_path.read_text() + ",".join(["77", "1", "9"] + row[3:]) + "\n")
    with pytest.raises(FileNotFoundError, match="have no images.*id=77 camera=1 tracklet=9"):
        _prepare("mars_attribute", tmp_path / "out", root)


def test_class_index_out_of_range(dummy, tmp_path):
    root = _copy(dummy, "mars", "raw", tmp_path)
    _edit_csv_line(root / "mars_attributes.csv", 3, lambda c: c[:4] + ["6"] + c[5:])
    with pytest.raises(ValueError, match=r"line 3, column 5 \(angle\): class index 6 is out of "
                                         r"range \[0, 6\)"):
        _prepare("mars_attribute", tmp_path / "out", root)


def test_csv_with_wrong_number_of_columns(dummy, tmp_path):
    root = _copy(dummy, "duke", "raw", tmp_path)
    _edit_csv_line(root / "duke_attributes.csv", 2, lambda c: c[:-1])
    with pytest.raises(ValueError, match="duke_attributes.csv: line 2 has 21 columns, "
                                         "expected 22"):
        _prepare("dukemtmc_vid_attribute", tmp_path / "out", root)


def test_preprocessed_bad_cell_and_missing_folder(dummy, tmp_path):
    root = _copy(dummy, "duke", "preprocessed", tmp_path)
    _edit_csv_line(root / "attributes.csv", 2, lambda c: c[:5] + ["2"] + c[6:])
    with pytest.raises(ValueError, match="attributes.csv: line 2, column 6: '2' is not 0 or 1"):
        _prepare("dukemtmc_vid_attribute", tmp_path / "out", root)
    root = _copy(dummy, "mars", "preprocessed", tmp_path)
    shutil.rmtree(root / "frames" / "0001C2T0002")
    with pytest.raises(FileNotFoundError, match="no image folder.*0001C2T0002"):
        _prepare("mars_attribute", tmp_path / "out2", root)


def test_duke_tracklet_folder_without_images(dummy, tmp_path):
    root = _copy(dummy, "duke", "raw", tmp_path)
    for frame in (root / "train" / "0002" / "0001").iterdir():
        frame.unlink()
    with pytest.raises(FileNotFoundError, match="hold no JPEG.*train/0002/0001"):
        _prepare("dukemtmc_vid_attribute", tmp_path / "out", root)


def test_corrupt_frames_are_skipped_and_counted(dummy, tmp_path, caplog):
    root = _copy(dummy, "mars", "raw", tmp_path)
    folder = root / "bbox_train" / "0001"
    (folder / "0001C2T0002F002.jpg").write_bytes(b"")                      # zero bytes
    data = (folder / "0001C2T0002F004.jpg").read_bytes()
    (folder / "0001C2T0002F004.jpg").write_bytes(data[: len(data) // 2])   # truncated
    with caplog.at_level(logging.INFO, logger="input_pipeline"):
        builder = _prepare("mars_attribute", tmp_path / "out", root)
    example = _examples(builder, "train")["0001C2T0002"]
    assert example["num_frames"] == 3 and len(example["frames"]) == 3
    assert "0001C2T0002F002.jpg: empty file" in caplog.text
    assert "0001C2T0002F004.jpg: undecodable" in caplog.text
    assert "split train: 3 tracklets written, 2 unreadable frames skipped" in caplog.text


def test_tracklet_without_readable_frame_is_dropped_and_named(dummy, tmp_path, caplog):
    root = _copy(dummy, "mars", "raw", tmp_path)
    for frame in (root / "bbox_test" / "0006").iterdir():
        frame.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="input_pipeline"):
        builder = _prepare("mars_attribute", tmp_path / "out", root)
    assert sorted(_examples(builder, "test")) == ["0005C1T0001"]
    assert builder.info.splits["test"].num_examples == 1
    assert "1 tracklets dropped for having no readable frame (0006C3T0002)" in caplog.text


def test_mars_without_tracks_info_uses_file_names(dummy, built, tmp_path):
    root = _copy(dummy, "mars", "raw", tmp_path)
    for split in ("train", "test"):
        (root / "info" / f"tracks_{split}_info.mat").unlink()
    (root / "info" / "train_name.txt").unlink()   # and the train list: scan the folders
    builder = _prepare("mars_attribute", tmp_path / "out", root)
    for split in ("train", "test"):
        got, want = _examples(builder, split), _examples(built[("mars", "raw")], split)
        assert got.keys() == want.keys()
        for name in got:
            assert list(got[name]["frames"]) == list(want[name]["frames"])


def test_synthetic_is_reproducible_and_well_formed(tmp_path):
    first = _prepare("synthetic_pedestrians/tiny", tmp_path / "a")
    second = _prepare("synthetic_pedestrians/tiny", tmp_path / "b")
    assert first.info.metadata["attribute_set"] == "synthetic"
    one, two = _examples(first, "train"), _examples(second, "train")
    assert one.keys() == two.keys()
    for name in one:
        assert list(one[name]["frames"]) == list(two[name]["frames"])
    labels = np.stack([ex["labels"] for ex in one.values()])
    for group in attributes.SYNTHETIC.groups:   # one-hot groups hold exactly one 1
        if not group.is_binary:
            np.testing.assert_array_equal(labels[:, list(group.columns)].sum(1), 1)
    ds = first.as_dataset(split="test")
    for ex in tfds.as_numpy(ds):
        assert ex["frames"].shape[1:] == (32, 16, 3) and 3 <= ex["num_frames"] <= 8
        assert len(ex["frames"]) == ex["num_frames"]


def test_synthetic_config_is_checked():
    with pytest.raises(ValueError, match="min_frames=5, max_frames=2"):
        synthetic.SyntheticConfig(name="bad", min_frames=5, max_frames=2)


def test_get_builder_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        get_builder("nope", tmp_path)
