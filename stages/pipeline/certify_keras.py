"""Stage ``certify-VARIANT`` for the Keras LSTM. See stages/pipeline/certify.py."""

from __future__ import annotations

from stages.certify.nets import weights_from_keras
from stages.core.device import configure_tensorflow_device
from stages.core.params import load_params, variant_of
from stages.pipeline import certify
from stages.pipeline.evaluate_keras import load_model


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    variant_of(params, variant, "keras")
    configure_tensorflow_device("cpu")
    certify.run(variant, "keras_lstm", weights_from_keras(load_model(params, variant).get_weights()))
