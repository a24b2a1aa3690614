"""Commands that are not stages: ``dag`` (writes dvc.yaml), ``repro`` (runs it), ``check``
(the regression gate), ``predict`` and ``rerun``. A change here reruns no stage.
"""

import hashlib
import os
from pathlib import Path

DAG_CHECKED = "PARITYLAB_DAG_CHECKED"  # set by `make repro` once it has written dvc.yaml


def dag_fingerprint(params_path: str = "params.yaml", dvc_yaml: str = "dvc.yaml") -> str:
    """sha256 of dvc.yaml and the params file ("" when one cannot be read)."""
    h = hashlib.sha256()
    for path in (dvc_yaml, params_path):
        try:
            h.update(Path(path).read_bytes() + b"\0")
        except OSError:
            return ""
    return h.hexdigest()


def dag_checked(params_path: str = "params.yaml") -> bool:
    """Whether `make repro` wrote dvc.yaml from this very params file and neither changed since:
    its stages then skip comparing their dvc.yaml entry with params and code (~0.5 s each)."""
    fingerprint = os.environ.get(DAG_CHECKED)
    return bool(fingerprint) and fingerprint == dag_fingerprint(params_path)
