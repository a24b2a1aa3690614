"""Command line of paritylab: ``python -m stages --help``.

Each command imports its stage module only when run, so ``--help`` and the
commands that need neither torch nor TensorFlow start fast.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import import_module

if __name__ == "__main__":
    from stages import warm

    if os.environ.get(warm.ENV):  # run by `stages repro`: hand the command to its server
        warm.delegate(os.environ[warm.ENV])  # exits as the command did, or returns: no server

import click  # noqa: E402  (a warm-started command gets here only in the server's child)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet
# MLflow's usage telemetry starts a thread and a network call in every stage process (0.25 s
# each, 48 stages); a batch pipeline does without. MLFLOW_DISABLE_TELEMETRY=false turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PARAMS = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), help="Parameters file.",
)


def _run(module: str, func: str = "main", /, **kwargs):
    """Call stages.<module>.<func>; turn UserError into one line on stderr and exit 2."""
    from stages.errors import UserError

    try:
        return import_module(f"stages.{module}").__dict__[func](**kwargs)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


# At least 100 columns, so each command's one-line purpose is shown whole (not cut with "...").
WIDTH = max(100, shutil.get_terminal_size().columns)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": WIDTH,
                               "terminal_width": WIDTH})
def cli() -> None:
    """paritylab: XOR gate and bit-parity experiments as a DVC pipeline tracked in MLflow.

    The pipeline stages (generate, train, evaluate, seeds, report) are run by `dvc repro`
    (or `repro`, several at once); the other commands are for looking at data, using models
    and guarding results.
    """


@cli.command()
@PARAMS
def generate(params_path: str) -> None:
    """Generate every dataset (XOR gate, parity buckets) and data/manifest.json."""
    _run("generate", params_path=params_path)


@cli.command()
@click.argument("variant")
@PARAMS
def train(variant: str, params_path: str) -> None:
    """Train one variant and log it to MLflow (stage train@VARIANT)."""
    _run("train", variant=variant, params_path=params_path)


@cli.command()
@click.argument("variant")
@PARAMS
def evaluate(variant: str, params_path: str) -> None:
    """Evaluate one trained variant on its held-out buckets (stage evaluate@VARIANT)."""
    _run("evaluate", variant=variant, params_path=params_path)


@cli.command()
@click.argument("variant")
@PARAMS
def seeds(variant: str, params_path: str) -> None:
    """Train a variant from seeds 0..N-1, count the seeds that solve (stage seeds@VARIANT)."""
    _run("seeds", variant=variant, params_path=params_path)


@cli.command()
@PARAMS
def report(params_path: str) -> None:
    """Build the tables, plots and report page under artifacts/report/."""
    _run("report", params_path=params_path)


@cli.command()
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Stages to run at once.  [default: one per CPU, at most one per 2 GB of memory]")
@click.option("--cold", is_flag=True,
              help="Start every stage as a fresh process (no server with torch and MLflow preloaded).")
def repro(jobs: int | None, cold: bool) -> None:
    """dvc repro, with independent stages run side by side (`make repro` runs this)."""
    _run("repro", jobs=jobs, warm=not cold)


@cli.command()
@click.argument("bucket")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Print at most N rows.")
@click.option("--data-dir", default="data", show_default=True, help="Dataset folder.")
def data(bucket: str, limit: int | None, data_dir: str) -> None:
    """Print a dataset bucket as CSV (length,bits,parity) on stdout."""
    _run("datasets", "print_bucket", bucket=bucket, limit=limit, data_dir=data_dir)


@cli.command()
@PARAMS
@click.option("--baseline", default="HEAD", show_default=True,
              help="Git revision whose committed metrics are the baseline.")
def check(params_path: str, baseline: str) -> None:
    """Regression gate: current metrics against the committed ones (exit 1 on regression)."""
    _run("check", params_path=params_path, baseline=baseline)


@cli.command()
@click.option("--variant", required=True, help="Trained parity variant to use.")
@click.argument("bits", nargs=-1)
@PARAMS
def predict(variant: str, bits: tuple[str, ...], params_path: str) -> None:
    """Predict parity of bit strings (arguments, or stdin one per line): PARITY<TAB>P(1)."""
    _run("predict", variant=variant, bits=bits, params_path=params_path)


@cli.command()
@click.argument("run_id")
def rerun(run_id: str) -> None:
    """Rerun an MLflow run exactly (same commit, params, data) and compare its metrics."""
    _run("rerun", run_id=run_id)


@cli.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray).")
@PARAMS
def sweep(sweep_file: str, address: str | None, params_path: str) -> None:
    """Run a grid or random search over params keys on Ray Tune, tracked in MLflow."""
    _run("sweep", sweep_file=sweep_file, address=address, params_path=params_path)


if __name__ == "__main__":
    cli(prog_name="python -m stages")
