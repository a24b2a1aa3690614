"""`make bench`: how fast every parity family trains and evaluates, the XOR study, and `dvc repro`.

Everything runs in this one process on this machine (dvc repro in a temporary copy of the
repository), each figure is the median of --repeats measurements, and the results are printed
as a table and written to bench/results.json. Training throughput is also quoted as a ratio
to the original notebook's one-sequence-at-a-time loop of the same kind (bench/notebook_loops.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything can import TensorFlow

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make models/, stages/ and bench/ importable

HIDDEN = 8
TRAIN_LENGTHS = (1, 20)  # training lengths, uniform, as the pipeline's train bucket
TORCH_FAMILIES = (
    "rnn_packed", "rnn_per_sequence", "manual_rnn", "manual_rnn_bce", "manual_lstm", "lstm", "gru",
)
LSTM_LIKE = {"lstm", "manual_lstm", "gru", "keras_lstm"}  # compared with the notebook's LSTM loop
NOTEBOOK = {"rnn": "notebook_rnn_per_sequence", "lstm": "notebook_manual_lstm"}
XOR_SHAPES = (
    "xor_mlp_16_relu", "xor_mlp_32_relu", "xor_mlp_32x32_relu", "xor_mlp_64_relu", "xor_mlp_128_linear",
)
EVAL_COUNT = 100  # sequences per evaluation measurement
# rnn_per_sequence makes one library call per sequence, so its time grows with the count and
# a 2-sequence probe predicts the whole; the batched families cost per step, not per sequence.
PER_SEQUENCE = {"rnn_per_sequence"}
PACKAGES = ("torch", "tensorflow", "keras", "numpy", "dvc")  # versions recorded with the results
Step = Callable[[], None]


def say(line: str) -> None:
    print(f"bench: {line}", flush=True)


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    """The median of ``repeats`` calls of ``measure``."""
    return statistics.median(measure() for _ in range(repeats))


def random_seqs(count: int, lo: int, hi: int, seed: int = 0) -> Any:
    """An in-memory stages.core.data.SeqSet: ``count`` random bit strings, lengths uniform in [lo, hi]."""
    from stages.core.data import SeqSet

    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, size=count, dtype=np.int64)
    bits = rng.integers(0, 2, int(lengths.sum()), dtype=np.uint8)
    return SeqSet.from_stream(f"bench_{lo}_{hi}", lengths, bits)


def throughput(make_step: Callable[[], Step], batch: int, steps: int) -> float:
    """Sequences per second of ``steps`` optimizer steps, after a warm-up on the same fresh model."""
    step = make_step()
    for _ in range(max(2, steps // 10)):  # first calls pay for allocation, tracing, XLA compiling
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def torch_step(family: str, seqs: Any, cfg: dict[str, Any], device: str = "cpu") -> Step:
    """A fresh model of ``family`` on ``device`` and the pipeline's own step (models/torch_train.py).

    Each step reads its loss back (``loss.item()``), so on a GPU a timed step has finished.
    """
    from models.common import Progress
    from models.torch_rnn import zoo as torch_zoo
    from models.torch_rnn.train import Sampler, _optimizer, _step

    torch.manual_seed(0)
    model = torch_zoo.build(family, hidden_size=HIDDEN).to(device).train()
    sampler, optimizer, state = Sampler(seqs, device, 0), _optimizer(model, cfg), Progress()
    criterion = torch_zoo.loss_fn(family)
    return lambda: _step(model, criterion, optimizer, sampler, cfg, state)


def bench_training(
    cfg: dict[str, Any], steps: int, notebook_steps: int, repeats: int, threads: int
) -> dict[str, float]:
    """Training sequences per second by variant: the torch families, keras_lstm, the notebook loops."""
    from bench import notebook_loops
    from bench.keras_parts import keras_step

    seqs = random_seqs(10_000, *TRAIN_LENGTHS)
    makers: dict[str, tuple[Callable[[], Step], int, int]] = {
        f: ((lambda f=f: torch_step(f, seqs, cfg)), cfg["batch_size"], steps) for f in TORCH_FAMILIES
    }
    makers["keras_lstm"] = (lambda: keras_step(seqs, cfg, threads, HIDDEN), cfg["batch_size"], steps)
    for kind, name in NOTEBOOK.items():
        makers[name] = ((lambda k=kind: notebook_loops.make_step(k)), notebook_loops.BATCH, notebook_steps)
    out = {}
    for name, (make, batch, n) in makers.items():
        say(f"training {name} ({n} steps of {batch} sequences x {repeats}) ...")
        out[name] = median_of(repeats, lambda make=make, batch=batch, n=n: throughput(make, batch, n))
    return out


def ratios(seqs_per_s: dict[str, float]) -> dict[str, float]:
    """Each variant's throughput over the notebook loop of its kind (LSTM-like or RNN-like)."""

    def baseline(name: str) -> float:
        kind = "lstm" if name in LSTM_LIKE or name == NOTEBOOK["lstm"] else "rnn"
        return seqs_per_s[NOTEBOOK[kind]]

    return {name: v / baseline(name) for name, v in seqs_per_s.items()}


