"""A model dir written by earlier code (tests/fixtures/README.md) still loads and predicts the
probabilities that code predicted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import safetensors.numpy

TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"


def test_a_model_dir_of_earlier_code_predicts_the_same(fixtures_dir, tmp_path):
    from vtfpar_jax.inference import predict
    from vtfpar_jax.state import model_dir

    folder = tmp_path / "model"
    shutil.copytree(fixtures_dir / "legacy_model_dir", folder)
    weights = folder / "clip" / "model.safetensors"
    tensors = safetensors.numpy.load_file(weights)
    assert TOKEN_EMBEDDING not in tensors
    tensors[TOKEN_EMBEDDING] = np.random.default_rng(0).normal(
        0, 0.02, (49408, 64)).astype(np.float32)
    safetensors.numpy.save_file(tensors, weights)
    expected = json.loads((folder / "expected_probabilities.json").read_text())

    loaded = model_dir.load(str(folder))
    videos = np.random.default_rng(0).random((2, 6, 48, 48, 3), dtype=np.float32)
    probabilities = np.asarray(predict.predict_clips(loaded, videos))

    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=0, atol=1e-6)
