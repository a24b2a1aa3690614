"""``python -m stages ui`` (`make ui`): the MLflow UI on the local store, opened where a user
compares variants: the parity result runs with one held-out accuracy column per bucket.

MLflow 3.17's runs page takes its search, sort and view from the URL, but its columns only
from a saved or shared view: a shared view is the experiment tag
``mlflow.sharedViewState.<key>`` holding the page's state as JSON, opened with
``?viewStateShareKey=<key>`` (the UI's own Share button writes the same tag). This command
writes that tag for key ``held-out`` from params.yaml, prints the URL and starts `mlflow ui`.
The tag is rewritten each time, so the columns follow params.yaml's held-out buckets.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from stages.core.params import Params, XorVariant, eval_buckets, load_params

VIEW_KEY = "held-out"
VIEW_TAG = "mlflow.sharedViewState."  # MLflow's prefix for a shared view (its UI reads it)
SORT_BUCKET = "len_1000"  # the headline: right far beyond the training lengths
COLUMN_WIDTH = 170  # pixels: wide enough for "eval/accuracy.len_1000000"


def held_out_buckets(params: Params) -> list[str]:
    """Every bucket a parity variant is judged on, in params order (evaluate.buckets first)."""
    names = [eval_buckets(params, n) for n, v in params.variants.items() if not isinstance(v, XorVariant)]
    return list(dict.fromkeys([b for b in params.evaluate.buckets if any(b in ns for ns in names)]
                              + [b for ns in names for b in ns]))


def view_state(params: Params) -> dict[str, Any]:
    """The runs page's state: result runs only, sorted by accuracy at SORT_BUCKET, and one
    column per held-out bucket (``eval/accuracy.<bucket>``) in that order."""
    buckets = held_out_buckets(params)
    columns = [f"metrics.`eval/accuracy.{b}`" for b in buckets]
    sort = SORT_BUCKET if SORT_BUCKET in buckets else buckets[0]
    return {"searchFilter": "tags.`paritylab.kind` = 'result'", "orderByKey": f"metrics.`eval/accuracy.{sort}`",
            "orderByAsc": False, "selectedColumns": columns, "columnOrder": columns,
            "columnWidths": dict.fromkeys(columns, COLUMN_WIDTH), "runsHiddenMode": "SHOW_ALL"}


def share_view(params: Params) -> str | None:
    """Write the held-out view into the tracking store; -> the page's URL path, or None
    while the store has no parity experiment (nothing synced yet)."""
    from mlflow import MlflowClient

    from stages.tracking.store import check_store, retry

    check_store()
    client = MlflowClient()
    exp = retry(client.get_experiment_by_name, "parity")
    if exp is None:
        return None
    retry(client.set_experiment_tag, exp.experiment_id, VIEW_TAG + VIEW_KEY, json.dumps(view_state(params)))
    return f"/#/experiments/{exp.experiment_id}/runs?viewStateShareKey={VIEW_KEY}"


def main(params_path: str = "params.yaml", host: str = "127.0.0.1", port: int = 5000) -> None:
    """Write the view, print its URL, then become `mlflow ui` on the store (Ctrl-C stops it);
    a store that is a server already (``MLFLOW_TRACKING_URI=http...``) gets only the URL."""
    from stages.tracking.store import tracking_uri

    uri = tracking_uri()
    served = uri.startswith(("http://", "https://"))
    path = share_view(load_params(params_path))
    base = uri.rstrip("/") if served else f"http://{host}:{port}"
    click.echo(f"parity variants, held-out accuracy: {base}{path}" if path
               else "no parity runs yet: run `make repro` first")
    click.echo("(if the UI opens on its GenAI views, pick 'Model training' in the switch at the top left,"
               " or open this URL again)")
    if served:
        return
    sys.stdout.flush()  # exec drops what is still buffered
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    # MLflow 3.17's server imports starlette.middleware.wsgi, which starlette 1.x deprecates with a
    # warning printed once per uvicorn worker (4 by default): about MLflow's code, not ours. Silence
    # that one message, and serve a local UI from one worker.
    os.environ["PYTHONWARNINGS"] = "ignore:starlette.middleware.wsgi is deprecated"
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
                      "--workers", "1"])
