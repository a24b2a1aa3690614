"""Stage ``seeds-VARIANT``: is a variant's result robust, or one lucky seed?

Trains the variant from seeds 0..N-1 (``seeds.seeds``) with exactly the settings of
``train-VARIANT``, judges every seed on ``seeds.buckets`` (whole held-out buckets) and tries
to certify it (stages/certify/: right on every sequence of every length, proven).
Outputs, written atomically:
- ``artifacts/metrics/seeds_VARIANT.json`` (DVC metrics): seeds run, how many reach
  accuracy 1.0 on each bucket (``solved``), how many are certified, the worst seed's
  accuracy, and the median steps until validation was 100%;
- ``artifacts/plots/seeds_VARIANT.csv``: one row per seed.
One MLflow run, ``seeds-VARIANT``, holds both files and the summary.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np

from stages import tracking
from stages.certify.check import check
from stages.certify.nets import weights_from_torch_state_dict
from stages.certify.search import certify
from stages.core import data as datasets
from stages.core import files as sio
from stages.core import paths
from stages.core.device import resolve_torch_device
from stages.core.errors import UserError
from stages.core.params import Params, load_params
from stages.core.seeding import seed_everything
from stages.pipeline.common import train_config
from stages.pipeline.evaluate import Judge, bucket_metrics, logits_of


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    cfg = params.seeds
    if variant not in cfg.variants:
        raise UserError(f"seeds: {variant!r} is not in seeds.variants (allowed: {', '.join(cfg.variants)})")
    device = resolve_torch_device(params.device)
    training = train_config(params, variant)
    buckets = {b: datasets.load_bucket(b) for b in cfg.buckets}  # all checked before any work
    data = datasets.training_sets(training)
    tracking.check_store()

    run_params = {"seeds": cfg.model_dump(), "device": device, "threads": params.threads,
                  "model": params.variants[variant].model_dump(), "training": asdict(training)}
    hashes = datasets.hashes_of([*cfg.buckets, training.train_bucket, training.val_bucket, training.probe_bucket or ""])
    with tracking.tracked_run("parity", f"seeds-{variant}", f"seeds-{variant}", run_params, data_hashes=hashes):
        rows = []
        for seed in range(cfg.seeds):
            start = time.perf_counter()
            row = train_and_judge(params, variant, seed, data, buckets, device)
            scores = "  ".join(f"{b} {row[f'accuracy.{b}']:.4f}" for b in cfg.buckets)
            print(f"seeds-{variant}: seed {seed}  steps {row['steps']:>5}  {scores}  "
                  f"certified {'yes' if row['certified'] else 'no'}  ({time.perf_counter() - start:.1f} s)", flush=True)
            tracking.log_metrics({k: v for k, v in row.items() if k.startswith("accuracy.")}, seed, prefix="seed")
            rows.append(row)
        metrics = summarise(rows, cfg.buckets)
        sio.write_json(paths.seeds_metrics(variant), metrics)
        sio.write_text(paths.seeds_table(variant), sio.csv_text(rows))
        tracking.log_summary(metrics)
        tracking.log_artifact(paths.seeds_metrics(variant))
        tracking.log_artifact(paths.seeds_table(variant))


def train_and_judge(
    params: Params, variant: str, seed: int, data: dict[str, Any], buckets: dict[str, Any], device: str
) -> dict[str, Any]:
    """Train ``variant`` from ``seed`` as train-VARIANT would; its accuracy on every bucket."""
    from models.torch_rnn import train as torch_train
    from models.torch_rnn import zoo as torch_zoo

    v = params.variants[variant]
    seed_everything(seed, params.threads)
    model = torch_zoo.build(v.family, v.hidden_size, v.num_layers, v.init).to(device)
    result = torch_train.train(model, v.family, train_config(params, variant), data, device, seed,
                               progress=None)
    row: dict[str, Any] = {"seed": seed, "steps": result.steps, "steps_to_val_100": result.steps_to_val_100}
    judge = Judge(lambda seqs, cap: torch_zoo.predict_logits(model, seqs, device, cap), None,
                  torch_zoo.stepper(model, device))
    for b, seqs in buckets.items():
        logits, _ = logits_of(judge, params.data.buckets[b], seqs, params.evaluate.max_batch_bits)
        row[f"accuracy.{b}"] = bucket_metrics(logits, seqs)["accuracy"]
    weights = weights_from_torch_state_dict(v.family, {k: t.cpu() for k, t in model.state_dict().items()})
    cert = certify(v.family, weights)
    row["certified"] = int(bool(cert["certified"]) and check(cert, v.family, weights)[0])
    row["reason"] = "" if row["certified"] else cert["reason"][:200]
    return row


def summarise(rows: list[dict[str, Any]], buckets: list[str]) -> dict[str, Any]:
    """Seeds run, seeds with accuracy 1.0 per bucket, the worst seed's accuracy, median steps
    to 100% validation (``solved.len_1000``: the gate's tolerance ``solved`` covers them)."""
    reached = [r["steps_to_val_100"] for r in rows if r["steps_to_val_100"] is not None]
    return {
        "seeds": len(rows),
        "certified": sum(r.get("certified", 0) for r in rows),
        "solved": {b: sum(r[f"accuracy.{b}"] == 1.0 for r in rows) for b in buckets},
        "min_accuracy": {b: min(r[f"accuracy.{b}"] for r in rows) for b in buckets},
        "median_steps_to_val_100": float(np.median(reached)) if reached else None,
    }
