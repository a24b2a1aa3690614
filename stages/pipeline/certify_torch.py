"""Stage ``certify-VARIANT`` for torch models (and the weight search's). See stages/pipeline/certify.py."""

from __future__ import annotations

from stages.certify.nets import weights_from_torch_state_dict
from stages.core import paths
from stages.core.errors import UserError
from stages.core.params import SearchVariant, load_params, variant_of
from stages.pipeline import certify


def main(variant: str, params_path: str = "params.yaml") -> None:
    import torch

    params = load_params(params_path)
    v = variant_of(params, variant)
    family = "manual_rnn" if isinstance(v, SearchVariant) else variant_of(params, variant, "torch").family
    file = paths.model_dir(variant) / "model.pt"
    if not file.exists():
        raise UserError(f"{file}: no trained model; run `dvc repro train-{variant}`")
    try:  # the raw weights: the certifier shares no code with the models (see stages/certify/nets.py)
        state = torch.load(file, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:  # noqa: BLE001  (a damaged file raises many kinds)
        raise UserError(f"{file}: unreadable ({type(e).__name__}); rerun "
                        f"`dvc repro --force train-{variant}`") from None
    certify.run(variant, family, weights_from_torch_state_dict(family, state))
