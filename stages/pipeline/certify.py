"""Stage ``certify``: for every trained parity net, try to prove that it answers the parity of
every sequence of every length (stages/certify/search.py), then re-verify the certificate with
the independent checker (stages/certify/check.py).

One stage for all variants: certifying a net takes 0.1-2 s, a process per variant cost DVC and
Python ~5 s each. The weights are read raw (torch's state dict, the arrays inside a ``.keras``
file), so the certifier shares no code with the models: a model edit reruns it only through a
retrained model, and a Keras edit never imports TensorFlow here.

Outputs per variant (written atomically):
- ``artifacts/certify/VARIANT.json``: the certificate (k, the regions, their transitions, the
  margins) or the reason there is none, with the checker's verdict;
- ``artifacts/metrics/certify_VARIANT.json`` (DVC metrics): ``certified`` (1 or 0) and the margins.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stages.certify.check import check
from stages.certify.nets import weights_from_keras, weights_from_torch_state_dict
from stages.certify.search import certify
from stages.core import files, paths
from stages.core.errors import UserError
from stages.core.params import ENGINES, Params, SearchVariant, XorVariant, load_params, variant_of

KERAS_FILE = "model.keras"  # models/keras_lstm/model.py's MODEL_FILE (not imported: it imports keras)
TORCH_FILE = "model.pt"


def certified_variants(params: Params) -> list[str]:
    """The variants this stage certifies: every parity net (not the XOR gate study)."""
    return [n for n, v in params.variants.items() if not isinstance(v, XorVariant)]


def model_file(params: Params, variant: str) -> Path:
    """The file that holds ``variant``'s trained weights."""
    keras = ENGINES[params.variants[variant].family] == "keras"
    return paths.model_dir(variant) / (KERAS_FILE if keras else TORCH_FILE)


def keras_arrays(file: Path) -> list[np.ndarray]:
    """The weights inside a ``.keras`` file, in ``model.get_weights()`` order for an LSTM stack
    and its Dense head: each LSTM cell's kernel, recurrent kernel, bias (layers by name), then
    the Dense kernel and bias. Keras 3 stores them in ``model.weights.h5`` as
    ``layers/NAME[/cell]/vars/I``."""
    import h5py

    with zipfile.ZipFile(file) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
        layers = h5["layers"]
        cells = [layers[n]["cell"]["vars"] for n in sorted(layers) if "cell" in layers[n]]
        heads = [layers[n]["vars"] for n in sorted(layers) if "cell" not in layers[n] and len(layers[n]["vars"])]
        return [np.asarray(g[str(i)]) for g in cells + heads for i in range(len(g))]


def weights(params: Params, variant: str) -> tuple[str, dict[str, np.ndarray]]:
    """(the family the certifier knows it by, its raw weights); UserError if unreadable."""
    v = params.variants[variant]
    family = "manual_rnn" if isinstance(v, SearchVariant) else v.family
    file = model_file(params, variant)
    if not file.exists():
        raise UserError(f"{file}: no trained model; run `dvc repro train-{variant}`")
    try:
        if file.name == KERAS_FILE:
            return family, weights_from_keras(keras_arrays(file))
        import torch

        state = torch.load(file, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:  # noqa: BLE001  (a damaged file raises many kinds)
        raise UserError(f"{file}: unreadable ({type(e).__name__}); rerun "
                        f"`dvc repro --force train-{variant}`") from None
    return family, weights_from_torch_state_dict(family, state)


def run(variant: str, family: str, net: dict[str, np.ndarray]) -> dict[str, Any]:
    """Certify, check, write both files; -> the certificate. A certificate the checker refuses
    is written as not certified, with the checker's reason."""
    start = time.perf_counter()
    cert = certify(family, net)
    if cert["certified"]:
        ok, why = check(cert, family, net)
        cert["checker"] = "accepted" if ok else f"refused: {why}"
        if not ok:
            cert["certified"], cert["reason"] = False, f"the checker refused the certificate: {why}"
    cert.pop("seconds", None)  # wall clock: never in a DVC output
    files.write_json(paths.certificate(variant), cert)
    files.write_json(paths.certify_metrics(variant), summary(cert))
    verdict = "certified for every length" if cert["certified"] else f"not certified: {cert['reason']}"
    print(f"certify {variant}: {verdict} ({time.perf_counter() - start:.1f} s)", flush=True)
    return cert


def summary(cert: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a certificate (what the gate compares)."""
    margin = cert.get("margin", {})
    return {"certified": int(bool(cert["certified"])), "k": cert.get("k"),
            "regions": len(cert.get("regions", [])) if cert["certified"] else None,
            "margin": {"prefixes": margin.get("prefix_min"), "regions": margin.get("region_min")}}


def main(variants: tuple[str, ...] = (), params_path: str = "params.yaml") -> None:
    """Certify ``variants``, or every parity variant when none are given. Every name and model
    file is checked before the first certificate is written."""
    params = load_params(params_path)
    allowed = certified_variants(params)
    for name in variants:
        if isinstance(variant_of(params, name), XorVariant):
            raise UserError(f"{name} is an XOR gate study, not a parity net: nothing to certify "
                            f"(allowed: {', '.join(allowed)})")
    nets = {name: weights(params, name) for name in (variants or allowed)}
    for name, (family, net) in nets.items():
        run(name, family, net)
