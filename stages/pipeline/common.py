"""What the parity train stages share: their config from params, the settings an MLflow run
records, and the writing of a trained model's outputs (each atomic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.common import TrainConfig, TrainResult
from stages.core import files, paths
from stages.core.params import Params, resolved_training


def train_config(params: Params, variant: str) -> TrainConfig:
    """The variant's resolved ``training`` settings as the trainers' typed config."""
    return TrainConfig(**resolved_training(params, variant))


def run_params(params: Params, variant: str, device: str, training: dict[str, Any]) -> dict[str, Any]:
    """The fully resolved settings recorded with the MLflow run."""
    return {
        "variant": variant,
        "seed": params.seed,
        "device": device,
        "threads": params.threads,
        "model": params.variants[variant].model_dump(),
        "training": training,
        "data": params.data.model_dump(),
    }


def write_parity_outputs(variant: str, metrics: dict[str, Any], curve: list[dict[str, Any]],
                         save_model) -> Path:
    """Model folder (``save_model(tmp_dir)`` fills it), metrics JSON and curve CSV; -> the folder."""
    with files.atomic_path(paths.model_dir(variant), is_dir=True) as tmp:
        save_model(tmp)
    files.write_json(paths.train_metrics(variant), metrics)
    files.write_text(paths.train_curve(variant), files.csv_text(curve))
    return paths.model_dir(variant)


def log_training(result: TrainResult, model_file: Path) -> None:
    """The run's summary, wall-clock figures and model hash (MLflow only, never DVC files)."""
    from stages import tracking

    tracking.log_summary(result.metrics())
    seconds = max(result.train_seconds, 1e-9)
    tracking.log_metrics({"train_seconds": result.train_seconds,
                          "train_seqs_per_s": result.sequences / seconds}, result.steps)
    tracking.set_model_hash(files.sha256_file(model_file))


def example_input():
    """Three sequences of bits, -1 padded: the MLflow signature's input example."""
    import numpy as np

    return np.array([[1, 0, 1, 1], [0, 1, -1, -1], [1, -1, -1, -1]], dtype=np.float32)
