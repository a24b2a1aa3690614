"""Search for a parity certificate of a trained recurrent net (numpy only).

A certificate proves that the net (exact real arithmetic, float32 weights converted exactly
to float64) answers the parity of EVERY bit sequence of EVERY length >= 1 correctly:

1. Every sequence of length 1..k is run in interval arithmetic (intervals.py) from the zero
   state and every prefix's logit interval has the right sign (covers lengths 1..k).
2. Regions R_j (boxes lo_j <= s <= hi_j in state space) each carry a parity p_j. Every state
   reached at length k lies in some region of its sequence's parity.
3. For every region j and bit b, the interval image of R_j under one step, widened by
   ``slack`` per coordinate, lies inside region t(j, b), and p_t(j,b) = p_j XOR b.
4. On every region the readout's interval has the sign of p_j (positive for odd).
By induction over the length, every state after n >= k bits lies in a region of its true
parity, so its logit has the right sign.

Regions are searched in two ways (certificate format and checker are the same for both):
(a) suffix regions: one box per (last m bits, parity), m = 1..6, transitions fixed by the suffix
    shift, grown to closure -- suits nets that contract strongly (the last few bits nearly fix the
    state); (b) helper-1's clustered boxes with transitions chosen during the closure.
The search (this module) finds k, the regions and t; ``check.py`` re-verifies a
certificate independently. When no certificate is found, ``reason`` says why in one line,
with a concrete counterexample or the drifting unit where one is found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.certify.diagnose import explain, find_counterexample
from stages.certify.intervals import Interval
from stages.certify.nets import (
    KIND,
    Net,
    Weights,
    net_from_weights,
    readout,
    step,
    weights_from_keras,
    weights_from_torch_state_dict,
)
from stages.certify.regions import (
    OPS,
    Layer,
    Regions,
    enumerate_prefixes,
    initial_regions,
    seed_states,
    signed_margin,
    suffix_regions,
)

__all__ = ["certify", "weights_from_torch_state_dict", "weights_from_keras", "step", "readout"]
FORMAT = "paritylab-parity-certificate/1"


# ----------------------------------------------------------------------------- closure (regions: regions.py)


def readout_margin(net: Net, lo: np.ndarray, hi: np.ndarray, parity: np.ndarray) -> np.ndarray:
    """Lower bound of the correctly signed logit on each box (R, d) -> (R,)."""
    return signed_margin(readout(OPS, net, (lo, hi)), parity)


@dataclass
class Failure:
    """Why the closure stopped: the region that grew, the region and bit whose image grew it,
    the state coordinate that grew most in total, its growth in the last round, and what went wrong."""

    region: int
    source: int
    bit: int
    unit: int
    growth: float
    rounds: int
    what: str
    region_parity: int = 0


def images(net: Net, regions: Regions, slack: float) -> Interval:
    """Interval images of every region under bit 0 then bit 1, widened by slack: (2R, d) each."""
    box = (regions.lo, regions.hi)
    (lo0, hi0), (lo1, hi1) = step(OPS, net, box, 0), step(OPS, net, box, 1)
    return np.concatenate([lo0, lo1]) - slack, np.concatenate([hi0, hi1]) + slack


def assign(regions: Regions, img: Interval) -> np.ndarray:
    """Target of each image (2R,): its previous target if that still holds it, else the
    region of the required parity that needs the least growth (L1) to hold it."""
    n = len(regions.lo)
    if regions.fixed:
        return regions.target.T.reshape(-1).copy()
    want = np.concatenate([regions.parity, 1 - regions.parity])
    prev = regions.target.T.reshape(-1)
    ok = (prev >= 0) & _contains(regions, np.maximum(prev, 0), img)
    out = prev.copy()
    for i in np.flatnonzero(~ok):
        need = (np.maximum(regions.lo - img[0][i], 0) + np.maximum(img[1][i] - regions.hi, 0)).sum(axis=1)
        out[i] = int(np.argmin(np.where(regions.parity == want[i], need, np.inf)))
    regions.target = out.reshape(2, n).T.copy()
    return out


def _contains(regions: Regions, t: np.ndarray, img: Interval) -> np.ndarray:
    """Whether region t[i] contains image i, (2R,) bool."""
    return (regions.lo[t] <= img[0]).all(axis=1) & (img[1] <= regions.hi[t]).all(axis=1)


def close(net: Net, regions: Regions, slack: float, widen: float, max_rounds: int,
          q_max: float = 0.98) -> Failure | None:
    """Grow regions until every image fits its target (Kleene iteration, all regions per round).

    Widening: a region that must grow by g grows by g * factor, factor = 1 + widen, or, when its
    growth shrinks geometrically (ratio q < 0.98 between rounds), 1 + 2 q / (1 - q) (about twice
    the rest of the geometric series). Mutates ``regions``; -> None on success, else the Failure.
    """
    n, last = len(regions.lo), np.zeros(len(regions.lo))
    for rounds in range(1, max_rounds + 1):
        img = images(net, regions, slack)
        t = assign(regions, img)
        grow_lo = np.maximum(regions.lo[t] - img[0], 0)
        grow_hi = np.maximum(img[1] - regions.hi[t], 0)
        if not (grow_lo.any() or grow_hi.any()):
            return None
        now = np.zeros(n)
        np.maximum.at(now, t, np.maximum(grow_lo, grow_hi).max(axis=1))
        factor = _widening(now, last, widen, q_max)[t][:, None]
        last = now
        new_lo, new_hi = regions.lo.copy(), regions.hi.copy()
        np.minimum.at(new_lo, t, regions.lo[t] - grow_lo * factor)
        np.maximum.at(new_hi, t, regions.hi[t] + grow_hi * factor)
        regions.grown += (regions.lo - new_lo) + (new_hi - regions.hi)
        regions.lo, regions.hi = new_lo, new_hi
        fail = _check_grown(net, regions, t, grow_lo + grow_hi, rounds, max_rounds, n)
        if fail:
            return fail
    return None


def _widening(now: np.ndarray, last: np.ndarray, widen: float, q_max: float = 0.98) -> np.ndarray:
    """Growth factor per region (R,) from this round's and last round's growth (R,).

    Growth shrinking geometrically (ratio q < q_max) is extrapolated: factor 1 + 2q/(1-q) (twice
    the rest of the series; a slow integrator with q = 0.9993 thus jumps ~2,800 growths at once)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(last > 0, now / last, 1.0)
    geometric = (q > 0) & (q < q_max)
    return np.where(geometric, 1 + 2 * q / (1 - np.where(geometric, q, 0)), 1 + widen)


