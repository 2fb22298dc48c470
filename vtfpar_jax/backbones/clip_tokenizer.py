"""CLIP tokenisation of attribute phrases, in the layout of OpenAI's `clip.tokenize`.

    tokenizer = default_tokenizer()              # OpenAI's BPE merges file, shipped here
    ids = tokenize(tokenizer, MARS.published_phrases)   # (43, 77) int32

Released VTFPAR++ checkpoints were trained on OpenAI's ids, so rows are
[<|startoftext|>, ids..., <|endoftext|>] padded with zeros (not with HF's pad
token, which would move nothing for argmax pooling but changes the array).
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# transformers is imported on use: the registry imports this module, and the deviceless-
# compile venv (`make aot-venv`: jax, flax, optax) has no transformers.
if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BPE_ENV_VAR = "VTFPAR_CLIP_BPE"
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's file ships inside the package (MIT licence, clip_vocab/LICENSE), as open_clip
# and OpenAI's `clip` ship it, so that tokenising needs no download and no setting.
PACKAGED_BPE = importlib.resources.files("vtfpar_jax.backbones") / "clip_vocab" / BPE_FILE_NAME
# OpenAI's vocabulary holds 49,408 entries: 2 x 256 byte symbols, one per merge of
# the first 48,894 merges of the file (lines 2 to 48,895), and the two special tokens.
_NUM_MERGES = 49152 - 256 - 2
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"
SOT, EOT = 49406, 49407     # their ids


def _byte_symbols() -> list[str]:
    """The 256 byte symbols in the order of GPT-2's byte-to-unicode table.

    Printable Latin-1 bytes stand for themselves and come first, in byte order;
    the others (control bytes, space, soft hyphen...) follow, each shifted to
    an unused code point from U+0100 on, so that every symbol is visible.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    kept = set(printable)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def from_bpe_file(path: str | os.PathLike) -> CLIPTokenizer:
    """A transformers `CLIPTokenizer` equal to OpenAI's, from `bpe_simple_vocab_16e6.txt.gz`."""
    from transformers import CLIPTokenizer
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable gzipped BPE merges file ({e})") from None
    # Line 1 is a version header; each following line is one merge "left right".
    merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
    if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path}: expected {_NUM_MERGES} merges of two symbols after the header")
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges),
             START_OF_TEXT, END_OF_TEXT]
    # The constructor takes the data itself: `vocab_file=`/`merges_file=` are silently ignored.
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=merges)


def from_pretrained(folder: str | os.PathLike) -> CLIPTokenizer:
    """The tokenizer of a local HF CLIP checkpoint folder (vocab.json + merges.txt)."""
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(os.fspath(folder), local_files_only=True)


def for_checkpoint(folder: str | None, bpe_path: str | None = None) -> CLIPTokenizer:
    """The tokenizer that fits a checkpoint: its folder's own vocab.json/merges.txt where it
    has them, OpenAI's BPE file otherwise (`default_tokenizer(bpe_path)`)."""
    if folder and os.path.exists(os.path.join(folder, "vocab.json")):
        return from_pretrained(folder)
    return default_tokenizer(bpe_path)


def default_tokenizer(bpe_path: str | os.PathLike | None = None) -> CLIPTokenizer:
    """From `bpe_path`, else $VTFPAR_CLIP_BPE, else OpenAI's file shipped with the package."""
    candidates = [(bpe_path, "the bpe_path argument"), (os.environ.get(BPE_ENV_VAR),
                                                         f"${BPE_ENV_VAR}")]
    for candidate, origin in candidates:
        if candidate:
            if not Path(candidate).is_file():
                raise FileNotFoundError(f"{candidate} (from {origin}): no such file")
            return from_bpe_file(candidate)
    with importlib.resources.as_file(PACKAGED_BPE) as packaged:
        return from_bpe_file(packaged)


def tokenize(tokenizer: CLIPTokenizer, phrases: Sequence[str],
             context_length: int = 77) -> np.ndarray:
    """Token ids (A, context_length) int32: [SOT, ids..., EOT] then zeros, as OpenAI's."""
    if isinstance(phrases, str):
        raise TypeError("tokenize takes a sequence of phrases, not one string")
    rows = np.zeros((len(phrases), context_length), np.int32)
    if not phrases:
        return rows
    # The tokenizer adds SOT/EOT itself; no truncation, so a long phrase is an error below.
    encoded = tokenizer(list(phrases), add_special_tokens=True)["input_ids"]
    for row, phrase, ids in zip(rows, phrases, encoded, strict=True):
        if len(ids) > context_length:
            shown = phrase if len(phrase) <= 80 else phrase[:77] + "..."
            raise ValueError(f"phrase {shown!r} is {len(ids)} tokens with start/end, more than "
                             f"the context length {context_length}")
        row[:len(ids)] = ids
    return rows


def byte_tokens(phrases: Sequence[str], context_length: int = 77) -> np.ndarray:
    """OpenAI-layout ids for a randomly initialised CLIP, one id per UTF-8 byte.

    CLIP's first 256 ids are its byte symbols, so this is a valid (if
    unmerged) encoding; a random text tower has no vocabulary to respect.
    Real CLIP weights need the real BPE tokenizer (`tokenize`).
    """
    ids = np.zeros((len(phrases), context_length), np.int32)
    for i, phrase in enumerate(phrases):
        row = [SOT, *phrase.lower().encode("utf-8")][: context_length - 1] + [EOT]
        ids[i, : len(row)] = row
    return ids
