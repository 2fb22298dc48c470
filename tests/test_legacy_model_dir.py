"""Model dirs and a Hub layout written by earlier code (tests/fixtures/README.md) still load
and predict the probabilities that code predicted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import safetensors.numpy

TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"


def _put_back_token_embedding(weights) -> None:
    """The fixtures leave out the tiny backbone's token embedding (12.6 MB); it was drawn so,
    and drawn again here. Saved as the backbone's writer saved it, the file is the same bytes
    (a Hub layout checks their SHA-256 as it loads)."""
    tensors = safetensors.numpy.load_file(weights)
    assert TOKEN_EMBEDDING not in tensors
    tensors[TOKEN_EMBEDDING] = np.random.default_rng(0).normal(
        0, 0.02, (49408, 64)).astype(np.float32)
    safetensors.numpy.save_file(tensors, weights, metadata={"format": "pt"})


def _predicts_as_recorded(folder) -> None:
    from vtfpar_jax.inference import predict
    from vtfpar_jax.state import model_dir

    expected = json.loads((folder / "expected_probabilities.json").read_text())
    loaded = model_dir.load(str(folder))
    videos = np.random.default_rng(0).random((2, 6, 48, 48, 3), dtype=np.float32)
    probabilities = np.asarray(predict.predict_clips(loaded, videos))

    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["legacy_model_dir", "model_dir_fd7faaf"])
def test_a_model_dir_of_earlier_code_predicts_the_same(fixtures_dir, tmp_path, name):
    folder = tmp_path / "model"
    shutil.copytree(fixtures_dir / name, folder)
    _put_back_token_embedding(folder / "clip" / "model.safetensors")
    _predicts_as_recorded(folder)


def test_a_hub_layout_of_earlier_code_predicts_the_same(fixtures_dir, tmp_path):
    folder = tmp_path / "layout"
    shutil.copytree(fixtures_dir / "hub_layout_fd7faaf", folder)
    # The layout's backbone/ was a byte-for-byte copy of the model dir's clip/, so the
    # fixture ships it once.
    shutil.copytree(fixtures_dir / "model_dir_fd7faaf" / "clip", folder / "backbone")
    _put_back_token_embedding(folder / "backbone" / "model.safetensors")
    _predicts_as_recorded(folder)
