"""Random weight guessing for parity: sample a small tanh RNN's weights until one is right.

Hochreiter and Schmidhuber noted that parity over long sequences, hopeless for
gradient descent when the label comes only at the end, is solved by simply guessing
the weights of a small saturating RNN. This module does that, vectorised over
candidates: ``chunk`` weight sets run side by side over a few training sequences,
the survivors are checked on more, and the first that is right on all of them wins.

The cell is the hand-written RNN of ``models.manual`` (family ``manual_rnn``)::

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  h_0 = 0,  logit = W_out h_T + b_out

with x_t the bit (0 or 1). The readout is fitted by least squares on training states
only. Pure NumPy (no torch) until the weights are handed over as a state_dict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from stages.schema import SearchVariant

CHECK_COUNT = 2000  # training sequences a screened candidate must also get right
TARGET_MARGIN = 20.0  # readout scaled so the least certain training logit is this (p ~ 1 - 2e-9)
MAX_BATCH_BITS = 2_000_000  # sequences x length per forward batch when scoring a whole set

Weights = dict[str, np.ndarray]  # w_ih (C, H), w_hh (C, H, H), bias (C, H), w_out (C, H), b_out (C,)


class SeqSet(Protocol):
    """What the search reads from a dataset (``stages.datasets.SeqSet``)."""

    lengths: np.ndarray  # (n,) int64
    labels: np.ndarray  # (n,) uint8, the parity of each sequence

    def __len__(self) -> int: ...

    def padded(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class SearchResult:
    """Outcome of one search. Everything except ``seconds`` is deterministic."""

    trials: int  # candidate weight sets tried (up to and including the winner)
    found: bool  # a candidate was right on every screened and checked training sequence
    screened: int  # candidates right on all screen sequences (sent on to the check)
    train_accuracy: float  # the chosen weights on the whole training bucket
    val_accuracy: float  # ... and on the validation bucket
    seconds: float = 0.0  # wall clock; never written to DVC-tracked files

    def metrics(self) -> dict[str, Any]:
        """The deterministic summary written to artifacts/train/<variant>.json."""
        out = asdict(self)
        del out["seconds"]
        return out


def sample(rng: np.random.Generator, count: int, hidden: int, scale: float) -> Weights:
    """``count`` recurrent weight sets drawn from N(0, scale^2); no readout yet."""
    return {
        "w_ih": rng.normal(0.0, scale, (count, hidden)).astype(np.float32),
        "w_hh": rng.normal(0.0, scale, (count, hidden, hidden)).astype(np.float32),
        "bias": rng.normal(0.0, scale, (count, hidden)).astype(np.float32),
    }


def final_states(w: Weights, bits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Run every candidate over every sequence; return h_T.

    w: candidate weights with leading axis C; bits: (n, T) 0/1; lengths: (n,).
    Returns (C, n, H) float32: the state after each sequence's last real bit.
    """
    c, hidden = w["bias"].shape
    h = np.zeros((c, len(lengths), hidden), np.float32)
    x = bits.astype(np.float32)
    w_ih, bias = w["w_ih"][:, None, :], w["bias"][:, None, :]  # (C, 1, H)
    ragged = bool((lengths != bits.shape[1]).any())
    for t in range(bits.shape[1]):
        pre = np.einsum("cij,cnj->cni", w["w_hh"], h) + w_ih * x[None, :, t, None] + bias
        # Padding must not move the state: h_T is read after each sequence's last real bit.
        h = np.where((t < lengths)[None, :, None], np.tanh(pre), h) if ragged else np.tanh(pre)
    return h


