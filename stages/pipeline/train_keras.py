"""Stage ``train-VARIANT`` for the Keras LSTM (TensorFlow).

Outputs as the torch stage's (stages/pipeline/train_torch.py), with the model as
``artifacts/models/VARIANT/model.keras`` and ``config.json``.
"""

from __future__ import annotations

from dataclasses import asdict

from stages import tracking
from stages.core import data, paths
from stages.core.device import configure_tensorflow_device
from stages.core.files import FileCheckpoint
from stages.core.params import load_params, variant_of
from stages.core.seeding import seed_everything
from stages.pipeline.common import example_input, log_training, run_params, train_config, write_parity_outputs


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    v = variant_of(params, variant, "keras")
    device = configure_tensorflow_device(params.device)
    cfg = train_config(params, variant)
    sets = data.training_sets(cfg)
    tracking.check_store()

    from models.keras_lstm import model as keras_lstm
    from models.keras_lstm import train as keras_train

    seed_everything(params.seed, params.threads)
    config = {"family": v.family, "hidden_size": v.hidden_size, "num_layers": v.num_layers, "init": v.init}
    hashes = data.hashes_of([cfg.train_bucket, cfg.val_bucket, cfg.probe_bucket or ""])
    with tracking.tracked_run("parity", variant, f"train-{variant}",
                              run_params(params, variant, device, asdict(cfg)), data_hashes=hashes):
        model = keras_lstm.build(v)
        result = keras_train.train(model, cfg, sets, params.seed, log=tracking.log_metrics,
                                   checkpoint=FileCheckpoint(paths.checkpoint(variant)))
        folder = write_parity_outputs(variant, result.metrics(), result.history,
                                      lambda d: keras_lstm.save(model, config, d))
        log_training(result, folder / "model.keras")
        tracking.log_keras_model(model, example_input()[..., None])
