"""Stage ``train@VARIANT``: train one variant, write its model and training metrics, log to MLflow.

Outputs (all written atomically; DVC tracks them):
- ``artifacts/models/VARIANT/``: the model (``model.pt`` or ``model.keras``/``study.npz``) and ``config.json``
- ``artifacts/train/VARIANT.json``: deterministic training metrics (steps, sequences until 100%, ...)
- ``artifacts/train/VARIANT.csv``: the training history (parity) or the per-seed table (XOR study)

Wall-clock figures (training seconds, sequences per second) go to MLflow only, so
two reruns on the same CPU give byte-identical DVC outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages import datasets, tracking
from stages import io as sio
from stages.errors import UserError
from stages.schema import (
    KERAS_PARITY,
    Params,
    ParityVariant,
    SearchVariant,
    XorVariant,
    load_params,
    resolved_training,
)

ARTIFACTS = Path("artifacts")


def paths(variant: str) -> dict[str, Path]:
    """Where train@VARIANT writes; evaluate, predict and report read the same paths."""
    return {
        "model_dir": ARTIFACTS / "models" / variant,
        "metrics": ARTIFACTS / "train" / f"{variant}.json",
        "curve": ARTIFACTS / "train" / f"{variant}.csv",  # history (parity) or per-seed table (XOR)
        "checkpoint": ARTIFACTS / "checkpoints" / f"{variant}.ckpt",
    }


def get_variant(params: Params, variant: str) -> Any:
    if variant not in params.variants:
        raise UserError(
            f"unknown variant {variant!r} (allowed: {', '.join(params.variants)})"
        )
    return params.variants[variant]


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    v = get_variant(params, variant)
    if isinstance(v, XorVariant):
        _train_xor(params, variant, v)
    elif isinstance(v, SearchVariant):
        _train_search(params, variant, v)
    elif v.family in KERAS_PARITY:
        _train_keras(params, variant, v)
    else:
        _train_torch(params, variant, v)


def _run_params(params: Params, variant: str, device: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The fully resolved settings recorded with the MLflow run."""
    return {
        "variant": variant,
        "seed": params.seed,
        "device": device,
        "threads": params.threads,
        "model": params.variants[variant].model_dump(),
        "training": cfg,
        "data": params.data.model_dump(),
    }


def _write_parity(variant: str, result: Any, save_model) -> Path:
    """Write model dir, metrics JSON and history CSV atomically; return the model file."""
    p = paths(variant)
    with sio.atomic_path(p["model_dir"], is_dir=True) as tmp:
        save_model(tmp)
    sio.write_json(p["metrics"], result.metrics())
    sio.write_text(p["curve"], sio.csv_text(result.history))
    return p["model_dir"]


def _train_torch(params: Params, variant: str, v: ParityVariant) -> None:
    from stages.device import resolve_torch_device

    device = resolve_torch_device(params.device)  # before any work: a missing GPU is an input error
    cfg = resolved_training(params, variant)
    data = datasets.training_sets(cfg)
    tracking.check_store()
    tracking.install_sigterm_handler()

    from models import torch_train, torch_zoo
    from stages.seeding import seed_everything

    seed_everything(params.seed, params.threads)
    config = {"family": v.family, "hidden_size": v.hidden_size, "num_layers": v.num_layers, "init": v.init}
    run_params = _run_params(params, variant, device, cfg)
    hashes = datasets.hashes_of([cfg["train_bucket"], cfg["val_bucket"], cfg.get("probe_bucket") or ""])
    with tracking.tracked_run("parity", variant, f"train@{variant}", run_params, data_hashes=hashes):
        model = torch_zoo.build(**config).to(device)
        result = torch_train.train(
            model, v.family, cfg, data, device, params.seed,
            log=tracking.log_metrics, checkpoint_path=paths(variant)["checkpoint"],
        )
        model_dir = _write_parity(
            variant, result, lambda d: torch_zoo.save(model.cpu(), config, d / "model.pt")
        )
        _log_parity_result(result, model_dir / "model.pt")
        tracking.log_torch_model(torch_zoo.ParityPredictor(model.cpu()), _example_input())


