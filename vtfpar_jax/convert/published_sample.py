"""A published VTFPAR++ model with drawn weights, and what the published PyTorch code computed
on it: a check of the conversion that needs no download and no checkpoint.

    sample = published_sample.load("default")
    sample["state_dict"]["clip/visual.conv1.weight"]   # OpenAI CLIP key, float32
    sample["video"]          # (batch, frames, 3, 224, 224) float32, already normalised
    sample["expected"]       # the published model's tokens and logits on that video

Each case of `CASES` (published_sample_cases/<case>/) is a `params.json`, the recipe of
every tensor, and `outputs.npz`, what the published model computed in float32 on a CPU in
eval mode; tests/fixtures/openpar_parity/README.md says what each case and each field is.

The weights have real ViT-B/16 CLIP shapes and are drawn, not stored. One
`numpy.random.RandomState(seed)` stream gives, in this order: every tensor in the order
params.json lists it, as float32(mean + std * standard normal); then the clip (standard
normal); then the labels (uniform > 0.7) and the positive ratios (uniform in [0.05, 0.5)).
RandomState's legacy stream is frozen across numpy versions, so the weights come back
exactly; the labels and ratios are also recorded, and comparing them shows that the stream
is still in step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CASES_DIR = Path(__file__).resolve().parent / "published_sample_cases"
CASES = ("default", "variant", "group_default", "group_variant")
IMAGE_SHAPE = (3, 224, 224)
LABEL_CUT = 0.7
POS_RATIO_RANGE = (0.05, 0.5)


def params(case: str) -> dict:
    """The case's params.json: its recipe, options and attribute phrases."""
    if case not in CASES:
        raise ValueError(f"published sample {case!r}; expected one of {CASES}")
    return json.loads((CASES_DIR / case / "params.json").read_text())


def draw(meta: dict) -> dict:
    """{'state_dict', 'video', 'labels', 'pos_ratio'} drawn from a params.json's recipe."""
    stream = np.random.RandomState(meta["seed"])
    state_dict = {}
    for tensor in meta["tensors"]:
        noise = stream.standard_normal(tuple(tensor["shape"]))
        # np.asarray: a () shape (logit_scale) stays a 0-d array, not a numpy scalar.
        state_dict[tensor["name"]] = np.asarray(tensor["mean"] + tensor["std"] * noise,
                                                np.float32)
    batch, num_attributes = meta["batch"], len(meta["attributes"])
    video = stream.standard_normal((batch, meta["frames"], *IMAGE_SHAPE)).astype(np.float32)
    labels = (stream.uniform(size=(batch, num_attributes)) > LABEL_CUT).astype(np.float32)
    pos_ratio = stream.uniform(*POS_RATIO_RANGE, size=num_attributes).astype(np.float32)
    return {"state_dict": state_dict, "video": video, "labels": labels, "pos_ratio": pos_ratio}


def check_in_step(drawn: dict, recorded: dict, where: str) -> None:
    """Raises unless the drawn labels and ratios are the recorded ones."""
    if not (np.array_equal(drawn["labels"], recorded["labels"])
            and np.allclose(drawn["pos_ratio"], recorded["pos_ratio"])):
        raise ValueError(f"{where}: the drawn labels or ratios differ from the recorded ones; "
                         "the random stream is out of step with params.json")


def load(case: str = "default") -> dict:
    """{'meta', 'state_dict', 'video', 'labels', 'pos_ratio', 'expected'} of one case;
    'expected' holds the published model's 'tokens' (A, 77), 'logits' (B, A), 'labels' and
    'pos_ratio'."""
    meta = params(case)
    with np.load(CASES_DIR / case / "outputs.npz") as recorded:
        expected = dict(recorded)
    drawn = draw(meta)
    check_in_step(drawn, expected, f"published sample {case!r}")
    return {"meta": meta, **drawn, "expected": expected}
