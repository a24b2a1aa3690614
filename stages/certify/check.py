"""Independent re-verification of a parity certificate (numpy only).

Shares nothing with the search (certify.py, intervals.py) except the nets' step equations
(nets.py). Its interval arithmetic is its own and deliberately cruder: every operation is
done in plain float64 and then widened by REL times the magnitude of what was combined
(REL = 1e-12, about 4,500 times the unit roundoff, far above the rounding error of any
single op, of a dot product of up to 1,000 terms, or of numpy's tanh/exp), plus ABS.
From the certificate it re-derives:
1. every sequence of length 1..k, run from the zero state: every prefix's logit has the right sign;
2. every state at length k lies in a region of its parity;
3. every region's image under each bit, widened by the certificate's slack, lies in the region the
   transition table names, and that region's parity is the old one XOR the bit;
4. every region's readout has its parity's sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.certify.nets import Net, Weights, net_from_weights, readout, step

REL, ABS = 1e-12, 1e-300
Box = tuple[np.ndarray, np.ndarray]


def _widen(lo: np.ndarray, hi: np.ndarray, scale: np.ndarray) -> Box:
    """[lo, hi] widened by REL * scale + ABS on each side."""
    pad = REL * scale + ABS
    return lo - pad, hi + pad


def _mag(*arrays: np.ndarray) -> np.ndarray:
    """Elementwise max of absolute values."""
    return np.max(np.abs(np.stack(np.broadcast_arrays(*arrays))), axis=0)


class CrudeOps:
    """nets.Ops over (lo, hi) pairs: float64 results widened by REL times their operands' size."""

    def const(self, v: np.ndarray) -> Box:
        return np.asarray(v, dtype=np.float64), np.asarray(v, dtype=np.float64)

    def add(self, a: Box, b: Box) -> Box:
        return _widen(a[0] + b[0], a[1] + b[1], _mag(*a) + _mag(*b))

    def sub(self, a: Box, b: Box) -> Box:
        return _widen(a[0] - b[1], a[1] - b[0], _mag(*a) + _mag(*b))

    def mul(self, a: Box, b: Box) -> Box:
        p = np.stack(np.broadcast_arrays(a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]))
        return _widen(p.min(axis=0), p.max(axis=0), np.abs(p).max(axis=0))

    def lin(self, w: np.ndarray, a: Box) -> Box:
        """Endpoint form: each output's min and max over the box, exactly as real numbers, then widened."""
        pos = w[None] >= 0  # (1, m, n): which end of each input gives each output's minimum
        lo = (np.where(pos, a[0][:, None], a[1][:, None]) * w[None]).sum(axis=2)
        hi = (np.where(pos, a[1][:, None], a[0][:, None]) * w[None]).sum(axis=2)
        return _widen(lo, hi, _mag(*a) @ np.abs(w).T)

    def tanh(self, a: Box) -> Box:
        lo, hi = _widen(np.tanh(a[0]), np.tanh(a[1]), np.ones_like(a[0]))
        return np.maximum(lo, -1.0), np.minimum(hi, 1.0)

    def sigmoid(self, a: Box) -> Box:
        with np.errstate(over="ignore"):
            lo, hi = 1.0 / (1.0 + np.exp(-a[0])), 1.0 / (1.0 + np.exp(-a[1]))
        lo, hi = _widen(lo, hi, np.ones_like(lo))
        return np.maximum(lo, 0.0), np.minimum(hi, 1.0)

    def cols(self, a: Box, start: int, stop: int) -> Box:
        return a[0][..., start:stop], a[1][..., start:stop]

    def cat(self, parts: list[Box]) -> Box:
        return np.concatenate([p[0] for p in parts], axis=-1), np.concatenate([p[1] for p in parts], axis=-1)


OPS = CrudeOps()


def _sign_ok(net: Net, box: Box, parity: np.ndarray) -> np.ndarray:
    """Whether the logit's sign is provably that of each row's parity (+ odd, - even), (N,) bool."""
    lo, hi = readout(OPS, net, box)
    return np.where(parity == 1, lo[:, 0] > 0, hi[:, 0] < 0)


