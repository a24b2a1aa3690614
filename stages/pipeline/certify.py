"""What every ``certify-VARIANT`` stage does, whatever the engine: try to prove that the trained
net answers the parity of every sequence of every length (stages/certify/search.py), then
re-verify the certificate with the independent checker (stages/certify/check.py).

Outputs (written atomically):
- ``artifacts/certify/VARIANT.json``: the certificate (k, the regions, their transitions, the
  margins) or the reason there is none, with the checker's verdict;
- ``artifacts/metrics/certify_VARIANT.json`` (DVC metrics): ``certified`` (1 or 0) and the margins.
The engine's module (certify_torch.py, certify_keras.py) reads the weights.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stages.certify.check import check
from stages.certify.search import certify
from stages.core import files, paths


def run(variant: str, family: str, weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """Certify, check, write both files; -> the certificate. A certificate the checker refuses
    is written as not certified, with the checker's reason."""
    start = time.perf_counter()
    cert = certify(family, weights)
    if cert["certified"]:
        ok, why = check(cert, family, weights)
        cert["checker"] = "accepted" if ok else f"refused: {why}"
        if not ok:
            cert["certified"], cert["reason"] = False, f"the checker refused the certificate: {why}"
    cert.pop("seconds", None)  # wall clock: never in a DVC output
    files.write_json(paths.certificate(variant), cert)
    files.write_json(paths.certify_metrics(variant), summary(cert))
    verdict = "certified for every length" if cert["certified"] else f"not certified: {cert['reason']}"
    print(f"certify-{variant}: {verdict} ({time.perf_counter() - start:.1f} s)", flush=True)
    return cert


def summary(cert: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a certificate (what the gate compares)."""
    margin = cert.get("margin", {})
    return {"certified": int(bool(cert["certified"])), "k": cert.get("k"),
            "regions": len(cert.get("regions", [])) if cert["certified"] else None,
            "margin": {"prefixes": margin.get("prefix_min"), "regions": margin.get("region_min")}}
