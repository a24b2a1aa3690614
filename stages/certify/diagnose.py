"""Why a net is not certified: a concrete counterexample on long structured runs, the box that
would not close, and the unit still drifting under a long run of one bit (one line each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stages.certify.nets import FloatOps, Net, run_bits, step

if TYPE_CHECKING:
    from stages.certify.search import Failure


def structured_runs(n: int) -> dict[str, np.ndarray]:
    """Named bit sequences of length n that stress drift: long runs of one bit."""
    runs = {"1 then 0s": np.r_[1, np.zeros(n - 1)], "all 0s": np.zeros(n), "all 1s": np.ones(n),
            "10 repeated": np.tile([1, 0], n // 2), "1 then 0s then 1": np.r_[1, np.zeros(n - 2), 1]}
    rng = np.random.default_rng(0)
    for p in (0.003, 0.997, 0.5):
        runs[f"random P(1)={p}"] = (rng.random(n) < p).astype(float)
    return {k: v.astype(np.int64) for k, v in runs.items()}


def find_counterexample(net: Net, n: int = 2000) -> str | None:
    """Run the structured sequences (float64, every prefix) and name the first wrong prefix, if any."""
    runs = structured_runs(n)
    bits = np.stack(list(runs.values()))
    logits = run_bits(net, bits)
    truth = np.cumsum(bits, axis=1) % 2
    wrong = (logits > 0) != (truth == 1)
    for i, name in enumerate(runs):
        if wrong[i].any():
            t = int(np.argmax(wrong[i]))
            said = "even" if truth[i, t] == 1 else "odd"
            return f"counterexample: {name}, length {t + 1}, answered {said} (logit {logits[i, t]:.3g})"
    return None


def drift(net: Net, n: int = 200) -> tuple[int, int, float]:
    """After '1' then n copies of one bit, for bit 0 and 1: -> (bit, coordinate, |s_n - s_(n-2)| / 2) of
    the bit and coordinate still moving most (two steps apart: under 1s the parity alternates)."""
    ops, best = FloatOps(), (0, 0, -1.0)
    for bit in (0, 1):
        states = [step(ops, net, np.zeros((1, net.state_dim)), 1)]
        for _ in range(n):
            states = [*states[-2:], step(ops, net, states[-1], bit)]
        delta = np.abs(states[-1] - states[-3])[0] / 2
        if delta.max() > best[2]:
            best = (bit, int(np.argmax(delta)), float(delta.max()))
    return best


def unit_name(net: Net, i: int) -> str:
    """A state coordinate's name: 'h3', or 'c3' for the LSTM's cell state."""
    return f"c{i - net.hidden}" if i >= net.hidden else f"h{i}"


def explain(net: Net, fail: Failure, n_regions: int, width: float) -> str:
    """One line: a concrete counterexample if structured runs find one, the closure failure, the drift."""
    bit, unit, move = drift(net)
    parts = [
        f"under input {fail.bit} region {fail.source} maps into region {fail.region} "
        f"(parity {'odd' if fail.region_parity else 'even'}), which {fail.what} after {fail.rounds} rounds "
        f"({n_regions} regions, cluster width {width:g}); {unit_name(net, fail.unit)} grew most "
        f"(by {fail.growth:.2g} in the last round)",
        f"drift: after 1 then 200 x {bit}, {unit_name(net, unit)} still moves {move:.2g} per step"
        if move > 1e-9 else "no drift: every unit moves < 1e-9 per step after 1 then 200 x 0 or x 1",
    ]
    cex = find_counterexample(net)
    return "; ".join(([cex] if cex else []) + parts)
