"""Small statistics shared by evaluate and report: binomial intervals and honest quartiles.

Pure Python and NumPy; SciPy is imported only by ``clopper_pearson``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n trials (95% for z = 1.96).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at
    k = n: 10,000 right out of 10,000 gives (0.99962, 1.0), i.e. error rates above
    about 0.04% are ruled out. n = 0 carries no information: (0.0, 1.0).
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z2 = z * z
    p = k / n
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exact ends where the formula only gets within rounding of them.
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return low, high


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (conservative) binomial interval from beta quantiles; (0.0, 1.0) when n = 0.

    At k = n the lower end is (alpha / 2) ** (1 / n): 0.69 for n = 10, 0.99963 for n = 10,000.
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import beta  # only here: SciPy costs a few hundred ms to import

    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _as_epochs(values: Iterable[float | None]) -> np.ndarray:
    """None and NaN (an unsolved seed, or an empty CSV cell) become +inf: 'never', not 'missing'."""
    out = [math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    return np.sort(np.asarray(out, dtype=np.float64))


def quantile(values: Iterable[float | None], q: float) -> float | None:
    """Linear-interpolated quantile (NumPy's default) where None/NaN count as +inf.

    The result is None when it depends on an unsolved value: the median of
    [10, 20, never] is 20, but of [10, never, never] it is unknown, not 10.
    """
    v = _as_epochs(values)
    if v.size == 0:
        return None
    pos = q * (v.size - 1)
    lo = int(math.floor(pos))
    frac = pos - lo
    hi = min(lo + 1, v.size - 1)
    if not math.isfinite(v[lo]) or (frac > 0 and not math.isfinite(v[hi])):
        return None
    return float(v[lo] + (v[hi] - v[lo]) * frac) if frac > 0 else float(v[lo])


def quartiles(values: Iterable[float | None]) -> dict[str, float | None]:
    """{"median", "q1", "q3", "min", "max"} of values where None/NaN mean 'never reached'.

    Unsolved values are ranked last (+inf) rather than dropped, since dropping them would
    flatter the figure; any statistic that lands on one is None. ``min`` is None only
    when nothing was solved, ``max`` whenever anything was not.
    """
    v = _as_epochs(values)
    finite = v[np.isfinite(v)]
    return {
        "median": quantile(v, 0.5),
        "q1": quantile(v, 0.25),
        "q3": quantile(v, 0.75),
        "min": float(finite.min()) if finite.size else None,
        "max": float(v.max()) if v.size and finite.size == v.size else None,
    }
