"""Interval arithmetic with outward rounding in float64, for the certificate search.

A value is a pair (lo, hi) of float64 arrays of the same shape with lo <= x <= hi for every
real x it stands for. Every operation returns bounds that enclose the exact real result:
- one rounded float op (+, -, *): the bound is moved one ulp outward with np.nextafter
  (round-to-nearest errs by at most half an ulp);
- a dot product of n terms (matmul): |fl - exact| <= gamma_n * sum|terms|, gamma_n = n u / (1 - n u),
  u = 2^-53, for any summation order (Higham, Accuracy and Stability, Thm 3.1; FMA included);
  the bound is widened by that, plus 1e-300 against underflow;
- tanh: numpy/libm tanh is assumed accurate to TANH_ULPS ulps (glibc documents <= 2);
  the bound is widened by that many ulps, then clipped to [-1, 1];
- sigmoid(x) = 1/2 + tanh(x/2)/2 (x/2 and the halving are exact barring underflow; the final
  addition is one rounding).
"""

from __future__ import annotations

import numpy as np

Interval = tuple[np.ndarray, np.ndarray]
U = 2.0**-53
TANH_ULPS = 4
TINY = 1e-300


def down(x: np.ndarray) -> np.ndarray:
    """The next float64 toward -inf (one ulp down)."""
    return np.nextafter(x, -np.inf)


def up(x: np.ndarray) -> np.ndarray:
    """The next float64 toward +inf (one ulp up)."""
    return np.nextafter(x, np.inf)


def _gamma(n: int) -> float:
    return n * U / (1.0 - n * U)


class OutwardOps:
    """nets.Ops over (lo, hi) pairs, every bound rounded outward."""

    def const(self, v: np.ndarray) -> Interval:
        v = np.asarray(v, dtype=np.float64)
        return v, v

    def add(self, a: Interval, b: Interval) -> Interval:
        return down(a[0] + b[0]), up(a[1] + b[1])

    def sub(self, a: Interval, b: Interval) -> Interval:
        return down(a[0] - b[1]), up(a[1] - b[0])

    def mul(self, a: Interval, b: Interval) -> Interval:
        p = np.stack(np.broadcast_arrays(a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]))
        return down(p.min(axis=0)), up(p.max(axis=0))

    def lin(self, w: np.ndarray, a: Interval) -> Interval:
        """a (N, n) interval times w.T, w (m, n) exact: -> (N, m), error of the sums bounded."""
        pos, neg = np.maximum(w, 0.0), np.minimum(w, 0.0)
        lo = a[0] @ pos.T + a[1] @ neg.T
        hi = a[1] @ pos.T + a[0] @ neg.T
        mag = np.maximum(np.abs(a[0]), np.abs(a[1])) @ np.abs(w).T
        err = up(_gamma(2 * w.shape[1] + 1) * up(mag)) + TINY
        return down(lo - err), up(hi + err)

    def tanh(self, a: Interval) -> Interval:
        lo, hi = np.tanh(a[0]), np.tanh(a[1])
        lo = lo - TANH_ULPS * np.spacing(np.abs(lo)) - TINY
        hi = hi + TANH_ULPS * np.spacing(np.abs(hi)) + TINY
        return np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0)

    def sigmoid(self, a: Interval) -> Interval:
        t_lo, t_hi = self.tanh((0.5 * a[0], 0.5 * a[1]))
        lo, hi = down(0.5 + 0.5 * t_lo) - TINY, up(0.5 + 0.5 * t_hi) + TINY
        return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)

    def cols(self, a: Interval, start: int, stop: int) -> Interval:
        return a[0][..., start:stop], a[1][..., start:stop]

    def cat(self, parts: list[Interval]) -> Interval:
        return np.concatenate([p[0] for p in parts], axis=-1), np.concatenate([p[1] for p in parts], axis=-1)
