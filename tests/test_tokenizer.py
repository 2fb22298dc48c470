"""The tokenizer reproduces OpenAI's CLIP ids (recorded in tests/fixtures) exactly."""

import importlib.resources
import json

import numpy as np
import pytest

from vtfpar_jax.backbones import clip_tokenizer
from vtfpar_jax.convert import published_sample


@pytest.fixture(scope="module")
def expected_ids(fixtures_dir) -> dict:
    with open(fixtures_dir / "clip_tokenizer" / "expected_ids.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """Built from the packaged file by path, so that a broken default does not hide here."""
    with importlib.resources.as_file(clip_tokenizer.PACKAGED_BPE) as path:
        return clip_tokenizer.from_bpe_file(path)


def _rows(entries: list[dict]) -> np.ndarray:
    """OpenAI's layout: the recorded ids padded with zeros to 77."""
    rows = np.zeros((len(entries), 77), np.int32)
    for row, entry in zip(rows, entries, strict=True):
        row[:len(entry["ids"])] = entry["ids"]
    return rows


def test_vocabulary_layout(bpe_tokenizer):
    assert len(bpe_tokenizer) == 49408
    assert bpe_tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [
        49406, 49407]
    # Byte symbols: printable bytes first ('!' is 0), then the shifted ones ('Ā' is byte 0).
    assert bpe_tokenizer.convert_tokens_to_ids(["!", "a", "Ā", "a</w>"]) == [0, 64, 188, 320]


@pytest.mark.parametrize("group", ["mars", "duke", "extra"])
def test_expected_ids(bpe_tokenizer, expected_ids, group):
    entries = expected_ids[group]
    ids = clip_tokenizer.tokenize(bpe_tokenizer, [e["text"] for e in entries])
    assert ids.dtype == np.int32 and ids.shape == (len(entries), 77)
    mismatched = [e["text"] for e, row, want in zip(entries, ids, _rows(entries), strict=True)
                  if not np.array_equal(row, want)]
    assert not mismatched, f"ids differ from OpenAI's for {mismatched}"


def test_all_82_phrases_covered(expected_ids):
    assert sum(len(v) for v in expected_ids.values()) == 82


@pytest.mark.parametrize("name", ["mars", "duke"])
def test_published_phrases(bpe_tokenizer, expected_ids, name):
    # Imported here so that a broken attributes module fails this test, not the whole file.
    from vtfpar_jax import attributes

    attribute_set = {"mars": attributes.MARS, "duke": attributes.DUKE}[name]
    ids = clip_tokenizer.tokenize(bpe_tokenizer, attribute_set.published_phrases)
    np.testing.assert_array_equal(ids, _rows(expected_ids[name]))


def test_parity_fixture_tokens(bpe_tokenizer, fixtures_dir):
    """The published model's own token array (openpar_parity) is what we produce."""
    phrases = published_sample.params("default")["attributes"]
    expected = np.load(fixtures_dir / "openpar_parity" / "default" / "expected.npz")["tokens"]
    np.testing.assert_array_equal(clip_tokenizer.tokenize(bpe_tokenizer, phrases), expected)


def test_too_long_phrase(bpe_tokenizer):
    phrase = "a red coat " * 30
    with pytest.raises(ValueError, match="a red coat"):
        clip_tokenizer.tokenize(bpe_tokenizer, ["hat", phrase])
    # Exactly 77 with SOT/EOT fits; 78 does not.
    assert clip_tokenizer.tokenize(bpe_tokenizer, ["hat " * 75]).shape == (1, 77)
    with pytest.raises(ValueError, match="78 tokens"):
        clip_tokenizer.tokenize(bpe_tokenizer, ["hat " * 76])


def test_shorter_context(bpe_tokenizer):
    ids = clip_tokenizer.tokenize(bpe_tokenizer, ["hat"], context_length=8)
    np.testing.assert_array_equal(ids, [[49406, 3801, 49407, 0, 0, 0, 0, 0]])


def test_from_pretrained_folder(bpe_tokenizer, expected_ids, tmp_path):
    bpe_tokenizer.save_pretrained(tmp_path)
    reloaded = clip_tokenizer.from_pretrained(tmp_path)
    entries = expected_ids["extra"] + expected_ids["duke"]
    np.testing.assert_array_equal(
        clip_tokenizer.tokenize(reloaded, [e["text"] for e in entries]), _rows(entries))


def test_default_tokenizer_sources(tmp_path, monkeypatch):
    """The explicit options keep working: a path argument, then $VTFPAR_CLIP_BPE."""
    copy = tmp_path / clip_tokenizer.BPE_FILE_NAME
    copy.write_bytes(clip_tokenizer.PACKAGED_BPE.read_bytes())
    monkeypatch.setenv(clip_tokenizer.BPE_ENV_VAR, str(tmp_path / "absent.txt.gz"))
    with pytest.raises(FileNotFoundError, match=clip_tokenizer.BPE_ENV_VAR):
        clip_tokenizer.default_tokenizer()
    # An explicit path wins over the environment variable.
    assert len(clip_tokenizer.default_tokenizer(copy)) == 49408
    monkeypatch.setenv(clip_tokenizer.BPE_ENV_VAR, str(tmp_path / "not_gzip.txt.gz"))
    (tmp_path / "not_gzip.txt.gz").write_text("hello")
    with pytest.raises(ValueError, match="not_gzip"):   # the variable is read, not skipped
        clip_tokenizer.default_tokenizer()


def test_default_tokenizer_needs_no_setting(expected_ids, monkeypatch):
    """No path, no $VTFPAR_CLIP_BPE: the packaged vocabulary gives OpenAI's ids."""
    monkeypatch.delenv(clip_tokenizer.BPE_ENV_VAR, raising=False)
    entries = [e for group in expected_ids.values() for e in group]
    ids = clip_tokenizer.tokenize(clip_tokenizer.default_tokenizer(), [e["text"] for e in entries])
    np.testing.assert_array_equal(ids, _rows(entries))


def test_not_a_bpe_file(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bpe.txt.gz"):
        clip_tokenizer.from_bpe_file(bad)


def test_hf_backbone_without_a_folder_reads_the_one_config_names(
        bpe_tokenizer, expected_ids, tmp_path):
    """A HuggingFace backbone given by config.backbone.path alone: its own vocab.json is used."""
    from configs import mars
    from vtfpar_jax import attributes
    from vtfpar_jax.state import build

    bpe_tokenizer.save_pretrained(tmp_path)
    config = mars.get_config()
    config.backbone.source, config.backbone.path = "hf", str(tmp_path)
    phrases, tokens = build.attribute_tokens(config, attributes.MARS)
    np.testing.assert_array_equal(
        tokens, clip_tokenizer.tokenize(clip_tokenizer.from_pretrained(tmp_path), phrases))
    assert tokens.shape == (43, 77)
