"""The XOR gate study: a Keras MLP on the 4-row truth table, trained from many seeds.

The original trains ``Sequential([Dense(16, relu, input_dim=2), Dense(1, sigmoid)])`` with
mean-squared error and Adam, full batch, and reports "epochs until all four cases are
right" from a single run. Here every shape is trained from ``cfg.seeds`` seeds (together,
see ``models/xor_mlp/stack.py``) and judged by the spread of that figure and by the *margin*:
how far the least confident output is from the 0.5 threshold. A net that cannot represent
XOR (128 linear units) "reaches 100%" only with every output a hair's breadth from 0.5.

Only ``run_study`` and ``fit_plain`` need TensorFlow; it is imported when they are called,
so reading a saved study (``load_study``, ``predict``) stays light.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class XorConfig:
    """One MLP shape of the study (the fields of a ``xor_mlp`` variant in params.yaml)."""

    family: str = "xor_mlp"
    hidden_layers: tuple[int, ...] | list[int] = (16,)  # units per hidden layer; (32, 32) is two
    activation: str = "relu"  # relu, linear, tanh or sigmoid
    output_activation: str = "sigmoid"  # or linear, for the 128-linear net
    loss: str = "mse"  # mean-squared error as in the original study; or bce
    optimizer: str = "adam"  # or sgd
    lr: float = 0.001  # Keras' Adam default, as in the original
    kernel_init: str = "glorot_uniform"
    bias_init: float = 0.0  # a small positive bias keeps ReLUs alive at start
    seeds: int = 20  # independent initialisations
    max_epochs: int = 5000  # full-batch epochs per seed
    original_epochs: int | None = None  # the original single run's figure (report only)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> XorConfig:
        """From a saved config (``seed_list`` and other extra keys ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)  # the truth table's inputs
XOR_Y = np.array([0, 1, 1, 0], dtype=np.float32)  # and its outputs
STUDY_FILE = "study.npz"  # the file name inside a model directory