def _check_grown(net: Net, regions: Regions, t: np.ndarray, growth: np.ndarray, rounds: int,
                 max_rounds: int, n: int) -> Failure | None:
    """After a round: is every readout sign still fixed and the round budget left? Else a Failure."""
    margin = readout_margin(net, regions.lo, regions.hi, regions.parity)
    bad = np.flatnonzero((margin <= 0) | ~np.isfinite(regions.hi).all(axis=1) | ~np.isfinite(regions.lo).all(axis=1))
    if len(bad):
        what, r = "loses its readout sign", int(bad[0])
    elif rounds >= max_rounds:
        what, r = "finds no fixed point", int(np.argmax(regions.grown.max(axis=1)))
    else:
        return None
    into = np.flatnonzero(t == r)
    src = int(into[np.argmax(growth[into].max(axis=1))]) if len(into) else 0
    unit = int(np.argmax(regions.grown[r]))
    return Failure(r, src % n, src // n, unit, float(growth[src].max()), rounds, what, int(regions.parity[r]))


# ----------------------------------------------------------------------------- the search and its result


def _result(base: dict[str, Any], ok: bool, reason: str, **extra: Any) -> dict[str, Any]:
    """The certificate dict (JSON-serialisable)."""
    return {**base, "certified": ok, "reason": reason, **extra}


def _attempt(net: Net, layer: Layer, width: float, slack: float, widen: float,
             max_rounds: int, max_regions: int, extra: Layer | None) -> tuple[Regions | None, str | Failure]:
    """Cluster at one width and close; -> (regions, "ok") or (None, why)."""
    try:
        regions = initial_regions(layer, width, slack, extra)
    except ValueError as e:
        return None, f"cluster width {width:g}: {e}"
    if len(regions.lo) > max_regions:
        return None, f"cluster width {width:g}: {len(regions.lo)} regions > max_regions {max_regions}"
    fail = close(net, regions, slack, widen, max_rounds)
    return (regions, "ok") if fail is None else (regions, fail)


def certify(family: str, weights: Weights, k: int = 14, *, slack: float = 1e-7,
            widths: tuple[float, ...] = (np.inf, 1.0, 0.5, 0.25, 0.125), widen: float = 0.1,
            max_rounds: int = 300, max_regions: int = 600, time_budget: float = 8.0,
            seeds: bool = True, suffixes: tuple[int, ...] = (1, 2, 3, 4, 5, 6)) -> dict[str, Any]:
    """Try to prove that the net answers every sequence's parity; -> certificate dict.

    weights: torch state-dict keys (or keras keys, see nets.net_from_weights), numpy arrays.
    k: exhaustive length (2^k sequences). slack: each image is widened by this per coordinate
    before it must fit (so the proof also holds for any per-step error <= slack after length k).
    widths: cluster widths tried in turn (regions start as one box per cluster).
    seeds: also shape the regions with concrete states of longer random sequences (seed_states).
    suffixes: first tried, in turn: regions indexed by (last m bits, parity) with fixed transitions
    (suffix_regions), m in suffixes; then the clustered regions at each width.
    Keys: certified, reason, k, slack, regions [{lo, hi, parity}], transitions [[t0, t1]],
    margin {prefix_min, region_min}, family, kind, hidden_size, state_dim, weights_sha256, seconds.
    """
    t0 = time.perf_counter()
    if family not in KIND:  # a family with no step equations here: say so, prove nothing
        return {"format": FORMAT, "family": family, "k": k, "certified": False,
                "reason": f"no prover for family {family} (stages/certify/ proves rnn, lstm and gru cells)"}
    net = net_from_weights(family, weights)
    base = {"format": FORMAT, "family": family, "kind": net.kind, "hidden_size": net.hidden,
            "state_dim": net.state_dim, "k": k, "slack": slack, "weights_sha256": net.digest()}
    layer, prefix_margin, bad = enumerate_prefixes(net, k)
    base["margin"] = {"prefix_min": prefix_margin}
    if bad:
        return _result(base, False, bad, seconds=time.perf_counter() - t0)
    why: list[str] = []
    first_fail: tuple[Failure, int, float] | None = None
    for m in suffixes:
        if m >= k:
            continue
        regions = suffix_regions(net, layer, k, m, 2 * slack + 1e-9, seeds)
        if not (np.isfinite(regions.lo).all() and np.isfinite(regions.hi).all()):
            why.append(f"suffix {m}: a (suffix, parity) class has no state")
            continue
        fail = close(net, regions, 2 * slack + 1e-9, widen, max_rounds, q_max=0.9999)
        if fail is None:
            return _success(base, net, regions, f"suffix {m}", t0)
        why.append(f"suffix {m}: {len(regions.lo)} regions, region {fail.region} {fail.what} after {fail.rounds} rounds")
        if time.perf_counter() - t0 > time_budget:
            break
    for width in widths:
        regions, status = _attempt(net, layer, width, 2 * slack + 1e-9, widen, max_rounds, max_regions,
                                   seed_states(net, k) if seeds else None)
        if status == "ok":
            return _success(base, net, regions, width, t0)
        if isinstance(status, Failure) and (first_fail is None or status.rounds >= first_fail[0].rounds):
            first_fail = (status, len(regions.lo), width)  # report the attempt that got furthest
        why.append(status if isinstance(status, str) else f"width {width:g}: {len(regions.lo)} regions, region {status.region} {status.what} after {status.rounds} rounds")
        if time.perf_counter() - t0 > time_budget:
            break
    if first_fail:
        reason = explain(net, *first_fail)
    else:
        reason = "; ".join([c for c in [find_counterexample(net)] if c] + why)
    return _result(base, False, reason, attempts=[str(w) for w in why], seconds=time.perf_counter() - t0)


def _success(base: dict[str, Any], net: Net, regions: Regions, width: float | str, t0: float) -> dict[str, Any]:
    """Package closed regions as a certificate (regions, transitions, margins)."""
    margin = readout_margin(net, regions.lo, regions.hi, regions.parity)
    base["margin"]["region_min"] = float(margin.min())
    regs = [{"lo": lo.tolist(), "hi": hi.tolist(), "parity": int(p)}
            for lo, hi, p in zip(regions.lo, regions.hi, regions.parity, strict=True)]
    reason = (f"certified: all 2^{base['k']} prefixes checked, {len(regs)} regions closed under both inputs "
              f"({width if isinstance(width, str) else f'cluster width {width:g}'}), min readout margin {margin.min():.3g}")
    return _result(base, True, reason, regions=regs, transitions=regions.target.tolist(),
                   seconds=time.perf_counter() - t0)
