"""Stage ``certify-VARIANT`` for torch models (and the weight search's). See stages/pipeline/certify.py."""

from __future__ import annotations

from stages.certify.nets import weights_from_torch_state_dict
from stages.core import paths
from stages.core.params import SearchVariant, load_params, variant_of
from stages.pipeline import certify


def main(variant: str, params_path: str = "params.yaml") -> None:
    from models.torch_rnn import zoo

    params = load_params(params_path)
    v = variant_of(params, variant)
    family = "manual_rnn" if isinstance(v, SearchVariant) else variant_of(params, variant, "torch").family
    file = paths.model_dir(variant) / "model.pt"
    model, _ = zoo.load(file, name=variant)  # missing or damaged: one line naming it and the stage
    state = {k: t.cpu() for k, t in model.state_dict().items()}
    certify.run(variant, family, weights_from_torch_state_dict(family, state))
