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

What the found solutions are: 2-unit threshold automata whose states sit at saturated
fixed points, so they stay exact at any length. Trained on strings all of one even
length (the request's dataset 1) the data cannot tell "parity of the ones" from
"parity of the zeros" (equal when the length is even); the search often lands on the
second, which is 100% wrong on every odd length. Variable training lengths, read
from h_0 = 0, pin down the intended function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class SearchConfig:
    """The search's settings (the fields of a ``rnn_search`` variant in params.yaml)."""

    hidden_size: int = 2  # a 2-unit tanh RNN can hold the parity bit
    weight_scale: float = 6.0  # std of sampled weights; large -> saturated, length-robust units
    trials: int = 200_000  # candidate weight sets at most
    chunk: int = 4096  # candidates evaluated together
    screen_count: int = 64  # training sequences a candidate must get right to be kept

CHECK_COUNT = 2000  # training sequences a screened candidate must also get right
TARGET_MARGIN = 20.0  # readout scaled so the least certain training logit is this (p ~ 1 - 2e-9)
MAX_BATCH_BITS = 2_000_000  # sequences x length per forward batch when scoring a whole set

Weights = dict[str, np.ndarray]  # w_ih (C, H), w_hh (C, H, H), bias (C, H), w_out (C, H), b_out (C,)


class SeqSet(Protocol):
    """What the search reads from a dataset (``stages.core.data.SeqSet``)."""

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
    # One (C, n) array per unit: with H = 2 this is ~10x faster than an einsum over (C, n, H).
    h = [np.zeros((c, len(lengths)), np.float32) for _ in range(hidden)]
    drive = [(w["bias"][:, i, None], w["bias"][:, i, None] + w["w_ih"][:, i, None]) for i in range(hidden)]
    ragged = bool((lengths != bits.shape[1]).any())
    for t in range(bits.shape[1]):
        is_one = (bits[:, t] == 1)[None]  # (1, n): the input bit selects b or b + W_ih
        new = []
        for i in range(hidden):
            pre = np.where(is_one, drive[i][1], drive[i][0])
            for j in range(hidden):
                pre += w["w_hh"][:, i, j, None] * h[j]
            new.append(np.tanh(pre))
        # Padding must not move the state: h_T is read after each sequence's last real bit.
        h = [np.where((t < lengths)[None], n, o) for n, o in zip(new, h, strict=True)] if ragged else new
    return np.stack(h, axis=-1)


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


def _accuracy(w: Weights, bits: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fit each candidate's readout on these sequences (stored in ``w``); (C,) fraction right."""
    h = final_states(w, bits, lengths)
    w["w_out"], w["b_out"] = fit_readout(h, labels)
    right = (logits_of(h, w["w_out"], w["b_out"]) > 0) == (labels == 1)[None]
    return right.mean(axis=1)


def _fixed(seqs: SeqSet, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequences idx as (bits (k, T) uint8, lengths (k,), labels (k,)), held for the whole search."""
    bits, lengths = seqs.padded(idx)
    return np.asarray(bits), np.asarray(lengths), np.asarray(seqs.labels[idx])


def predict_logits(w: Weights, seqs: SeqSet, max_batch_bits: int = MAX_BATCH_BITS) -> np.ndarray:
    """Logits of one weight set (no candidate axis) on a whole set: (n,) float32.

    Used for the search's own train/val accuracy; evaluation runs the saved torch model.
    """
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
    cfg: SearchConfig,
    train: SeqSet,
    val: SeqSet,
    seed: int,
    *,
    progress: Callable[[str], Any] | None = print,
    log: Callable[[dict[str, float], int], Any] | None = None,
) -> tuple[dict[str, Any], SearchResult]:
    """Guess weights until one set is right on every screen and check sequence.

    train, val: ``stages.core.data.SeqSet``. Only ``train`` chooses anything (weights
    and readout); ``val`` is measured once at the end. Returns the state_dict of a
    ``models.torch_rnn.cells.ManualRNN(cfg.hidden_size)`` and the result; the same seed gives
    bit-identical weights. If nothing is found in ``cfg.trials`` guesses, the
    candidate with the best check accuracy is returned with ``found=False``.
    """
    start = time.perf_counter()
    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(len(train))
    screen = _fixed(train, order[:cfg.screen_count])
    # A set as small as the screen is checked on itself: the check must never be empty.
    check = _fixed(train, order[cfg.screen_count:cfg.screen_count + CHECK_COUNT] if
                   len(train) > cfg.screen_count else order)
    found, tried, screened, best = _guess(cfg, rng, screen, check, progress, log)
    weights = _sharpen(best, check)
    result = SearchResult(
        trials=tried, found=found, screened=screened,
        train_accuracy=_set_accuracy(weights, train), val_accuracy=_set_accuracy(weights, val),
    )
    result.seconds = time.perf_counter() - start
    if progress is not None:
        progress(f"rnn_search: {'found' if found else 'NOT found'} after {tried:,} trials "
                 f"({result.seconds:.1f} s); train {result.train_accuracy:.4f}, val {result.val_accuracy:.4f}")
    return to_state_dict(weights), result


def _guess(cfg: SearchConfig, rng: np.random.Generator, screen: tuple, check: tuple,
           progress: Callable | None, log: Callable | None) -> tuple[bool, int, int, Weights]:
    """The search loop -> (found, trials, screened, best weights without candidate axis)."""
    tried, screened, best_acc, best = 0, 0, -1.0, None
    while tried < cfg.trials:
        count = min(cfg.chunk, cfg.trials - tried)
        w = sample(rng, count, cfg.hidden_size, cfg.weight_scale)
        screen_acc = _accuracy(w, *screen)
        passed = np.flatnonzero(screen_acc == 1.0)
        if best is None:  # nothing screened yet: remember the best partial guess
            best = _take(w, int(np.argmax(screen_acc)))
        if len(passed):
            w = {k: v[passed] for k, v in w.items()}
            check_acc = _accuracy(w, *check)
            first = int(np.argmax(check_acc))  # the first perfect one, else the best
            if check_acc[first] == 1.0:
                return True, tried + int(passed[first]) + 1, screened + first + 1, _take(w, first)
            screened += len(passed)
            if check_acc[first] > best_acc:
                best_acc, best = float(check_acc[first]), _take(w, first)
        tried += count
        if log is not None:
            log({"search/screened": screened, "search/best_check_accuracy": max(best_acc, 0.0)}, tried)
        if progress is not None:
            progress(f"rnn_search: {tried:,} trials, {screened} passed the screen, none perfect yet")
    return False, tried, screened, best


def _take(w: Weights, i: int) -> Weights:
    """Candidate i of a chunk, without the candidate axis."""
    return {k: v[i] for k, v in w.items()}


def _sharpen(w: Weights, check: tuple[np.ndarray, ...]) -> Weights:
    """Refit the readout on the check (training) sequences and scale it to be confident.

    The least certain check logit becomes TARGET_MARGIN: a saturated solution's states
    sit at a few fixed points, so held-out sequences get probabilities just as close to 0/1.
    """
    one = {k: np.asarray(v)[None] for k, v in w.items()}
    h = final_states(one, *check[:2])
    w_out, b_out = fit_readout(h, check[2])
    margin = float(np.abs(logits_of(h, w_out, b_out)).min())
    scale = np.float32(TARGET_MARGIN / max(margin, 1e-3))
    return {**w, "w_out": w_out[0] * scale, "b_out": b_out[0] * scale}


def _set_accuracy(w: Weights, seqs: SeqSet) -> float:
    return float(((predict_logits(w, seqs) > 0) == (seqs.labels == 1)).mean())


def to_state_dict(w: Weights) -> dict[str, Any]:
    """One weight set -> the state_dict of ``models.torch_rnn.cells.ManualRNN`` (torch tensors).

    The sampled bias goes to b_ih and b_hh is 0: only their sum enters the cell.
    """
    import torch  # only here: the search itself is NumPy, and tests of it stay light

    hidden = len(w["bias"])
    arrays = {
        "input.weight": np.asarray(w["w_ih"]).reshape(hidden, 1),
        "input.bias": np.asarray(w["bias"]),
        "hidden.weight": np.asarray(w["w_hh"]),
        "hidden.bias": np.zeros(hidden, np.float32),
        "readout.weight": np.asarray(w["w_out"]).reshape(1, hidden),
        "readout.bias": np.asarray(w["b_out"]).reshape(1),
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}


def from_state_dict(state: dict[str, Any]) -> Weights:
    """A ManualRNN state_dict -> one weight set for ``predict_logits`` (b_ih + b_hh folded)."""
    a = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, np.float32) for k, v in state.items()}
    return {
        "w_ih": a["input.weight"][:, 0], "w_hh": a["hidden.weight"],
        "bias": a["input.bias"] + a["hidden.bias"],
        "w_out": a["readout.weight"][0], "b_out": a["readout.bias"][0],
    }
