"""SigLIP tokenisation of attribute phrases, as SigLIP was trained: padded to max_length 64.

    tokenizer = from_pretrained("/data/siglip-base-patch16-224")   # the checkpoint's own class
    ids = tokenize(tokenizer, MARS.published_phrases)              # (43, 64) int32

The tokenizer is transformers' class for the checkpoint, read from its folder
(`SiglipTokenizer`, SentencePiece, for SigLIP; `GemmaTokenizer` for the
fixed-resolution SigLIP 2). SigLIP's text tower pools the last position, so
rows are padded to the full context with the tokenizer's pad id, as
transformers' docs ask (`padding="max_length"`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

CONTEXT_LENGTH = 64
# SentencePiece's special ids in SigLIP's vocabulary: <pad> 0, </s> 1 (which also pads), <unk> 2.
END_OF_TEXT = 1
_SPECIAL_IDS = 3


def from_pretrained(folder: str | os.PathLike):
    """transformers' tokenizer of a local HF SigLIP checkpoint folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.fspath(folder), local_files_only=True)


def tokenize(tokenizer, phrases: Sequence[str],
             context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    """Token ids (A, context_length) int32, each row padded to the full context."""
    if isinstance(phrases, str):
        raise TypeError("tokenize takes a sequence of phrases, not one string")
    if not phrases:
        return np.zeros((0, context_length), np.int32)
    # No truncation, so a long phrase is an error below rather than cut silently.
    encoded = tokenizer(list(phrases), padding="max_length", max_length=context_length)
    for phrase, ids in zip(phrases, encoded["input_ids"], strict=True):
        if len(ids) > context_length:
            shown = phrase if len(phrase) <= 80 else phrase[:77] + "..."
            raise ValueError(f"phrase {shown!r} is {len(ids)} tokens with the end token, more "
                             f"than the context length {context_length}")
    return np.asarray(encoded["input_ids"], np.int32)


def byte_tokens(phrases: Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    """SigLIP-layout ids for a randomly initialised SigLIP, one id per UTF-8 byte.

    A random text tower has no vocabulary to respect: each byte b is id b + 3 (past
    the special ids), then the end-of-text id, padded with it as SigLIP pads.
    Real SigLIP weights need the checkpoint's tokenizer (`from_pretrained`).
    """
    ids = np.full((len(phrases), context_length), END_OF_TEXT, np.int32)
    for i, phrase in enumerate(phrases):
        row = [b + _SPECIAL_IDS for b in phrase.lower().encode("utf-8")][: context_length - 1]
        ids[i, : len(row)] = row
    return ids
