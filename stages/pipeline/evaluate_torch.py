"""Stage ``evaluate-VARIANT`` for torch models (and the weight search's, saved as a manual_rnn).

What is judged and written: stages/pipeline/evaluate.py.
"""

from __future__ import annotations

from typing import Any

from stages import tracking
from stages.core import paths
from stages.core.device import resolve_torch_device
from stages.core.params import Params, SearchVariant, load_params, variant_of
from stages.pipeline.evaluate import Judge, evaluate, held_out_sets, require_model


def model_config(v: Any) -> dict[str, Any]:
    """The config the saved model must have been trained with (else it is stale)."""
    if isinstance(v, SearchVariant):
        return {"family": "manual_rnn", "hidden_size": v.hidden_size, "num_layers": 1, "init": "default"}
    return {"family": v.family, "hidden_size": v.hidden_size, "num_layers": v.num_layers, "init": v.init}


def load_predictor(params: Params, variant: str, device: str) -> Judge:
    """The trained model: a function (sequences, max batch bits) -> logits, its file, its stepper."""
    from models.torch_rnn import zoo

    v = params.variants[variant]
    file = paths.model_dir(variant) / "model.pt"
    require_model(file, variant)
    model, _ = zoo.load(file, device=device, expect=model_config(v), name=variant)
    return Judge(lambda seqs, cap: zoo.predict_logits(model, seqs, device, max_batch_bits=cap), file,
                 zoo.stepper(model, device))


def main(variant: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    v = variant_of(params, variant)
    if not isinstance(v, SearchVariant):
        variant_of(params, variant, "torch")
    device = resolve_torch_device(params.device)
    sets = held_out_sets(params, variant)  # all checked before any work
    tracking.check_store()
    import torch  # noqa: F401  (so seed_everything sets torch's threads)

    evaluate(params, variant, sets, load_predictor(params, variant, device))
