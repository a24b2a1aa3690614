"""Stage ``train-VARIANT`` for random weight search (no gradients) of a small tanh RNN.

The weights found are saved as a ``manual_rnn`` model (``artifacts/models/VARIANT/model.pt``),
so evaluate, predict and certify read it like any torch variant; ``artifacts/train/VARIANT.json``
and ``.csv`` hold the search's result (one row: there is no training curve).
"""

from __future__ import annotations

from stages import tracking
from stages.core import data, files
from stages.core.device import resolve_torch_device
from stages.core.params import load_params, variant_of
from stages.core.seeding import seed_everything
from stages.pipeline.common import example_input, run_params, write_parity_outputs


def model_config(v) -> dict:
    """The manual_rnn model a search variant's weights are saved as."""
    return {"family": "manual_rnn", "hidden_size": v.hidden_size, "num_layers": 1, "init": "default"}


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    v = variant_of(params, variant, "search")
    device = resolve_torch_device(params.device)
    train = data.load_bucket(v.train_bucket)
    val = data.load_bucket(v.val_bucket)
    tracking.check_store()

    from models.rnn_search import search
    from models.torch_rnn import zoo

    seed_everything(params.seed, params.threads)
    cfg = search.SearchConfig(v.hidden_size, v.weight_scale, v.trials, v.chunk, v.screen_count)
    hashes = data.hashes_of([v.train_bucket, v.val_bucket])
    with tracking.tracked_run("parity", variant, f"train-{variant}", run_params(params, variant, device, {}),
                              data_hashes=hashes):
        weights, result = search.search(cfg, train, val, params.seed, log=tracking.log_metrics)
        model = zoo.build(**model_config(v))
        model.load_state_dict(weights)
        folder = write_parity_outputs(variant, result.metrics(), [result.metrics()],
                                      lambda d: zoo.save(model, model_config(v), d / "model.pt"))
        tracking.log_metrics({"train_seconds": result.seconds}, 0)
        tracking.set_model_hash(files.sha256_file(folder / "model.pt"))
        tracking.log_torch_model(zoo.ParityPredictor(model), example_input())
