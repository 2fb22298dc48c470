"""The published sample that ships with the package (what colab/from_pytorch.ipynb checks
offline) holds exactly the recorded parity fixtures' numbers."""

from __future__ import annotations

import numpy as np
import pytest

from vtfpar_jax.convert import published_sample


@pytest.mark.parametrize("case", published_sample.CASES)
def test_packaged_outputs_are_the_recorded_ones(case, fixtures_dir):
    with np.load(fixtures_dir / "openpar_parity" / case / "expected.npz") as recorded, \
            np.load(published_sample.CASES_DIR / case / "outputs.npz") as packaged:
        assert sorted(packaged) == ["labels", "logits", "pos_ratio", "tokens"]
        for key in packaged:
            np.testing.assert_array_equal(packaged[key], recorded[key], err_msg=key)


def test_an_unknown_case_is_named():
    with pytest.raises(ValueError, match="'defualt'; expected one of"):
        published_sample.load("defualt")


def test_a_stream_out_of_step_is_refused():
    meta = published_sample.params("variant")
    drawn = published_sample.draw({**meta, "seed": meta["seed"] + 1})
    with np.load(published_sample.CASES_DIR / "variant" / "outputs.npz") as recorded:
        with pytest.raises(ValueError, match="out of step"):
            published_sample.check_in_step(drawn, dict(recorded), "variant")