def fit_readout(h: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares readout per candidate on +-1 targets.

    h: (C, n, H) final states; labels: (n,) 0/1. Returns w_out (C, H), b_out (C,).
    Least squares is exact when the states sit at <= H+1 corners, which is what a
    saturated parity solution visits; it costs one small solve per candidate.
    """
    a = np.concatenate([h, np.ones(h.shape[:2] + (1,), h.dtype)], axis=2).astype(np.float64)
    y = labels.astype(np.float64) * 2 - 1
    gram = np.einsum("cni,cnj->cij", a, a) + 1e-6 * np.eye(a.shape[2])  # ridge: rank-deficient states
    rhs = np.einsum("cni,n->ci", a, y)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    return coef[:, :-1].astype(np.float32), coef[:, -1].astype(np.float32)


def logits_of(h: np.ndarray, w_out: np.ndarray, b_out: np.ndarray) -> np.ndarray:
    """h: (C, n, H); w_out: (C, H); b_out: (C,) -> logits (C, n)."""
    return np.einsum("cni,ci->cn", h, w_out) + b_out[:, None]


def _take(w: Weights, idx: np.ndarray) -> Weights:
    return {k: v[idx] for k, v in w.items()}


def _correct_all(w: Weights, bits: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fit each candidate's readout on these sequences; (C,) bool: right on all of them."""
    h = final_states(w, bits, lengths)
    w_out, b_out = fit_readout(h, labels)
    w["w_out"], w["b_out"] = w_out, b_out
    return ((logits_of(h, w_out, b_out) > 0) == (labels == 1)[None]).all(axis=1)


def _accuracy(w: Weights, bits: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fit each candidate's readout on these sequences (stored in ``w``); (C,) fraction right."""
    h = final_states(w, bits, lengths)
    w["w_out"], w["b_out"] = fit_readout(h, labels)
    right = (logits_of(h, w["w_out"], w["b_out"]) > 0) == (labels == 1)[None]
    return right.mean(axis=1)


def _fixed(seqs: SeqSet, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bits, lengths = seqs.padded(idx)
    return np.asarray(bits), np.asarray(lengths), np.asarray(seqs.labels[idx])


def predict_logits(w: Weights, seqs: SeqSet, max_batch_bits: int = MAX_BATCH_BITS) -> np.ndarray:
    """Logits of one weight set (no candidate axis) on a whole set: (n,) float32."""
    one = {k: np.asarray(v)[None] for k, v in w.items()}
    order = np.argsort(seqs.lengths, kind="stable")  # similar lengths together: little padding
    out = np.empty(len(seqs), np.float32)
    per_batch = max(1, max_batch_bits // max(1, int(seqs.lengths.max())))
    for i in range(0, len(order), per_batch):
        idx = order[i:i + per_batch]
        bits, lengths = seqs.padded(idx)
        h = final_states(one, np.asarray(bits), np.asarray(lengths))
        out[idx] = logits_of(h, one["w_out"], one["b_out"])[0]
    return out


def search(
    cfg: SearchVariant,
    train: SeqSet,
    val: SeqSet,
    seed: int,
    *,
    progress: Callable[[str], Any] | None = print,
    log: Callable[[dict[str, float], int], Any] | None = None,
) -> tuple[dict[str, Any], SearchResult]:
    """Guess weights until one set is right on all screen and check sequences.

    Returns the manual RNN's state_dict (see ``to_state_dict``) and the result;
    the same seed gives bit-identical weights.
    """
    start = time.perf_counter()
    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(len(train))
    screen = _fixed(train, order[:cfg.screen_count])
    check = _fixed(train, order[cfg.screen_count:cfg.screen_count + CHECK_COUNT])
    tried, screened, best = 0, 0, (-1.0, None)
    found = False
    while tried < cfg.trials and not found:
        count = min(cfg.chunk, cfg.trials - tried)
        w = sample(rng, count, cfg.hidden_size, cfg.weight_scale)
        passed = np.flatnonzero(_accuracy(w, *screen) == 1.0)
        if len(passed):
            w = _take(w, passed)
            check_acc = _accuracy(w, *check)
            found = bool((check_acc == 1.0).any())
            first = int(np.argmax(check_acc))  # the first perfect one, else the best
            if check_acc[first] > best[0]:
                best = (float(check_acc[first]), _take(w, np.array([first])))
            count = int(passed[first]) + 1 if found else count
            screened += first + 1 if found else len(passed)
        tried += count
        if log is not None:
            log({"search/screened": screened, "search/best_check_accuracy": max(best[0], 0.0)}, tried)
        if progress is not None:
            progress(f"rnn_search: {tried:,} trials, {screened} passed the screen, "
                     f"best check accuracy {max(best[0], 0.0):.4f}")
    if best[1] is None:  # nothing passed even the screen: keep the last chunk's first guess
        best = (0.0, _take(w, np.array([0])))
        best[1]["w_out"], best[1]["b_out"] = fit_readout(final_states(best[1], *check[:2]), check[2])
    weights = _sharpen({k: v[0] for k, v in best[1].items()}, check)
    result = SearchResult(
        trials=tried, found=found, screened=screened,
        train_accuracy=_set_accuracy(weights, train), val_accuracy=_set_accuracy(weights, val),
    )
    result.seconds = time.perf_counter() - start
    return to_state_dict(weights), result


def _sharpen(w: Weights, check: tuple[np.ndarray, ...]) -> Weights:
    """Scale the readout so the least certain check (training) logit is TARGET_MARGIN."""
    one = {k: np.asarray(v)[None] for k, v in w.items()}
    margin = float(np.abs(logits_of(final_states(one, *check[:2]), one["w_out"], one["b_out"])).min())
    scale = np.float32(TARGET_MARGIN / max(margin, 1e-3))
    return {**w, "w_out": w["w_out"] * scale, "b_out": w["b_out"] * scale}


def _set_accuracy(w: Weights, seqs: SeqSet) -> float:
    return float(((predict_logits(w, seqs) > 0) == (seqs.labels == 1)).mean())


def to_state_dict(w: Weights) -> dict[str, Any]:
    """Placeholder until models.manual exists: plain arrays."""
    return dict(w)