def _prefixes(net: Net, k: int) -> tuple[Box, np.ndarray, str]:
    """All sequences of length 1..k: -> (boxes at length k, their parities, '' or the first failure)."""
    box = (np.zeros((1, net.state_dim)), np.zeros((1, net.state_dim)))
    par = np.zeros(1, dtype=np.int64)
    for t in range(1, k + 1):
        boxes = [step(OPS, net, box, b) for b in (0, 1)]
        box = (np.vstack([boxes[0][0], boxes[1][0]]), np.vstack([boxes[0][1], boxes[1][1]]))
        par = np.concatenate([par, 1 - par])
        ok = _sign_ok(net, box, par)
        if not ok.all():
            return box, par, f"a sequence of length {t} is not provably answered right (row {int(np.argmin(ok))})"
    return box, par, ""


def _parse(cert: dict[str, Any], net: Net) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """-> (lo (R,d), hi (R,d), parity (R,), transitions (R,2), '' or what is malformed)."""
    regs = cert.get("regions") or []
    lo = np.array([r["lo"] for r in regs], dtype=np.float64).reshape(len(regs), -1)
    hi = np.array([r["hi"] for r in regs], dtype=np.float64).reshape(len(regs), -1)
    par = np.array([r["parity"] for r in regs], dtype=np.int64)
    trans = np.array(cert.get("transitions") or [], dtype=np.int64).reshape(-1, 2)
    problems = [
        (not regs, "no regions"),
        (lo.shape[1] != net.state_dim or hi.shape != lo.shape, "region dimension does not match the net"),
        (not (np.isfinite(lo).all() and np.isfinite(hi).all()), "non-finite region bound"),
        (not np.isin(par, (0, 1)).all(), "parity not 0/1"),
        (trans.shape != (len(regs), 2) or (trans < 0).any() or (trans >= len(regs)).any(), "bad transition table"),
    ]
    return lo, hi, par, trans, next((m for bad, m in problems if bad), "")


def _covered(state: Box, par: np.ndarray, lo: np.ndarray, hi: np.ndarray, rpar: np.ndarray) -> np.ndarray:
    """Whether each state box lies in some region of its parity, (N,) bool (chunked over states)."""
    out = np.zeros(len(par), dtype=bool)
    for s in range(0, len(par), 4096):
        a, b, p = state[0][s : s + 4096], state[1][s : s + 4096], par[s : s + 4096]
        inside = (lo[None] <= a[:, None]).all(axis=2) & (b[:, None] <= hi[None]).all(axis=2)
        out[s : s + 4096] = (inside & (p[:, None] == rpar[None])).any(axis=1)
    return out


def _closed(net: Net, lo: np.ndarray, hi: np.ndarray, par: np.ndarray, trans: np.ndarray, slack: float) -> str:
    """'' if every region's image under each bit (plus slack) fits its named target of the right parity."""
    for b in (0, 1):
        ilo, ihi = step(OPS, net, (lo, hi), b)
        t = trans[:, b]
        fits = (lo[t] <= ilo - slack).all(axis=1) & (ihi + slack <= hi[t]).all(axis=1)
        right = par[t] == (par ^ b)
        if not (fits & right).all():
            j = int(np.argmin(fits & right))
            what = "does not fit" if not fits[j] else "has the wrong parity"
            return f"image of region {j} under input {b} {what} in region {int(t[j])}"
    return ""


def check(certificate: dict[str, Any], family: str, weights: Weights) -> tuple[bool, str]:
    """Re-verify ``certificate`` for the net (family, weights); -> (valid, one-line explanation)."""
    if not certificate.get("certified"):
        return False, "certificate does not claim the net is certified"
    if certificate.get("family") != family:
        return False, f"certificate is for family {certificate.get('family')!r}, not {family!r}"
    net = net_from_weights(family, weights)
    if "weights_sha256" in certificate and certificate["weights_sha256"] != net.digest():
        return False, "certificate was made for other weights (weights_sha256 differs)"
    k, slack = int(certificate["k"]), float(certificate.get("slack", 0.0))
    if k < 1 or not slack >= 0:
        return False, "k must be >= 1 and slack >= 0"
    lo, hi, par, trans, bad = _parse(certificate, net)
    if bad:
        return False, bad
    states, spar, bad = _prefixes(net, k)
    if bad:
        return False, bad
    cov = _covered(states, spar, lo, hi, par)
    if not cov.all():
        return False, f"state at length {k} (row {int(np.argmin(cov))}) lies in no region of its parity"
    bad = _closed(net, lo, hi, par, trans, slack)
    if bad:
        return False, bad
    sign = _sign_ok(net, (lo, hi), par)
    if not sign.all():
        return False, f"readout sign not fixed (or wrong) on region {int(np.argmin(sign))}"
    return True, f"verified: 2^{k} prefixes, {len(par)} regions closed under both inputs, readout signs fixed"
