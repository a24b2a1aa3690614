"""The binomial interval every held-out accuracy is reported with (evaluate, seeds)."""

from __future__ import annotations

import math


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
