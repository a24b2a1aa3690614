"""Stage ``xor``: the XOR gate study, every ``xor_mlp`` variant trained and judged in one process.

Each shape's own work is about a second; one process for all of them pays TensorFlow's
start-up once instead of twelve times. Per variant (each file written atomically):
- ``artifacts/models/V/study.npz`` and ``config.json``: every seed's final weights and history
- ``artifacts/train/V.json`` (DVC metrics) and ``V.csv``: the study's summary, one row per seed
- ``artifacts/metrics/V.json`` (DVC metrics): epochs to 100%, final accuracy and margin, judged
  from the saved weights by a NumPy forward pass
- ``artifacts/plots/V.csv``: final accuracy and margin per seed
One MLflow run per variant in the experiment ``xor-gate`` holds both halves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages import tracking
from stages.core import data, files, paths
from stages.core.device import configure_tensorflow_device
from stages.core.params import Params, XorVariant, load_params, variant_of
from stages.core.seeding import seed_everything
from stages.pipeline.common import run_params


def config_of(v: XorVariant):
    from models.xor_mlp.study import XorConfig

    return XorConfig(**v.model_dump())


def main(variant: str | None = None, params_path: str = "params.yaml") -> None:
    """Train and judge every XOR variant (or only ``variant``)."""
    params = load_params(params_path)
    names = [variant] if variant else [n for n, v in params.variants.items() if isinstance(v, XorVariant)]
    for name in names:
        variant_of(params, name, "xor")
    device = configure_tensorflow_device(params.device)
    x, y = data.load_xor_gate()
    tracking.check_store()
    for name in names:
        seed_everything(params.seed, params.threads)
        with tracking.tracked_run("xor-gate", name, f"xor-{name}", run_params(params, name, device, {}),
                                  data_hashes=data.hashes_of([paths.XOR_GATE])):
            summary = train(params, name, x, y)
            metrics = judge(params, name, x, y, summary)
            tracking.log_summary(metrics, prefix="eval")
            tracking.log_artifact(paths.eval_metrics(name))
            tracking.log_artifact(paths.eval_plot(name))


def train(params: Params, name: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Train the study, write the model folder and training files; -> the study's summary."""
    from models.xor_mlp import study

    cfg = config_of(params.variants[name])
    result = study.run_study(cfg, x, y, seed0=params.seed)
    arrays, config = study.study_arrays(result, cfg)
    with files.atomic_path(paths.model_dir(name), is_dir=True) as tmp:
        data.write_npz(tmp / study.STUDY_FILE, arrays)  # fixed zip stamps: equal arrays, equal bytes
        files.write_json(tmp / "config.json", config)
    summary = result.summary()
    files.write_json(paths.train_metrics(name), summary)
    files.write_text(paths.train_curve(name), files.csv_text(result.per_seed))
    tracking.log_summary(summary)
    tracking.log_seed_table(result.per_seed)
    tracking.set_model_hash(files.sha256_file(paths.model_dir(name) / study.STUDY_FILE))
    return summary


def judge(params: Params, name: str, x: np.ndarray, y: np.ndarray, study_summary: dict[str, Any]) -> dict[str, Any]:
    """Final accuracy and margin of every seed's saved weights (NumPy); write the metrics and plot."""
    from models.xor_mlp import study

    v = params.variants[name]
    weights, _ = study.load_study(paths.model_dir(name))
    out = np.asarray(study.predict(weights, config_of(v), x), dtype=np.float64)  # (seeds, 4)
    accuracy = ((out > 0.5) == (y > 0.5)).mean(axis=1)
    margin = np.abs(out - 0.5).min(axis=1)
    loss = ((out - y) ** 2).mean(axis=1) if v.loss == "mse" else None
    metrics = {
        "epochs_to_100": study_summary["epochs_to_100"],
        "never_solved": study_summary["never_solved"],
        "seeds": int(out.shape[0]),
        "accuracy": {"xor_gate": float(accuracy.mean())},
        "margin": {"min": float(margin.min()), "median": float(np.median(margin))},
        "final_loss": {"median": float(np.median(loss)) if loss is not None
                       else study_summary["final_loss"]["median"]},
    }
    files.write_json(paths.eval_metrics(name), metrics)
    seeds = [{"seed": params.seed + i, "accuracy": float(a), "margin": float(m)}
             for i, (a, m) in enumerate(zip(accuracy, margin, strict=True))]
    files.write_text(paths.eval_plot(name), files.csv_text(seeds))  # final accuracy and margin per seed
    print(f"xor-{name}: accuracy {metrics['accuracy']['xor_gate']:.3f}  margin min {metrics['margin']['min']:.4f}  "
          f"epochs to 100% median {study_summary['epochs_to_100']['median']}", flush=True)
    return metrics
