"""state/digests.py without a model: a folder against the SHA-256 recorded for it."""

from __future__ import annotations

import pytest

from vtfpar_jax.state import digests


def _backbone(model):
    (model / "backbone").mkdir(parents=True)
    (model / "backbone" / "weights.bin").write_bytes(b"weights")
    return str(model / "backbone"), digests.of_folder(str(model / "backbone"), str(model))


def test_check_backbone_checks_the_digests_its_caller_read(tmp_path):
    """The caller passes config.json's `backbone_files`; nothing is read again (here there is
    no config.json at all), and a model dir that recorded none (None) has nothing to check."""
    folder, recorded = _backbone(tmp_path)
    assert recorded == {"backbone/weights.bin": digests.sha256(folder + "/weights.bin")}
    digests.check_backbone(folder, str(tmp_path), recorded)
    (tmp_path / "backbone" / "weights.bin").write_bytes(b"weightz")
    digests.check_backbone(folder, str(tmp_path), None)
    with pytest.raises(digests.DigestError, match=f"{folder}/weights.bin: missing or differs "
                       f"from the SHA-256 that {tmp_path}/config.json records"):
        digests.check_backbone(folder, str(tmp_path), recorded)


def test_a_file_the_record_does_not_list_is_refused_unless_extra_files_are_allowed(tmp_path):
    folder, recorded = _backbone(tmp_path)
    (tmp_path / "backbone" / "notes.txt").write_text("added")
    with pytest.raises(digests.DigestError, match="backbone/notes.txt: not listed in rec.json"):
        digests.check_folder(folder, str(tmp_path), recorded, "rec.json")
    digests.check_folder(folder, str(tmp_path), recorded, "rec.json", extra_allowed=True)
    with pytest.raises(ValueError, match="^listed: .*/backbone/gone.bin$"):
        digests.check_folder(folder, str(tmp_path), {**recorded, "backbone/gone.bin": "0"},
                             "rec.json", ValueError, extra_allowed=True,
                             differs=lambda path: f"listed: {path}")