def bench_eval(
    length: int, repeats: int, budget_s: float, max_batch_bits: int
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Seconds of predict_logits on EVAL_COUNT random sequences of ``length``, by torch family.

    -> (seconds or None by family, reason by skipped family). A per-sequence family whose
    2-sequence probe predicts more than ``budget_s`` is skipped.
    """
    from models.torch_rnn import zoo as torch_zoo

    seqs = random_seqs(EVAL_COUNT, length, length, seed=length)
    times: dict[str, float | None] = {}
    skipped: dict[str, str] = {}
    for family in TORCH_FAMILIES:
        torch.manual_seed(0)
        model = torch_zoo.build(family, hidden_size=HIDDEN)

        def run(s: Any = seqs, m: torch.nn.Module = model) -> float:
            start = time.perf_counter()
            torch_zoo.predict_logits(m, s, "cpu", max_batch_bits)  # batched as the evaluate stage does
            return time.perf_counter() - start

        if family in PER_SEQUENCE:
            estimate = run(seqs.subset(np.arange(2))) * EVAL_COUNT / 2
            if estimate > budget_s:
                times[family] = None
                skipped[family] = f"estimated {estimate:.0f} s from 2 sequences > budget {budget_s:.0f} s"
                say(f"evaluating {family} at length {length:,}: skipped ({skipped[family]})")
                continue
        say(f"evaluating {family} on {EVAL_COUNT} sequences of length {length:,} x {repeats} ...")
        times[family] = median_of(repeats, run)
    return times, skipped


def machine() -> dict[str, Any]:
    """CPU model, counts and library versions: what a reader needs to compare two results files."""
    model = platform.processor()
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model name")), model)
    except OSError:  # no lscpu (macOS): keep platform's answer
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: importlib.metadata.version(p) for p in PACKAGES},
    }


def peak_rss_mb(who: int) -> float:
    """Peak RSS in MB of this process (resource.RUSAGE_SELF) or of its largest finished child.

    A child's figure includes the memory it shared with this process when forked, so children
    are measured early (dvc repro runs first), while this process is still small.
    """
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(who).ru_maxrss * unit / 2**20


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(r: dict[str, Any]) -> str:
    """The printed summary: one row per variant, then the single figures."""
    lines = [f"{'variant':<28}{'train seq/s':>13}{'x notebook':>12}{'eval 1k s':>11}{'eval 100k s':>13}"]
    for name, v in r["train_seqs_per_s"].items():
        ratio = _fmt(r["train_ratio_vs_notebook"][name], ".1f") + "x"
        e1k, e100k = _fmt(r["eval_1k_s"].get(name), ".3f"), _fmt(r["eval_100k_s"].get(name), ".2f")
        lines.append(f"{name:<28}{v:>13,.0f}{ratio:>12}{e1k:>11}{e100k:>13}")
    lines += [f"  {key} is null: {why}" for key, why in r["eval_skipped"].items()]
    for key in ("xor_study_s", "repro_full_s", "repro_full_parallel_s", "repro_noop_s", "peak_rss_mb",
                "peak_rss_self_mb", "peak_rss_children_mb"):
        lines.append(f"{key:<28}{_fmt(r[key], '.1f'):>13}")
    m = r["machine"]
    lines.append(f"{m['cpu']}, {m['cpu_count']} CPUs, threads {r['threads']}, median of {r['repeats']}")
    return "\n".join(lines)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; --quick fills in the defaults of those not given."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--repeats", type=_positive, help="measurements per figure, median quoted (default 3; --quick: 1)")
    add("--threads", type=_positive, default=1, help="torch and TensorFlow threads (default 1)")
    add("--steps", type=_positive, help="timed steps per batched variant (default 200; --quick: 20)")
    add("--notebook-steps", type=_positive, help="timed steps per notebook loop (default 50; --quick: 5)")
    add("--eval-budget", type=float, default=30.0,
        help="seconds: skip rnn_per_sequence's evaluation when a probe predicts more (default 30)")
    add("--quick", action="store_true", help="smoke check: fewer steps, 1 repeat, no dvc repro")
    add("--skip-repro", action="store_true", help="do not time dvc repro")
    add("--repro-params", type=Path, default=ROOT / "params.yaml",
        help="params file of the timed dvc repro (default params.yaml: the full pipeline, many minutes)")
    add("--repro-repeats", type=_positive, default=1,
        help="full dvc repro runs, each in a fresh copy (default 1, as one takes many minutes); "
             "the no-op repro runs --repeats times")
    add("--out", type=Path, default=ROOT / "bench" / "results.json", help="default bench/results.json")
    a = p.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 3)
    a.steps = a.steps or (20 if a.quick else 200)
    a.notebook_steps = a.notebook_steps or (5 if a.quick else 50)
    a.skip_repro = a.skip_repro or a.quick
    a.repro_params = a.repro_params.resolve()
    return a


def measure(args: argparse.Namespace, params: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Every measurement: dvc repro first (see peak_rss_mb), then training, evaluation, the XOR study."""
    from bench.keras_parts import xor_study_seconds
    from bench.repro import bench_repro

    r: dict[str, Any] = {"repro_full_s": None, "repro_full_parallel_s": None, "repro_noop_s": None,
                         "peak_rss_children_mb": None}
    if not args.skip_repro:
        try:
            r |= bench_repro(args.repro_params, args.repro_repeats, args.repeats, say)
        except RuntimeError as e:  # keep the other figures; say why these are missing
            r["repro_error"] = str(e)
        r["peak_rss_children_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    r["train_seqs_per_s"] = seqs_per_s = bench_training(
        cfg, args.steps, args.notebook_steps, args.repeats, args.threads
    )
    r["train_ratio_vs_notebook"] = ratios(seqs_per_s)
    r["eval_skipped"] = {}
    for key, length in (("eval_1k_s", 1_000), ("eval_100k_s", 100_000)):
        r[key], skipped = bench_eval(length, args.repeats, args.eval_budget, params.evaluate.max_batch_bits)
        r["eval_skipped"] |= {f"{key}.{family}": why for family, why in skipped.items()}
    say(f"XOR study: {len(XOR_SHAPES)} shapes x {args.repeats} ...")
    shapes = [params.variants[name] for name in XOR_SHAPES]
    r["xor_study_s"] = median_of(args.repeats, lambda: xor_study_seconds(shapes, args.threads, say))
    r["peak_rss_self_mb"] = peak_rss_mb(resource.RUSAGE_SELF)
    # The largest any one process of the benchmark reached: this one, or a dvc stage.
    r["peak_rss_mb"] = max(r["peak_rss_self_mb"], r["peak_rss_children_mb"] or 0.0)
    return r


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write the JSON atomically, print the table; 1 if dvc repro failed."""
    args = parse_args(argv)
    from stages.core.files import write_json
    from stages.core.params import load_params
    from stages.core.seeding import seed_everything

    seed_everything(0, args.threads)  # as every stage does: seeds, determinism switches, threads
    params = load_params(ROOT / "params.yaml")
    cfg = params.training.model_dump()  # batch size, optimizer, lr and clipping of every variant
    host = machine()  # lscpu runs now, a small child (see peak_rss_mb)
    r = measure(args, params, cfg)
    r |= {
        "machine": host,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "quick": args.quick,
        "command": " ".join(["python", *sys.argv]),
        "settings": {
            "hidden_size": HIDDEN, "train_lengths": list(TRAIN_LENGTHS), "batch_size": cfg["batch_size"],
            "lr": cfg["lr"], "clip_grad_norm": cfg["clip_grad_norm"], "steps": args.steps,
            "notebook_steps": args.notebook_steps, "eval_count": EVAL_COUNT,
            "repro_repeats": args.repro_repeats,
            "repro_params": None if args.skip_repro else os.path.relpath(args.repro_params, ROOT),
        },
    }
    write_json(args.out, r)  # a temporary file beside it, then os.replace
    print(table(r))
    say(f"wrote {args.out}" + (f"; dvc repro failed:\n{r['repro_error']}" if "repro_error" in r else ""))
    return 1 if "repro_error" in r else 0


if __name__ == "__main__":
    sys.exit(main())
