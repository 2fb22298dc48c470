"""What a compiled XLA program holds: memory, the kernels it calls, its collectives.

Read from `jax.stages.Compiled` (`memory_analysis()` and the optimised HLO
text), so it works the same for a program compiled for the local devices and
for one compiled deviceless for a GPU or TPU topology (vtfpar_jax.tools.aot).
"""

from __future__ import annotations

import collections
import math
import re
from typing import Any

# Bytes per element of the HLO element types that appear in these programs.
_ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2,
                  "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
                  "f64": 8}
# An instruction's result: one shape `f32[8,16]{1,0}` or a tuple `(f32[8], bf16[4,2])`.
_SHAPE = r"[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?"
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(\(.*?\)|" + _SHAPE + r")\s+"
                          r"([a-z][a-z0-9\-]*)\(", re.MULTILINE)
# Collectives that move activations between devices; a data-parallel step needs none.
NON_REDUCE_COLLECTIVES = ("all-gather", "all-to-all", "collective-permute",
                          "reduce-scatter", "collective-broadcast", "ragged-all-to-all")
COLLECTIVES = ("all-reduce",) + NON_REDUCE_COLLECTIVES


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO result shape, e.g. 'f32[8,16]{1,0}' or '(bf16[4], f32[])'."""
    # token[] and other non-data results have no element size: not counted.
    return sum(math.prod(int(d) for d in dims.split(",") if d) * _ELEMENT_BYTES[dtype]
               for dtype, dims in re.findall(r"([a-z0-9]+)\[([0-9,]*)\]", shape)
               if dtype in _ELEMENT_BYTES)


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """{op: {'count', 'bytes'}} over the program's cross-device collectives.

    Bytes are those of each collective's result. Asynchronous pairs count once,
    at their `-start`; the result of an all-gather or collective-permute start
    is (operand, result), of which the result is counted.
    """
    found: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for shape, op in _INSTRUCTION.findall(hlo_text):
        name = op.removesuffix("-start")
        if name not in COLLECTIVES or op.endswith("-done"):
            continue
        if op in ("all-gather-start", "collective-permute-start") and shape.startswith("("):
            shape = re.findall(_SHAPE, shape)[-1]
        found[name]["count"] += 1
        found[name]["bytes"] += shape_bytes(shape)
    return dict(found)


def kernels(hlo_text: str) -> dict[str, int]:
    """How often each library kernel is called: custom-call targets (cuDNN attention
    and convolutions, cuBLAS/cuBLASLt GEMMs) and the kinds of generated GEMM fusions
    (Triton), by name."""
    calls = collections.Counter(re.findall(r'custom_call_target="([^"]+)"', hlo_text))
    calls.update(f"fusion:{kind}" for kind in re.findall(
        r'"kind":"(__triton[a-z_]*gemm[a-z_]*|__cublas[a-z_$]*|__cudnn[a-z_$]*)"', hlo_text))
    return dict(sorted(calls.items()))


def memory(compiled) -> dict[str, int] | None:
    """XLA's `memory_analysis()` of a compiled program, in bytes; None where the
    backend gives none."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if m is None:
        return None
    return {k: int(getattr(m, k)) for k in (
        "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
        "alias_size_in_bytes", "generated_code_size_in_bytes") if hasattr(m, k)}


def gib(n: int | None) -> str:
    """Bytes in GiB, for the summaries; 'n/a' for None (no figure)."""
    return "n/a" if n is None else f"{n / 2 ** 30:.2f} GiB"


def report(compiled) -> dict[str, Any]:
    """Memory, kernels and collectives of one compiled program."""
    text = compiled.as_text()
    return {"memory": memory(compiled), "kernels": kernels(text),
            "collectives": collectives(text)}
