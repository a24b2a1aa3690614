"""Stage ``train-VARIANT`` for the torch families (nn.RNN, nn.LSTM, nn.GRU, hand-written cells).

Outputs (each written atomically; DVC tracks them):
- ``artifacts/models/VARIANT/model.pt``: the weights and the model's config
- ``artifacts/train/VARIANT.json``: deterministic training metrics (steps, sequences until 100%, ...)
- ``artifacts/train/VARIANT.csv``: the training history, one row per validation pass
Wall-clock figures (seconds, sequences per second) go to MLflow only, so two runs on the same
CPU give byte-identical DVC outputs.
"""

from __future__ import annotations

from dataclasses import asdict

from stages import tracking
from stages.core import data, paths
from stages.core.device import resolve_torch_device
from stages.core.files import FileCheckpoint
from stages.core.params import load_params, variant_of
from stages.core.seeding import seed_everything
from stages.pipeline.common import example_input, log_training, run_params, train_config, write_parity_outputs


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    v = variant_of(params, variant, "torch")
    device = resolve_torch_device(params.device)  # before any work: a missing GPU is an input error
    cfg = train_config(params, variant)
    sets = data.training_sets(cfg)  # every file checked before any work
    tracking.check_store()

    from models.torch_rnn import train as torch_train
    from models.torch_rnn import zoo

    seed_everything(params.seed, params.threads)
    config = zoo.RNNConfig(v.family, v.hidden_size, v.num_layers, v.init)
    hashes = data.hashes_of([cfg.train_bucket, cfg.val_bucket, cfg.probe_bucket or ""])
    with tracking.tracked_run("parity", variant, f"train-{variant}",
                              run_params(params, variant, device, asdict(cfg)), data_hashes=hashes):
        model = zoo.build(**asdict(config)).to(device)
        result = torch_train.train(model, v.family, cfg, sets, device, params.seed, log=tracking.log_metrics,
                                   checkpoint=FileCheckpoint(paths.checkpoint(variant)))
        folder = write_parity_outputs(variant, result.metrics(), result.history,
                                      lambda d: zoo.save(model.cpu(), asdict(config), d / "model.pt"))
        log_training(result, folder / "model.pt")
        tracking.log_torch_model(zoo.ParityPredictor(model.cpu()), example_input())
