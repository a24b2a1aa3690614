"""Stage ``evaluate-VARIANT`` for the Keras LSTM. What is judged and written: stages/pipeline/evaluate.py."""

from __future__ import annotations

from stages import tracking
from stages.core import paths
from stages.core.device import configure_tensorflow_device
from stages.core.params import Params, load_params, variant_of
from stages.pipeline.evaluate import Judge, evaluate, held_out_sets, require_model


def load_model(params: Params, variant: str):
    """The trained Keras model; UserError if it is missing or was trained with another config."""
    from models.keras_lstm import model as keras_lstm

    v = params.variants[variant]
    folder = paths.model_dir(variant)
    require_model(folder / keras_lstm.MODEL_FILE, variant)
    expect = {"family": v.family, "hidden_size": v.hidden_size, "num_layers": v.num_layers, "init": v.init}
    return keras_lstm.load(folder, expect=expect)[0]


def load_predictor(params: Params, variant: str, device: str = "cpu") -> Judge:
    """The trained model: a function (sequences, max batch bits) -> logits, its file, its stepper."""
    from models.keras_lstm import model as keras_lstm

    model = load_model(params, variant)
    return Judge(lambda seqs, cap: keras_lstm.predict_logits(model, seqs, max_batch_bits=cap),
                 paths.model_dir(variant) / keras_lstm.MODEL_FILE, keras_lstm.stepper(model))


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    variant_of(params, variant, "keras")
    configure_tensorflow_device(params.device)
    sets = held_out_sets(params, variant)
    tracking.check_store()
    evaluate(params, variant, sets, load_predictor(params, variant))