def fit_plain(cfg: XorConfig, x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> list[float]:
    """The reference path, plain ``model.fit``: the per-epoch ``binary_accuracy`` log."""
    from models.xor_mlp.stack import build_plain, compile_plain

    model = compile_plain(build_plain(cfg, seed), cfg)
    y = np.asarray(y, np.float32).reshape(-1, 1)
    hist = model.fit(np.asarray(x, np.float32), y, epochs=epochs, batch_size=len(x), shuffle=False, verbose=0)
    return [float(a) for a in hist.history["binary_accuracy"]]


def epochs_to_100(accuracy: np.ndarray) -> int | None:
    """accuracy: (E,) per-epoch log -> the 1-based epoch first logging 1.0, None if never."""
    hits = np.flatnonzero(np.asarray(accuracy) == 1.0)
    return int(hits[0]) + 1 if hits.size else None


@dataclass
class StudyResult:
    """One shape trained from several seeds."""

    seeds: list[int]  # the Keras seeds, seed0 .. seed0 + S - 1
    max_epochs: int  # epochs every seed was trained for
    # One dict per seed: seed, epochs_to_100 (int | None), margin_at_100 (float | None, the
    # margin at that epoch), and of the final weights final_loss, final_accuracy, margin.
    per_seed: list[dict[str, Any]]
    weights: list[np.ndarray]  # final weights stacked over seeds: [kernel (S, in, out), bias (S, out), ...]
    loss_history: np.ndarray  # (E, S) per-epoch loss as model.fit logs it
    accuracy_history: np.ndarray  # (E, S) per-epoch binary_accuracy as model.fit logs it
    seconds: float = 0.0  # training wall clock; never written to DVC-tracked files

    def summary(self) -> dict[str, Any]:
        """The study's metrics (valid JSON: None where a figure does not exist).

        A seed that never reaches 100% counts as +inf epochs, not as "left out": dropping
        it would flatter the shape. A quantile that lands on (or between) such seeds is
        therefore unknown (None), as is the max whenever any seed failed.
        """
        raw = [r["epochs_to_100"] for r in self.per_seed]
        epochs = np.array([np.inf if e is None else e for e in raw], dtype=np.float64)
        margins = np.array([r["margin"] for r in self.per_seed])
        return {
            "epochs_to_100": quartiles(epochs),
            "never_solved": float(np.mean(~np.isfinite(epochs))),
            "margin": {"min": float(margins.min()), "median": float(np.median(margins))},
            "final_loss": {"median": float(np.median([r["final_loss"] for r in self.per_seed]))},
            "final_accuracy": {"min": float(min(r["final_accuracy"] for r in self.per_seed))},
            "seeds": len(self.seeds),
            "max_epochs": self.max_epochs,
        }


def quartiles(epochs: Any) -> dict[str, float | None]:
    """q1, median, q3, min and max of epoch counts, where +inf or None means "never reached".

    Unsolved seeds rank last rather than being dropped (dropping them would flatter the figure);
    a quartile that lands on one is None; ``min`` is None only when nothing was solved, ``max``
    whenever anything was not.
    """
    v = np.array([np.inf if e is None else e for e in epochs], dtype=np.float64)
    finite = v[np.isfinite(v)]
    return {
        "q1": _quantile(v, 0.25),
        "median": _quantile(v, 0.5),
        "q3": _quantile(v, 0.75),
        "min": float(finite.min()) if finite.size else None,
        "max": float(v.max()) if finite.size == v.size else None,
    }


def _quantile(values: np.ndarray, q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default) that is None when it touches +inf."""
    v = np.sort(values)
    pos = q * (len(v) - 1)
    lo, frac = int(np.floor(pos)), pos - np.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    if not np.isfinite(v[lo]) or (frac > 0 and not np.isfinite(v[hi])):
        return None
    return float(v[lo] + (v[hi] - v[lo]) * frac) if frac > 0 else float(v[lo])


def run_study(
    cfg: XorConfig, x: np.ndarray, y: np.ndarray, seed0: int = 0, *, progress: Callable[[str], Any] = print
) -> StudyResult:
    """Train ``cfg.seeds`` nets (Keras seeds seed0, seed0 + 1, ...) for ``cfg.max_epochs`` each.

    x: (4, 2) inputs, y: (4,) 0/1 targets. Every seed runs the full max_epochs, so the final
    loss and margin describe the same amount of training for every seed.
    """
    from models.xor_mlp.stack import train_stack

    seeds = list(range(seed0, seed0 + cfg.seeds))
    trace = train_stack(cfg, x, y, seeds, cfg.max_epochs)
    per_seed = []
    for i, seed in enumerate(seeds):
        e = epochs_to_100(trace.accuracy[:, i])
        per_seed.append({
            "seed": seed,
            "epochs_to_100": e,
            "margin_at_100": None if e is None else float(trace.margin[e - 1, i]),
            "final_loss": float(trace.final["loss"][i]),
            "final_accuracy": float(trace.final["accuracy"][i]),
            "margin": float(trace.final["margin"][i]),
        })
    result = StudyResult(
        seeds, cfg.max_epochs, per_seed, trace.weights, trace.loss, trace.accuracy, trace.seconds
    )
    s = result.summary()
    progress(
        f"xor {'x'.join(map(str, cfg.hidden_layers))} {cfg.activation}: "
        f"{len(seeds)} seeds x {cfg.max_epochs} epochs in {trace.seconds:.1f}s; epochs to 100% median {s['epochs_to_100']['median']}, "
        f"never {s['never_solved']:.0%}; min margin {s['margin']['min']:.3g}"
    )
    return result


def study_arrays(result: StudyResult, cfg: XorConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What ``study.npz`` and ``config.json`` hold; the caller writes them (stable bytes).

    Arrays: w0, w1, ... (stacked weights), seeds (S,), loss (E, S) float32 (per-epoch loss),
    right (E, S) uint8 (rows right per epoch, 0-4) and config (the variant's JSON plus
    ``seed_list``, as a 0-d string). -> (arrays, config).
    """
    config = {**asdict(cfg), "hidden_layers": list(cfg.hidden_layers), "seed_list": result.seeds}
    arrays = {f"w{i}": w for i, w in enumerate(result.weights)}
    arrays["seeds"] = np.asarray(result.seeds, np.int64)
    arrays["loss"] = np.asarray(result.loss_history, np.float32)
    arrays["right"] = np.rint(np.asarray(result.accuracy_history) * 4).astype(np.uint8)
    arrays["config"] = np.array(json.dumps(config, sort_keys=True))
    return arrays, config


def _study_file(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path / STUDY_FILE


def load_study(path: str | Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Read a saved study (``.npz`` or its directory): (stacked weights, config dict incl. 'seed_list')."""
    with np.load(_study_file(path), allow_pickle=False) as z:
        n = sum(1 for k in z.files if k.startswith("w"))
        return [z[f"w{i}"] for i in range(n)], json.loads(z["config"].item())


def predict(weights: list[np.ndarray], cfg: XorConfig | dict, x: np.ndarray) -> np.ndarray:
    """NumPy forward of every seed's net: x (n, 2) -> outputs (S, n) float32."""
    if isinstance(cfg, dict):  # as load_study returns it
        cfg = XorConfig.from_dict(cfg)
    acts = [cfg.activation] * len(cfg.hidden_layers) + [cfg.output_activation]
    h = np.asarray(x, np.float32)[None]
    for i, act in enumerate(acts):
        h = _NP_ACT[act](h @ weights[2 * i] + weights[2 * i + 1][:, None, :])
    return h[..., 0]


_NP_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, np.float32(0)),
    "linear": lambda z: z,
    "tanh": np.tanh,
    "sigmoid": lambda z: (1 / (1 + np.exp(-z))).astype(np.float32),
}
