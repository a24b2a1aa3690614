"""Stages ``fixedlen-cells``, ``fixedlen-signal`` and ``fixedlen-mixing``: the fixed-length study.

The request's LSTM stays at chance on 100,000 strings all of length 50 and learns from lengths
1-50. This study shows why with its own numbers (params.yaml ``fixed_length``):
- cells: the variant trained on strings all of one length L, for each L and seed, with one step
  budget: did it reach 100% validation, when, and how does it do on held-out length-L strings
  and on lengths long_min-long_max; its gradient signal is measured again along training;
- signal: the gradient's parity signal against its batch-to-batch noise at initialisation, per
  L and seed (models/torch_rnn/signal.py), and the fitted factor it falls by per added bit;
- mixing: length-mix_length strings with a fraction f of lengths 1-mix_short_max.
Every string is drawn here from data.seed (a named stream per set, stages/pipeline/generate.py),
so nothing lands in data/. Outputs are small tables and metrics (artifacts/fixedlen/,
artifacts/metrics/fixedlen_*.json), written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from stages import tracking
from stages.core import data as datasets
from stages.core import files, paths
from stages.core.data import SeqSet
from stages.core.device import resolve_torch_device
from stages.core.errors import UserError
from stages.core.fixed_length import FixedLength
from stages.core.params import Bucket, Params, load_params
from stages.core.seeding import seed_everything
from stages.pipeline.common import train_config
from stages.pipeline.fixed_length_summary import summarise_cells, summarise_mixing, summarise_signal
from stages.pipeline.generate import bucket_rng, make_disjoint, sample_bucket

PARTS = ("cells", "signal", "mixing")


def main(part: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    study = params.fixed_length
    if study is None:
        raise UserError(f"{params_path}: fixed_length is null, so there is no study to run "
                        "(add the section: see params.yaml's comments)")
    if part not in PARTS:
        raise UserError(f"fixedlen: unknown part {part!r} (allowed: {', '.join(PARTS)})")
    device = resolve_torch_device(params.device)
    buckets = {b: datasets.load_bucket(b) for b in study.mix_buckets} if part == "mixing" else {}
    tracking.check_store()
    run_params = {"fixed_length": study.model_dump(), "device": device, "threads": params.threads,
                  "model": params.variants[study.variant].model_dump(), "data_seed": params.data.seed}
    with tracking.tracked_run("parity", f"fixedlen-{part}", f"fixedlen-{part}", run_params,
                              data_hashes=datasets.hashes_of(list(buckets)), family=params.variants[study.variant].family):
        if part == "cells":
            rows, signal_rows = run_cells(params, study, device)
            metrics = summarise_cells(rows, study)
            files.write_text(paths.fixedlen_signal_training(), files.csv_text(signal_rows))
        elif part == "signal":
            rows = run_signal(params, study, device)
            metrics = summarise_signal(rows)
        else:
            rows = run_mixing(params, study, device, buckets)
            metrics = summarise_mixing(rows, study)
        files.write_text(paths.fixedlen_table(part), files.csv_text(rows))
        files.write_json(paths.fixedlen_metrics(part), metrics)
        tracking.log_summary(metrics)
        tracking.log_artifact(paths.fixedlen_table(part))


def draw(seed: int, name: str, count: int, min_len: int, max_len: int, avoid: SeqSet | None = None) -> SeqSet:
    """``count`` random strings with lengths uniform in [min_len, max_len] and balanced labels,
    from the named stream of ``seed``; redrawn out of ``avoid`` where 2^length leaves room."""
    rng = bucket_rng(seed, name)
    lengths, stream, labels = sample_bucket(rng, Bucket(count=count, min_len=min_len, max_len=max_len))
    if avoid is not None:
        make_disjoint(rng, lengths, stream, labels, avoid)
    return SeqSet.from_stream(name, lengths, stream, labels)


def concat(name: str, parts: list[SeqSet]) -> SeqSet:
    """One set holding every string of ``parts`` (the sampler draws from it uniformly)."""
    return SeqSet.from_stream(name, np.concatenate([p.lengths for p in parts]),
                              np.concatenate([p.stream for p in parts]), np.concatenate([p.labels for p in parts]))


def train_one(params: Params, study: FixedLength, sets: dict[str, SeqSet], seed: int, device: str,
              on_eval: Callable[[Any, dict, int], None] | None = None) -> tuple[Any, Any]:
    """Train the study's variant from ``seed`` on sets["train"], stopping on sets["val"];
    -> (model, TrainResult). The variant's own training settings, with the study's budget,
    evaluation and stopping, and no contraction phase (the question is whether it learns).
    on_eval(model, metrics, step) is called at every validation pass."""
    from models.torch_rnn import train as torch_train
    from models.torch_rnn import zoo

    v = params.variants[study.variant]
    cfg = replace(train_config(params, study.variant), train_bucket=sets["train"].name,
                  val_bucket=sets["val"].name, probe_bucket=None, max_steps=study.max_steps,
                  eval_every=study.eval_every, patience=study.patience, contraction_weight=0.0)
    seed_everything(seed, params.threads)
    model = zoo.build(v.family, v.hidden_size, v.num_layers, v.init).to(device)
    log = None if on_eval is None else (lambda metrics, step: on_eval(model, metrics, step))
    result = torch_train.train(model, v.family, cfg, {"train": sets["train"], "val": sets["val"]}, device, seed,
                               log=log, progress=None)
    return model, result


def accuracy(model: Any, seqs: SeqSet, device: str, max_batch_bits: int) -> float:
    from models.torch_rnn import zoo

    logits = zoo.predict_logits(model, seqs, device, max_batch_bits)
    return float(((logits > 0) == (seqs.labels == 1)).mean())


def signal_batches(seed: int, length: int, count: int, batch_size: int, device: str) -> list[tuple]:
    """``count`` batches of clean random strings of one length (the same for every seed and step)."""
    import torch

    seqs = draw(seed, f"fixedlen_signal_{length}", count * batch_size, length, length)
    bits, lengths = seqs.padded()
    x = torch.as_tensor(bits, dtype=torch.float32).to(device)
    y = torch.as_tensor(seqs.labels, dtype=torch.float32).to(device)
    lens = torch.as_tensor(lengths, dtype=torch.int64)
    return [(x[i:i + batch_size], lens[i:i + batch_size], y[i:i + batch_size])
            for i in range(0, count * batch_size, batch_size)]


def _cell_sets(params: Params, study: FixedLength, length: int) -> dict[str, SeqSet]:
    seed, n = params.data.seed, study.eval_count
    train = draw(seed, f"fixedlen_train_{length}", study.train_count, length, length)
    return {"train": train,
            "val": draw(seed, f"fixedlen_val_{length}", n, length, length, avoid=train),
            "test": draw(seed, f"fixedlen_test_{length}", n, length, length, avoid=train)}


def _in_train(seqs: SeqSet, train: SeqSet) -> float:
    """Share of ``seqs`` that are also training strings (where 2^L leaves no room to avoid them)."""
    seen = {s.tobytes() for s in np.packbits(train.padded()[0], axis=1)}
    return float(np.mean([s.tobytes() in seen for s in np.packbits(seqs.padded()[0], axis=1)]))


def run_cells(params: Params, study: FixedLength, device: str) -> tuple[list[dict], list[dict]]:
    """One row per (length, seed), and one per gradient-signal measurement along training."""
    long = draw(params.data.seed, "fixedlen_long", study.eval_count, study.long_min, study.long_max)
    rows: list[dict] = []
    signal_rows: list[dict] = []
    for length in study.lengths:
        _cell(params, study, length, long, device, rows, signal_rows)
    return rows, signal_rows


def _cell(params: Params, study: FixedLength, length: int, long: SeqSet, device: str,
          rows: list[dict], signal_rows: list[dict]) -> None:
    """Every seed of one length: appends its rows and its signal measurements."""
    from models.torch_rnn.signal import all_strings, gradient_signal

    sets = _cell_sets(params, study, length)
    probes = signal_batches(params.data.seed, length, study.signal_train_batches,
                            train_config(params, study.variant).batch_size, device)
    strings = all_strings(length) if length <= study.signal_exact_max else None
    overlap = _in_train(sets["test"], sets["train"])
    bits = params.evaluate.max_batch_bits
    for seed in range(study.seeds):

        def on_eval(model: Any, metrics: dict, step: int, seed: int = seed) -> None:
            if step in study.signal_steps:  # the weights as they are at this step
                signal_rows.append({"length": length, "seed": seed, "step": step,
                                    **gradient_signal(model, probes, strings)})

        model, result = train_one(params, study, sets, seed, device, on_eval)
        rows.append({"length": length, "seed": seed, "learned": int(result.steps_to_val_100 is not None),
                     "steps_to_val_100": result.steps_to_val_100, "steps": result.steps,
                     "val_accuracy": result.val_accuracy, "accuracy_len": accuracy(model, sets["test"], device, bits),
                     "accuracy_long": accuracy(model, long, device, bits), "test_in_train": overlap})
        print(f"fixedlen-cells: L {length:>3} seed {seed}  steps {result.steps:>5}  "
              f"val {result.val_accuracy:.3f}  long {rows[-1]['accuracy_long']:.3f}", flush=True)


def run_signal(params: Params, study: FixedLength, device: str) -> list[dict]:
    """The gradient signal at initialisation: one row per (length, seed)."""
    from models.torch_rnn import zoo
    from models.torch_rnn.signal import all_strings, gradient_signal

    v = params.variants[study.variant]
    batch = train_config(params, study.variant).batch_size
    rows = []
    for length in study.lengths:
        batches = signal_batches(params.data.seed, length, study.signal_batches, batch, device)
        strings = all_strings(length) if length <= study.signal_exact_max else None
        for seed in range(study.seeds):
            seed_everything(seed, params.threads)  # the same initial weights as the cell's seed
            model = zoo.build(v.family, v.hidden_size, v.num_layers, v.init).to(device)
            row = {"length": length, "seed": seed, "step": 0, **gradient_signal(model, batches, strings)}
            rows.append(row | {"log10_snr": math.log10(row["snr"]) if row["measured"] else None})
        print(f"fixedlen-signal: L {length:>3}  snr {np.median([r['snr'] for r in rows[-study.seeds:]]):.3g}  "
              f"(floor {np.median([r['snr_floor'] for r in rows[-study.seeds:]]):.3g})", flush=True)
    return rows


def _mixed_sets(params: Params, study: FixedLength, fraction: float) -> dict[str, SeqSet]:
    """train_count strings: round(f x count) (at least one) of lengths 1-mix_short_max, the rest of
    length mix_length; validation and test at mix_length, not in the training set."""
    seed, n, length = params.data.seed, study.eval_count, study.mix_length
    short = min(max(1, round(fraction * study.train_count)), study.train_count - 1)
    train = concat(f"fixedlen_mix_{fraction}", [
        draw(seed, f"fixedlen_mix_{fraction}_short", short, 1, study.mix_short_max),
        draw(seed, f"fixedlen_mix_{fraction}_long", study.train_count - short, length, length)])
    return {"train": train,
            "val": draw(seed, f"fixedlen_mix_val_{fraction}", n, length, length, avoid=train),
            "test": draw(seed, f"fixedlen_mix_test_{fraction}", n, length, length, avoid=train)}


def run_mixing(params: Params, study: FixedLength, device: str, buckets: dict[str, SeqSet]) -> list[dict]:
    """One row per (fraction, seed): learned at mix_length or not, and how far it carries."""
    long = draw(params.data.seed, "fixedlen_long", study.eval_count, study.long_min, study.long_max)
    bits = params.evaluate.max_batch_bits
    rows = []
    for fraction in study.mix_fractions:
        sets = _mixed_sets(params, study, fraction)
        for seed in range(study.mix_seeds):
            model, result = train_one(params, study, sets, seed, device)
            row = {"fraction": fraction, "seed": seed, "short_count": int((sets["train"].lengths < study.mix_length).sum()),
                   "learned": int(result.steps_to_val_100 is not None),
                   "steps_to_val_100": result.steps_to_val_100, "steps": result.steps,
                   "accuracy_len": accuracy(model, sets["test"], device, bits),
                   "accuracy_long": accuracy(model, long, device, bits)}
            row |= {f"accuracy_{b}": accuracy(model, seqs, device, bits) for b, seqs in buckets.items()}
            rows.append(row)
            print(f"fixedlen-mixing: f {fraction:<6} seed {seed}  steps {result.steps:>5}  "
                  f"len {row['accuracy_len']:.3f}  long {row['accuracy_long']:.3f}", flush=True)
    return rows
