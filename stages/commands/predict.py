"""``python -m stages predict --variant NAME [BITS...]``: the parity of bit strings by a trained model.

Bit strings come as arguments, or on stdin one per line when there are none. Every
input is checked before the model is loaded; then one line per input is printed:
the predicted parity (0 or 1), a TAB, and the model's probability of parity 1.
Runs on the CPU: a CLI call should not pay for starting a GPU.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from stages.core.errors import UserError
from stages.core.params import KERAS_PARITY, Params, XorVariant, load_params

SHOW = 24  # characters of a bad input quoted in the error message


def parity_variants(params: Params) -> list[str]:
    """Names of the variants that are parity models (gradient-trained or found by search)."""
    return [name for name, v in params.variants.items() if not isinstance(v, XorVariant)]


def check_variant(params: Params, variant: str) -> str:
    """The model family of a parity variant; UserError for unknown or XOR variants."""
    allowed = ", ".join(parity_variants(params)) or "none in this params file"
    v = params.variants.get(variant)
    if v is None:
        raise UserError(f"unknown variant {variant!r} (parity variants: {allowed})")
    if isinstance(v, XorVariant):
        raise UserError(
            f"{variant!r} is an XOR gate study (family xor_mlp), not a parity model "
            f"(parity variants: {allowed})"
        )
    return v.family


def _show(text: bytes) -> str:
    s = text.decode("utf-8", errors="replace")
    return repr(s if len(s) <= SHOW else s[:SHOW] + "...")


def parse_bits(items: Sequence[bytes], what: str = "line"):
    """Validate every bit string, then pack them into a SeqSet (lengths (n,), packed bits).

    ``what`` names an input in messages ("line" for stdin, "argument" for arguments).
    Surrounding whitespace (a Windows "\\r" included) is ignored; an empty input or any
    character other than 0 and 1 is a UserError naming its 1-based number.
    """
    from stages.core.data import SeqSet

    if not items:
        raise UserError("no input: give bit strings as arguments, or on stdin one per line")
    arrays = []
    for i, raw in enumerate(items, 1):
        s = raw.strip()
        if not s:
            raise UserError(f"{what} {i}: empty; give one string of 0s and 1s per {what}")
        bits = np.frombuffer(s, dtype=np.uint8) - ord("0")  # uint8 wraps: anything else is > 1
        bad = np.flatnonzero(bits > 1)
        if bad.size:
            raise UserError(
                f"{what} {i}: {_show(s)} contains characters other than 0 and 1 "
                f"(first at position {int(bad[0]) + 1})"
            )
        arrays.append(bits)
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    return SeqSet.from_stream("input", lengths, np.concatenate(arrays))


def read_stdin_lines() -> list[bytes]:
    """All of stdin, split into lines; a final newline does not make an extra empty line."""
    data = sys.stdin.buffer.read()
    lines = data.split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()
    return lines


def format_predictions(logits: np.ndarray) -> str:
    """logits (n,) -> "PARITY\\tP(1)" lines; 0.5 * (1 + tanh(l / 2)) is the sigmoid without overflow."""
    prob = 0.5 * (1.0 + np.tanh(np.asarray(logits, dtype=np.float64) / 2.0))
    return "".join(f"{int(x > 0)}\t{p:.6f}\n" for x, p in zip(logits.tolist(), prob.tolist(), strict=True))


def main(variant: str, bits: tuple[str, ...] = (), params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    family = check_variant(params, variant)
    if bits:
        seqs = parse_bits([b.encode("utf-8", errors="surrogateescape") for b in bits], "argument")
    else:
        seqs = parse_bits(read_stdin_lines(), "line")
    if family in KERAS_PARITY:
        from stages.core.device import configure_tensorflow_device
        from stages.pipeline.evaluate_keras import load_predictor

        configure_tensorflow_device("cpu")
    else:
        import torch  # noqa: F401  (imported first so seed_everything sets its thread count)

        from stages.pipeline.evaluate_torch import load_predictor
    from stages.core.seeding import seed_everything

    seed_everything(params.seed, params.threads)
    logits = load_predictor(params, variant, "cpu").predict(seqs, params.evaluate.max_batch_bits)
    sys.stdout.write(format_predictions(logits))
    sys.stdout.flush()