def _train_keras(params: Params, variant: str, v: ParityVariant) -> None:
    from stages.device import configure_tensorflow_device

    device = configure_tensorflow_device(params.device)
    cfg = resolved_training(params, variant)
    data = datasets.training_sets(cfg)
    tracking.check_store()
    tracking.install_sigterm_handler()

    from models import keras_lstm
    from stages.seeding import seed_everything

    seed_everything(params.seed, params.threads)
    config = {"family": v.family, "hidden_size": v.hidden_size, "num_layers": v.num_layers, "init": v.init}
    run_params = _run_params(params, variant, device, cfg)
    hashes = datasets.hashes_of([cfg["train_bucket"], cfg["val_bucket"], cfg.get("probe_bucket") or ""])
    with tracking.tracked_run("parity", variant, f"train@{variant}", run_params, data_hashes=hashes):
        model = keras_lstm.build(v)
        result = keras_lstm.train(
            model, cfg, data, params.seed,
            log=tracking.log_metrics, checkpoint_path=paths(variant)["checkpoint"],
        )
        model_dir = _write_parity(variant, result, lambda d: keras_lstm.save(model, config, d))
        _log_parity_result(result, model_dir / "model.keras")
        tracking.log_keras_model(model, _example_input()[..., None])


def _train_search(params: Params, variant: str, v: SearchVariant) -> None:
    from stages.device import resolve_torch_device

    device = resolve_torch_device(params.device)
    train = datasets.load_bucket(v.train_bucket)
    val = datasets.load_bucket(v.val_bucket)
    tracking.check_store()
    tracking.install_sigterm_handler()

    from models import rnn_search, torch_zoo
    from stages.seeding import seed_everything

    seed_everything(params.seed, params.threads)
    config = {"family": "manual_rnn", "hidden_size": v.hidden_size, "num_layers": 1, "init": "default"}
    run_params = _run_params(params, variant, device, {})
    hashes = datasets.hashes_of([v.train_bucket, v.val_bucket])
    with tracking.tracked_run("parity", variant, f"train@{variant}", run_params, data_hashes=hashes):
        weights, result = rnn_search.search(v, train, val, params.seed, log=tracking.log_metrics)
        model = torch_zoo.build(**config)
        model.load_state_dict(weights)
        p = paths(variant)
        with sio.atomic_path(p["model_dir"], is_dir=True) as tmp:
            torch_zoo.save(model, config, tmp / "model.pt")
        sio.write_json(p["metrics"], result.metrics())
        sio.write_text(p["curve"], sio.csv_text([result.metrics()]))  # no curve: one row of search results
        tracking.log_metrics({"train_seconds": result.seconds}, 0)
        tracking.set_model_hash(sio.sha256_file(p["model_dir"] / "model.pt"))
        tracking.log_torch_model(torch_zoo.ParityPredictor(model), _example_input())


def _train_xor(params: Params, variant: str, v: XorVariant) -> None:
    from stages.device import configure_tensorflow_device

    device = configure_tensorflow_device(params.device)
    x, y = datasets.load_xor_gate()
    tracking.check_store()
    tracking.install_sigterm_handler()

    from models import xor_mlp
    from stages.seeding import seed_everything

    seed_everything(params.seed, params.threads)
    run_params = _run_params(params, variant, device, {})
    with tracking.tracked_run("xor-gate", variant, f"train@{variant}", run_params,
                              data_hashes=datasets.hashes_of(["xor_gate"])):
        result = xor_mlp.run_study(v, x, y, seed0=params.seed)
        p = paths(variant)
        with sio.atomic_path(p["model_dir"], is_dir=True) as tmp:
            xor_mlp.save_study(result, v, tmp)
        summary = result.summary()
        sio.write_json(p["metrics"], summary)
        sio.write_text(p["curve"], sio.csv_text(result.per_seed))
        tracking.log_summary(summary)
        tracking.log_seed_table(result.per_seed)
        tracking.set_model_hash(sio.sha256_file(p["model_dir"] / "study.npz"))


def _log_parity_result(result: Any, model_file: Path) -> None:
    tracking.log_summary(result.metrics())
    seconds = max(result.train_seconds, 1e-9)
    tracking.log_metrics({"train_seconds": result.train_seconds,
                          "train_seqs_per_s": result.sequences / seconds}, result.steps)
    tracking.set_model_hash(sio.sha256_file(model_file))


def _example_input():
    """Three sequences of bits, -1 padded: the MLflow signature's input example."""
    import numpy as np

    return np.array([[1, 0, 1, 1], [0, 1, -1, -1], [1, -1, -1, -1]], dtype=np.float32)
