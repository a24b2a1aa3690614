"""The report's short reading of the results, generated from the numbers (nothing hard-coded)."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from stages.report.inputs import (
    DEFAULTS,
    NOTEBOOK,
    OTHER,
    Inputs,
    ParityRun,
    XorRun,
    bucket_label,
    fmt_int,
    fmt_num,
    seed_epochs,
    xor_label,
)
from stages.report.tables import stopped

# An accuracy whose 95% interval reaches into this band is "near chance": a net that has not
# learnt parity guesses, but small biases (towards one answer, or by length) move it a few
# hundredths off 0.5 even on 10,000 sequences.
CHANCE_BAND = (0.45, 0.55)
GROUP_ORDER = (DEFAULTS, NOTEBOOK, OTHER)


def _get(run: ParityRun, key: str, bucket: str) -> Any:
    return run.metrics.get(key, {}).get(bucket)


def _near_chance(run: ParityRun, bucket: str) -> bool:
    lo, hi = _get(run, "ci95_low", bucket), _get(run, "ci95_high", bucket)
    acc = _get(run, "accuracy", bucket)
    lo, hi = (acc, acc) if lo is None or hi is None else (lo, hi)
    return lo <= CHANCE_BAND[1] and hi >= CHANCE_BAND[0]


def _ci(run: ParityRun, bucket: str) -> str:
    lo, hi = _get(run, "ci95_low", bucket), _get(run, "ci95_high", bucket)
    return "" if lo is None or hi is None else f" [{lo:.4f}, {hi:.4f}]"


def describe(run: ParityRun, inputs: Inputs) -> str:
    """One phrase for a variant's held-out accuracy; equal phrases are merged across variants.

    "certified for every length" only where stages/certify proved it; otherwise the claim names
    what it was tested on: "random sequences up to N", and the structured buckets apart.
    """
    buckets = [b for b in inputs.buckets if _get(run, "accuracy", b) is not None]
    if not buckets:
        return "not evaluated"
    random = inputs.random(buckets)
    phrase = _random_phrase(run, inputs, random) if random else ""
    structured = inputs.structured(buckets)
    if structured:
        wrong = [b for b in structured if _get(run, "accuracy", b) != 1.0]
        if not wrong:
            phrase += f"{'; ' if phrase else ''}100% on all {len(structured)} structured buckets"
        else:
            worst = min(wrong, key=lambda b: (_get(run, "accuracy", b), b))
            phrase += (f"{'; ' if phrase else ''}wrong on {len(wrong)} of {len(structured)} structured buckets "
                       f"(worst: {worst} {_get(run, 'accuracy', worst):.4f})")
    if run.certified:
        return "**certified for every length** (" + phrase + ")"
    return phrase


def _by_length_parity(run: ParityRun) -> str:
    """A net right on every even length and wrong on every odd one (or the reverse) computes
    something else than parity; say so when its per-length accuracies show it."""
    frame = run.by_length
    if frame is None or frame.empty:
        return ""
    odd = frame["length"] % 2 == 1
    acc = {name: (frame[sel]["accuracy"] * frame[sel]["count"]).sum() / max(frame[sel]["count"].sum(), 1)
           for name, sel in (("even", ~odd), ("odd", odd)) if sel.any()}
    if len(acc) < 2:
        return ""
    for good, bad in (("even", "odd"), ("odd", "even")):
        if acc[good] == 1.0 and acc[bad] == 0.0:
            n = int(frame[odd if bad == "odd" else ~odd]["count"].sum())
            return (f"; right on every {good} length and wrong on every {bad} one ({n:,} sequences): "
                    f"it does not compute parity")
    return ""


def _random_phrase(run: ParityRun, inputs: Inputs, buckets: list[str]) -> str:
    return _random_accuracy(run, inputs, buckets) + _by_length_parity(run)


def _random_accuracy(run: ParityRun, inputs: Inputs, buckets: list[str]) -> str:
    label = partial(bucket_label, inputs.params)
    perfect = [_get(run, "accuracy", b) == 1.0 for b in buckets]
    if all(perfect):
        return f"100% on random sequences up to {label(buckets[-1])}"
    if all(_near_chance(run, b) for b in buckets):
        return "near chance on every random bucket"
    first_miss = perfect.index(False)
    rest = "; ".join(f"{_get(run, 'accuracy', b):.4f}{_ci(run, b)} on {label(b)}" for b in buckets[first_miss:])
    return f"100% on random sequences up to {label(buckets[first_miss - 1])}, then {rest}" if first_miss else rest


def _with_range(phrase: str, runs: list[ParityRun]) -> str:
    """A near-chance phrase gets the range of the accuracies behind it."""
    if not phrase.startswith("near chance"):
        return phrase
    accs = [a for r in runs for a in r.metrics.get("accuracy", {}).values() if a is not None]
    low, high = min(accs), max(accs)
    return phrase + (f" (accuracy {low:.2f})" if f"{low:.2f}" == f"{high:.2f}" else f" (accuracy {low:.2f}–{high:.2f})")


def _merged(runs: list[ParityRun], inputs: Inputs) -> list[str]:
    """'a, b: phrase' lines, variants with the same phrase together."""
    phrases: dict[str, list[ParityRun]] = {}
    for run in runs:
        phrases.setdefault(describe(run, inputs), []).append(run)
    return [f"{', '.join(r.name for r in members)}: {_with_range(phrase, members)}"
            for phrase, members in phrases.items()]


def _group_lines(group: str, runs: list[ParityRun], inputs: Inputs) -> list[str]:
    key = inputs.params.training.probe_bucket
    key = key if key in inputs.buckets else next(iter(inputs.buckets), None)
    judged = [r for r in runs if key is not None and _get(r, "accuracy", key) is not None]
    perfect = sum(_get(r, "accuracy", key) == 1.0 for r in judged)
    head = f"**{group.capitalize()}** ({len(runs)} variant{'s' if len(runs) != 1 else ''})"
    if judged:
        head += f": {perfect} of {len(judged)} are 100% right on {bucket_label(inputs.params, key)}."
    if group == OTHER:  # each is its own experiment: say what it was
        body = [f"{r.name} ({r.settings or 'defaults'}" + (f"; {stopped(r)}" if "trials" in r.train else "")
                + f"): {_with_range(describe(r, inputs), [r])}" for r in runs]
    else:
        body = _merged(runs, inputs)
    return [f"- {head}", *(f"  - {line}" for line in body)]


def _speed_line(inputs: Inputs) -> list[str]:
    trained = [r for r in inputs.parity.values() if r.history is not None]
    probe = inputs.params.training.probe_bucket
    if not trained or probe is None:
        return []
    reached = sorted((r for r in trained if r.train.get("steps_to_probe_100") is not None),
                     key=lambda r: (r.train["steps_to_probe_100"], r.name))
    never = [r.name for r in trained if r.train.get("steps_to_probe_100") is None]
    parts = [f"{r.name} {fmt_int(r.train['steps_to_probe_100'])} ({fmt_int(r.train.get('seqs_to_probe_100'))} sequences)"
             for r in reached]
    line = (f"- Optimizer steps until the probe ({inputs.params.training.probe_count:,} sequences of "
            f"{bucket_label(inputs.params, probe)}, never trained on) was 100% right: "
            f"{'; '.join(parts) or 'none'}.")
    if never:
        line += f" Never within training: {', '.join(never)}."
    return [line]


def _evidence_line(inputs: Inputs) -> list[str]:
    """How much a perfect score proves: the weakest and the strongest perfect bucket."""
    perfect = [(int(_get(r, "n", b)), b, _get(r, "ci95_low", b)) for r in inputs.parity.values()
               for b in inputs.buckets if _get(r, "accuracy", b) == 1.0 and _get(r, "n", b) and _get(r, "ci95_low", b) is not None]
    if not perfect:
        return []
    small, large = min(perfect), max(perfect)
    line = (f"- A perfect score proves more the more sequences it rests on: {large[0]:,} right out of {large[0]:,} "
            f"({bucket_label(inputs.params, large[1])}) rules out error rates above {1 - large[2]:.2%} (95% Wilson)")
    if small[0] < large[0]:
        line += (f", but {small[0]:,} out of {small[0]:,} ({bucket_label(inputs.params, small[1])}) only rules out "
                 f"error rates above {1 - small[2]:.1%}")
    return [line + "."]


def parity_reading(inputs: Inputs) -> list[str]:
    lines: list[str] = []
    for group in GROUP_ORDER:
        runs = [r for r in inputs.parity.values() if r.group == group]
        if runs:
            lines += _group_lines(group, runs, inputs)
    return lines + _speed_line(inputs) + _evidence_line(inputs)


def _xor_line(run: XorRun) -> str:
    m, e = run.metrics, run.metrics.get("epochs_to_100", {})
    epochs = seed_epochs(run)
    solved = sum(math.isfinite(x) for x in epochs)
    mmin, loss = m.get("margin", {}).get("min"), m.get("final_loss", {}).get("median")
    line = (f"- **{xor_label(run.config)}**: {solved} of {len(epochs)} seeds reach 100% at some epoch within "
            f"{run.config.max_epochs:,}")
    if "final_accuracy" in run.seeds and (ended := run.seeds["final_accuracy"].astype(float)).lt(1.0).any():
        line += (f", but {int(ended.lt(1.0).sum())} of them end below it (final accuracy: mean {ended.mean():.2f}, "
                 f"worst {ended.min():.2f}); 'reached 100%' is not 'solved'")
    if e.get("median") is not None:
        q3 = "unknown" if e.get("q3") is None else fmt_num(e["q3"])
        line += f"; median {fmt_num(e['median'])} epochs (quartiles {fmt_num(e.get('q1'))} and {q3})"
    orig = run.config.original_epochs
    if orig is not None:
        faster = sum(x < orig for x in epochs)
        line += f"; the original single run took {orig:,}, and {faster} of {len(epochs)} seeds were faster"
    if run.config.activation == "linear" and mmin is not None:
        where = ("outputs exactly on the 0.5 threshold at the end (smallest final margin 0)" if mmin == 0
                 else f"outputs within {mmin:.3g} of the 0.5 threshold")
        line += f". A linear map cannot represent XOR: whatever '100%' it gets rests on {where}"
        if loss is not None and run.config.loss == "mse":
            line += f" (median final loss {loss:.3f}; answering 0.5 everywhere costs 0.25)"
    elif mmin is not None:
        line += f"; smallest final margin from 0.5: {mmin:.3f}"
    return line + "."


def xor_reading(inputs: Inputs) -> list[str]:
    lines = [_xor_line(run) for run in inputs.xor.values()]
    with_orig = [r for r in inputs.xor.values() if r.config.original_epochs is not None]
    outside = []
    for r in with_orig:
        e = r.metrics.get("epochs_to_100", {})
        q1, q3 = e.get("q1"), e.get("q3")
        q1, q3 = (math.inf if q1 is None else q1), (math.inf if q3 is None else q3)
        if not q1 <= r.config.original_epochs <= q3:
            outside.append(xor_label(r.config))
    if with_orig:
        lines.append(f"- Single runs say little: the original figure lies outside the middle half of the seeds for "
                     f"{len(outside)} of {len(with_orig)} shapes" + (f" ({', '.join(outside)})." if outside else "."))
    return lines
