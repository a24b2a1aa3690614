"""The regions a parity certificate is made of, and the interval states they start from.

``enumerate_prefixes`` runs every sequence of length 1..k in interval arithmetic; the region
builders turn the reached states into boxes, either clustered by parity (``initial_regions``) or
one per (last m bits, parity) (``suffix_regions``). search.py closes them under the step map;
check.py re-verifies the result independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.certify.intervals import Interval, OutwardOps
from stages.certify.nets import FloatOps, Net, readout, step

OPS = OutwardOps()


@dataclass
class Layer:
    """Interval states of all 2^t sequences of length t: lo, hi (2^t, d); parity (2^t,) 0/1.

    Row j's sequence: bits b_1..b_t with b_t = j // 2^(t-1) (the newest bit is the top bit).
    """

    lo: np.ndarray
    hi: np.ndarray
    parity: np.ndarray


def signed_margin(logit: Interval, parity: np.ndarray) -> np.ndarray:
    """Lower bound of logit * (+1 odd, -1 even) per row: > 0 means the answer is provably right."""
    return np.where(parity == 1, logit[0][:, 0], -logit[1][:, 0])


def decode(j: int, t: int) -> str:
    """The bit string (oldest first) of row j of a Layer of length t."""
    return "".join(str((j >> (i)) & 1) for i in range(t))


def enumerate_prefixes(net: Net, k: int) -> tuple[Layer, float, str | None]:
    """Run every sequence up to length k; -> (layer at length k, min prefix margin, failure or None)."""
    d = net.state_dim
    layer = Layer(np.zeros((1, d)), np.zeros((1, d)), np.zeros(1, dtype=np.int64))
    worst = np.inf
    for t in range(1, k + 1):
        s0, s1 = step(OPS, net, (layer.lo, layer.hi), 0), step(OPS, net, (layer.lo, layer.hi), 1)
        layer = Layer(np.concatenate([s0[0], s1[0]]), np.concatenate([s0[1], s1[1]]),
                      np.concatenate([layer.parity, 1 - layer.parity]))
        m = signed_margin(readout(OPS, net, (layer.lo, layer.hi)), layer.parity)
        bad = int(np.argmin(m))
        worst = min(worst, float(m[bad]))
        if m[bad] <= 0:
            seq = decode(bad, t)
            said = "even" if layer.parity[bad] == 1 else "odd"
            return layer, worst, f"exhaustive check fails at length {t}: sequence {seq} answered {said} (or not provably: logit bound {m[bad]:.3g})"
    return layer, worst, None


def cluster(points: np.ndarray, parity: np.ndarray, max_width: float) -> list[np.ndarray]:
    """Split points (N, d) into groups of one parity and extent <= max_width in every coordinate.

    Recursive: a group that mixes parities or is too wide is cut at the largest gap between
    sorted values of its widest-gapped coordinate. -> list of index arrays.
    """
    out, todo = [], [np.arange(len(points))]
    while todo:
        idx = todo.pop()
        pts = points[idx]
        extent = pts.max(axis=0) - pts.min(axis=0)
        if len(np.unique(parity[idx])) == 1 and extent.max() <= max_width:
            out.append(idx)
            continue
        srt = np.sort(pts, axis=0)
        gaps = np.diff(srt, axis=0)
        dim = int(np.argmax(gaps.max(axis=0)))
        cut = int(np.argmax(gaps[:, dim]))
        thr = 0.5 * (srt[cut, dim] + srt[cut + 1, dim])
        left = pts[:, dim] <= thr
        if left.all() or not left.any():  # identical points of both parities: cannot separate
            raise ValueError("states of both parities coincide")
        todo += [idx[left], idx[~left]]
    return out


@dataclass
class Regions:
    """Boxes lo, hi (R, d) with parity (R,), growing during the closure; target (R, 2) = t(j, b)."""

    lo: np.ndarray
    hi: np.ndarray
    parity: np.ndarray
    target: np.ndarray
    grown: np.ndarray = field(default_factory=lambda: np.zeros(0))  # total growth per region and coordinate
    fixed: bool = False  # transitions given in advance (suffix regions): never reassigned


def seed_states(net: Net, k: int, count: int = 256, length: int = 160, seed: int = 0) -> Layer:
    """Concrete float64 states after random sequences (P(1) in 0.02..0.98), at lengths k..length
    (every 4th): (M, d) points that shape the regions like the states reached later. A guess only:
    nothing is assumed of them; the closure alone proves."""
    rng = np.random.default_rng(seed)
    bits = (rng.random((count, length)) < rng.uniform(0.02, 0.98, (count, 1))).astype(np.int64)
    ops, s = FloatOps(), np.zeros((count, net.state_dim))
    pts, par = [], []
    for t in range(length):
        s = np.where(bits[:, t : t + 1] == 1, step(ops, net, s, 1), step(ops, net, s, 0))
        if t + 1 >= k and (t + 1 - k) % 4 == 0:
            pts.append(s)
            par.append(bits[:, : t + 1].sum(axis=1) % 2)
    pts_a = np.concatenate(pts)
    return Layer(pts_a, pts_a, np.concatenate(par))


def initial_regions(layer: Layer, max_width: float, pad: float, extra: Layer | None = None) -> Regions:
    """One box per cluster of the length-k states (and the ``extra`` seed states): the hull of its
    members' intervals, plus pad."""
    if extra is not None:
        layer = Layer(np.concatenate([layer.lo, extra.lo]), np.concatenate([layer.hi, extra.hi]),
                      np.concatenate([layer.parity, extra.parity]))
    groups = cluster(0.5 * (layer.lo + layer.hi), layer.parity, max_width)
    lo = np.stack([layer.lo[g].min(axis=0) for g in groups]) - pad
    hi = np.stack([layer.hi[g].max(axis=0) for g in groups]) + pad
    par = np.array([layer.parity[g[0]] for g in groups])
    return Regions(lo, hi, par, -np.ones((len(groups), 2), dtype=np.int64), np.zeros(lo.shape))


