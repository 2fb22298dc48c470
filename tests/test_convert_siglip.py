"""SigLIP checkpoints in and out of HF format, what is refused, and the tokenizer.

The folders are written by transformers (`save_pretrained` of a tiny random
`SiglipModel`, a `CLIPModel`, a SigLIP 2 NaFlex config); the tokenizer is a
SentencePiece model trained here on the attribute phrases, read through
transformers' own `SiglipTokenizer`. Nothing is downloaded.
"""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from vtfpar_jax import attributes
from vtfpar_jax.backbones import hf_clip, hf_siglip, siglip_tokenizer
from vtfpar_jax.backbones.weights import WeightImportError
from vtfpar_jax.models import clip, siglip
from vtfpar_jax.state import build

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random SigLIP saved by transformers, and its state dict."""
    torch.manual_seed(0)
    model = transformers.SiglipModel(siglip.tiny().to_hf()).float().eval()
    folder = tmp_path_factory.mktemp("siglip")
    model.save_pretrained(folder, safe_serialization=True)
    return folder, {k: v.numpy() for k, v in model.state_dict().items()}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_save_gives_back_transformers_tensors(hf_folder, tmp_path):
    """load -> save writes what transformers wrote: a folder `SiglipModel` reads, with
    every tensor equal to the original's."""
    folder, state = hf_folder
    cfg, params = hf_siglip.load(folder)
    hf_siglip.save(cfg, params, tmp_path / "out")
    reloaded = transformers.SiglipModel.from_pretrained(tmp_path / "out").state_dict()
    assert set(reloaded) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(reloaded[key].numpy(), value, err_msg=key)
    again_cfg, again = hf_siglip.load(tmp_path / "out")
    assert again_cfg == cfg
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_clip_checkpoint_given_as_siglip_is_refused(tmp_path):
    cfg = clip.tiny(vocab_size=1000)
    hf_clip.save(cfg, clip.init_params(cfg, jax.random.key(0)), tmp_path)
    with pytest.raises(WeightImportError, match="model_type is 'clip', expected 'siglip'") as e:
        hf_siglip.load(tmp_path)
    assert str(tmp_path / hf_clip.CONFIG_FILE) in str(e.value)


def test_other_weights_under_a_siglip_config_are_refused(hf_folder, tmp_path):
    """A SigLIP config.json over another model's tensors: every key is checked."""
    import safetensors.numpy

    folder = _copy(hf_folder[0], tmp_path / "x")
    file = folder / hf_clip.WEIGHTS_FILE
    tensors = safetensors.numpy.load_file(file)
    tensors["vision_model.embeddings.class_embedding"] = np.zeros(64, np.float32)
    safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})
    with pytest.raises(WeightImportError, match="unexpected key.*class_embedding") as e:
        hf_siglip.load(folder)
    assert str(file) in str(e.value)


def test_missing_and_misshapen_keys_are_named(hf_folder, tmp_path):
    import safetensors.numpy

    key = "vision_model.head.attention.in_proj_weight"
    for case, change in (("missing", None), ("shape", np.zeros((10, 64), np.float32))):
        folder = _copy(hf_folder[0], tmp_path / case)
        file = folder / hf_clip.WEIGHTS_FILE
        tensors = safetensors.numpy.load_file(file)
        if change is None:
            del tensors[key]
        else:
            tensors[key] = change
        safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})
        with pytest.raises(WeightImportError) as e:
            hf_siglip.load(folder)
        message = str(e.value)
        assert str(file) in message and key in message, message
        if change is not None:   # the expected shape, in our (in, out) layout
            assert "(64, 192)" in message, message


def test_siglip2_naflex_is_refused(tmp_path):
    transformers.Siglip2Config().save_pretrained(tmp_path)
    with pytest.raises(WeightImportError, match="SigLIP 2 NaFlex") as e:
        hf_siglip.load(tmp_path)
    assert str(tmp_path / hf_clip.CONFIG_FILE) in str(e.value)


def test_model_dir_folder_is_read_by_its_model_type(hf_folder):
    cfg, _ = build.load_backbone_folder(str(hf_folder[0]))
    assert cfg == siglip.tiny()


# ---------------------------------------------------------------------------- tokenizer


def all_phrases() -> list[str]:
    """Every phrase of both attribute sets, published and expanded through the template."""
    phrases = []
    for attribute_set in (attributes.MARS, attributes.DUKE):
        for kind in ("published", "expanded"):
            phrases += attribute_set.phrases(kind, "A pedestrian whose {}.")
    return phrases


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """A SentencePiece model trained on the phrases, with SigLIP's special ids (<pad> 0,
    </s> 1, <unk> 2, no start token), saved as transformers' SiglipTokenizer."""
    sentencepiece = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(all_phrases()), model_prefix=str(folder / "spiece"),
        vocab_size=100, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"))
    tokenizer.save_pretrained(folder / "checkpoint")
    return folder / "checkpoint"


def test_tokens_are_transformers_ids_padded_to_64(tokenizer_folder):
    phrases = all_phrases()
    tokenizer = siglip_tokenizer.from_pretrained(tokenizer_folder)
    assert type(tokenizer).__name__ == "SiglipTokenizer"
    ours = siglip_tokenizer.tokenize(tokenizer, phrases)
    direct = transformers.SiglipTokenizer.from_pretrained(tokenizer_folder)(
        phrases, padding="max_length", max_length=64)["input_ids"]
    assert ours.shape == (len(phrases), 64) and ours.dtype == np.int32
    np.testing.assert_array_equal(ours, np.asarray(direct))
    # As SigLIP was trained: the phrase's pieces, '</s>', then '</s>' to the end.
    lengths = (ours != 1).sum(axis=1)
    assert lengths.min() > 0 and np.all(ours[np.arange(len(ours)), lengths] == 1)
    assert np.all(ours[:, -1] == 1)


def test_config_tokens_come_from_the_checkpoint_folder(tokenizer_folder, tmp_path):
    from configs.demo import get_config

    config = get_config("smoke,backbone=siglip")
    config.backbone.source, config.backbone.path = "hf", str(tokenizer_folder)
    phrases, tokens = build.attribute_tokens(config, attributes.MARS)
    direct = transformers.SiglipTokenizer.from_pretrained(tokenizer_folder)(
        list(phrases), padding="max_length", max_length=64)["input_ids"]
    np.testing.assert_array_equal(tokens, np.asarray(direct))


def test_phrase_longer_than_the_context_is_named(tokenizer_folder):
    tokenizer = siglip_tokenizer.from_pretrained(tokenizer_folder)
    long = " ".join(["a pedestrian whose hair is long"] * 20)
    with pytest.raises(ValueError, match="more than the context length 64"):
        siglip_tokenizer.tokenize(tokenizer, ["short", long])