def suffix_seed_states(net: Net, k: int, m: int, count: int = 128, length: int = 400,
                       seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concrete float64 states after random sequences (P(1) in 0..1, so long runs of one bit occur)
    at lengths k..length (every 3rd): -> (points (M, d), suffix codes (M,), parities (M,)).
    Code of a sequence = its last m bits, newest bit as the top bit (as in Layer rows). Shapes only."""
    rng = np.random.default_rng(seed)
    bits = (rng.random((count, length)) < rng.uniform(0.0, 1.0, (count, 1))).astype(np.int64)
    ops, s = FloatOps(), np.zeros((count, net.state_dim))
    pts, codes, par = [], [], []
    weights = 1 << np.arange(m)
    for t in range(length):
        s = np.where(bits[:, t : t + 1] == 1, step(ops, net, s, 1), step(ops, net, s, 0))
        if t + 1 >= k and (t + 1 - k) % 3 == 0:
            pts.append(s)
            codes.append(bits[:, t + 1 - m : t + 1] @ weights)
            par.append(bits[:, : t + 1].sum(axis=1) % 2)
    return np.concatenate(pts), np.concatenate(codes), np.concatenate(par)


def suffix_regions(net: Net, layer: Layer, k: int, m: int, pad: float, seeds: bool = True) -> Regions:
    """2^(m+1) regions indexed by (last m bits w, parity p): region 2w + p is the hull of the
    length-k states (and seed states) with that suffix and parity, plus pad. Transitions are fixed:
    t(2w + p, b) = 2 ((w >> 1) | (b << (m - 1))) + (p XOR b). Suits contracting nets, where the
    last few bits nearly determine the state."""
    rows = np.arange(len(layer.lo))
    code = np.concatenate([rows >> (k - m)]) * 2 + layer.parity
    lo_pts, hi_pts = layer.lo, layer.hi
    if seeds:
        p, c, q = suffix_seed_states(net, k, m)
        lo_pts, hi_pts, code = np.concatenate([lo_pts, p]), np.concatenate([hi_pts, p]), np.concatenate([code, 2 * c + q])
    n = 2 ** (m + 1)
    d = layer.lo.shape[1]
    lo, hi = np.full((n, d), np.inf), np.full((n, d), -np.inf)
    np.minimum.at(lo, code, lo_pts)
    np.maximum.at(hi, code, hi_pts)
    idx = np.arange(n)
    w, par = idx >> 1, idx & 1
    target = np.stack([2 * ((w >> 1) | (b << (m - 1))) + (par ^ b) for b in (0, 1)], axis=1)
    return Regions(lo - pad, hi + pad, par, target.astype(np.int64), np.zeros((n, d)), fixed=True)
