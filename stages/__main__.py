"""Command line of paritylab: ``python -m stages --help``.

Each command imports its module only when run, so ``--help`` and the commands that need
neither torch nor TensorFlow start fast. The DVC stages live in stages/pipeline/ (one module
per stage and engine); the other commands in stages/commands/ and stages/sweep/.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import sys
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path

# Run by an interpreter without the project's packages (`python` outside the venv, say): one
# line that says so, not a traceback from deep inside a stage. find_spec imports nothing.
_NEEDED = ("click", "pydantic", "yaml", "numpy", "pandas", "psutil", "torch", "mlflow", "dvc")
if _missing := [m for m in _NEEDED if find_spec(m) is None]:
    sys.exit(f"error: {sys.executable} lacks the project's packages ({', '.join(_missing)}); "
             "run `make setup`, then `source .venv/bin/activate` (or call .venv/bin/python)")

import click  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet
# MLflow's usage telemetry starts a thread and a network call in every stage process (0.25 s
# each, 48 stages); a batch pipeline does without. MLFLOW_DISABLE_TELEMETRY=false turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# A params file is about 10 kB. One past this is some other file (or a generated blow-up), and
# YAML reads about 15,000 keys a second here (a million unknown keys took a minute to refuse).
MAX_PARAMS_BYTES = 1 << 20


def _small_file(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a params file past MAX_PARAMS_BYTES unread (a missing one: load_params says so)."""
    try:
        size = os.path.getsize(value)
    except OSError:
        return value
    if size > MAX_PARAMS_BYTES:
        raise click.BadParameter(f"{value} is {size / 2**20:.1f} MiB; a params file is a few kB "
                                 f"(at most {MAX_PARAMS_BYTES >> 20} MiB): is it the right file?")
    return value


PARAMS = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), callback=_small_file, help="Parameters file.",
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so every ``finally`` runs: temporaries go,
    MLflow runs end KILLED, ``stages repro`` stops its stages."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


# A disk that cannot take an output: what to do about each. Seen as one line, not a traceback.
_DISK = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space or ask for a larger quota",
    errno.EROFS: "work in a copy on a writable disk",
    errno.EFBIG: "raise the file size limit (`ulimit -f`) or write to another disk",
    errno.EACCES: "give yourself access to it and its folder",
    errno.EPERM: "give yourself access to it and its folder",
}
_TMP = re.compile(r"\.(?P<name>.+)\.tmp-.*")  # stages.core.files.atomic_path's temporaries: .NAME.tmp-XXXX[.suffix]


def _output_of(e: OSError) -> str:
    """The output being written when ``e`` was raised, else its file name, else "an output".

    A failed write() or close() names no file, but every output is written to a temporary of
    atomic_path (.NAME.tmp-*, removed on failure, the old output kept): the innermost frame that
    holds such a path says which output it was (core/files.py stays as it is: editing it would
    rerun the whole pipeline).
    """
    frames, tb = [], e.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    values = [e.filename] + [v for f in reversed(frames) for v in f.f_locals.values()]
    for value in values:
        if isinstance(value, str | os.PathLike):
            parts = Path(value).parts
            for i, part in enumerate(parts):
                if m := _TMP.fullmatch(part):
                    out = Path(*parts[:i], m["name"], *parts[i + 1:])
                    return str(out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out)
    return str(e.filename) if e.filename else "an output"


def _run(module: str, func: str = "main", /, **kwargs):
    """Call stages.<module>.<func>; turn a user error, or a disk that cannot take an output,
    into one line on stderr and exit 2, and SIGINT / SIGTERM into exit 130 / 143 once
    everything was cleaned up."""
    from models.common import ModelError
    from stages.commands import dag_checked
    from stages.core.errors import UserError

    signal.signal(signal.SIGTERM, _terminate)
    try:
        params_path = kwargs.get("params_path", "params.yaml")
        # Run by DVC: trust no stale dvc.yaml, unless `make repro` has just written it.
        if module.startswith("pipeline.") and os.environ.get("DVC_STAGE") and not dag_checked(params_path):
            from stages.commands.dag import check_stage

            check_stage(os.environ["DVC_STAGE"], params_path)
        return import_module(f"stages.{module}").__dict__[func](**kwargs)
    except (UserError, ModelError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in _DISK:
            raise
        click.echo(f"error: {_output_of(e)}: {e.strerror} ({errno.errorcode[e.errno]}); {_DISK[e.errno]} and run "
                   "again (outputs are replaced only when complete: the old ones are intact)", err=True)
        sys.exit(2)
    except KeyboardInterrupt as e:
        click.echo("stopped (SIGTERM)" if isinstance(e, Terminated) else "stopped (Ctrl-C)", err=True)
        sys.exit(143 if isinstance(e, Terminated) else 130)


def _engine(variant: str, params_path: str) -> str:
    """The engine of a variant (torch, keras, search or xor): which stage module runs it."""
    from stages.core.params import ENGINES, load_params, variant_of

    return ENGINES[variant_of(load_params(params_path), variant).family]


def _run_variant(stage: str, variant: str, params_path: str) -> None:
    """Run stage ``train`` or ``evaluate`` of ``variant`` in its engine's module."""
    from models.common import ModelError
    from stages.core.errors import UserError

    try:
        engine = _engine(variant, params_path)
    except (UserError, ModelError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if engine == "xor":  # trained and judged together: stage xor
        _run("pipeline.xor", variant=variant, params_path=params_path)
    else:
        module = f"{stage}_torch" if stage != "train" and engine == "search" else f"{stage}_{engine}"
        _run(f"pipeline.{module}", variant=variant, params_path=params_path)


# At least 100 columns, so each command's one-line purpose is shown whole (not cut with "...").
WIDTH = max(100, shutil.get_terminal_size().columns)


class _UsageLine(click.ClickException):
    """A command line click refuses (``--limit 1e20``, an unknown option), shown like every other
    refusal: one line that names the command and the value and says where the help is; exit 2."""

    exit_code = 2

    def __init__(self, e: click.UsageError) -> None:
        path = e.ctx.command_path if e.ctx else "python -m stages"
        what = " ".join(e.format_message().split()).rstrip(".")
        super().__init__(f"{path}: {what}; see `{path} --help`")

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


# No command at all: click shows the help (as a usage error), which stays as it is.
_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Cli(click.Group):
    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except _HELP:
            raise
        except click.UsageError as e:
            raise _UsageLine(e) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _HELP:
            raise
        except click.UsageError as e:  # a subcommand's arguments and options
            raise _UsageLine(e) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": WIDTH,
                                         "terminal_width": WIDTH})
def cli() -> None:
    """paritylab: XOR gate and bit-parity experiments as a DVC pipeline tracked in MLflow.

    The pipeline stages (generate, train, evaluate, certify, seeds, xor, fixedlen, report) are run by `dvc repro`
    (or `repro`, several at once); the other commands are for looking at data, using models
    and guarding results.
    """


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@PARAMS
def generate(names: tuple[str, ...], params_path: str) -> None:
    """Write every dataset, or the NAMEd ones (buckets or xor_gate), to data/NAME.npz and .json (stage generate)."""
    _run("pipeline.generate", names=names, params_path=params_path)


@cli.command()
@click.argument("variant")
@PARAMS
def train(variant: str, params_path: str) -> None:
    """Train one variant and log it to MLflow (stage train-VARIANT)."""
    _run_variant("train", variant, params_path)


@cli.command()
@click.argument("variant")
@PARAMS
def evaluate(variant: str, params_path: str) -> None:
    """Evaluate one trained variant on its held-out buckets (stage evaluate-VARIANT)."""
    _run_variant("evaluate", variant, params_path)


@cli.command()
@click.argument("variants", nargs=-1, metavar="[VARIANT]...")
@PARAMS
def certify(variants: tuple[str, ...], params_path: str) -> None:
    """Prove each trained parity net (or the VARIANTs) right on every sequence of every length, or say why not (stage certify)."""
    _run("pipeline.certify", variants=variants, params_path=params_path)


@cli.command()
@click.argument("variant")
@PARAMS
def seeds(variant: str, params_path: str) -> None:
    """Train a variant from seeds 0..N-1, count the seeds that solve (stage seeds-VARIANT)."""
    _run("pipeline.seeds", variant=variant, params_path=params_path)


@cli.command()
@click.argument("variant", required=False)
@PARAMS
def xor(variant: str | None, params_path: str) -> None:
    """Train and judge every XOR gate variant, or one (stage xor)."""
    _run("pipeline.xor", variant=variant, params_path=params_path)


@cli.command()
@click.argument("part", type=click.Choice(["cells", "signal", "mixing"]))
@PARAMS
def fixedlen(part: str, params_path: str) -> None:
    """Run one part of the fixed-length study (stage fixedlen-PART; params.yaml fixed_length)."""
    _run("pipeline.fixed_length", part=part, params_path=params_path)


@cli.command()
@PARAMS
def report(params_path: str) -> None:
    """Build the tables, plots and report page under artifacts/report/."""
    _run("pipeline.report", params_path=params_path)


@cli.command()
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Stages to run at once.  [default: one per CPU, at most one per 2 GB of memory]")
@click.option("--timeout", "timeout_s", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Seconds a stage may run before it is stopped (and the run fails).")
def repro(jobs: int | None, timeout_s: int) -> None:
    """Write dvc.yaml, then dvc repro with independent stages side by side (`make repro`)."""
    _run("commands.repro", jobs=jobs, timeout_s=timeout_s)


@cli.command()
@PARAMS
def sync(params_path: str) -> None:
    """Mirror dvc.lock in MLflow: one run per variant and result (`make repro` runs it last)."""
    _run("commands.sync", params_path=params_path)


@cli.command()
@PARAMS
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Its port.")
def ui(params_path: str, host: str, port: int) -> None:
    """The MLflow UI on the local store; prints the URL of the variants' held-out accuracy (`make ui`)."""
    _run("commands.ui", params_path=params_path, host=host, port=port)


@cli.command()
@click.option("--check", is_flag=True, help="Only say whether dvc.yaml is up to date (exit 1 if not).")
@PARAMS
def dag(check: bool, params_path: str) -> None:
    """Write dvc.yaml from params.yaml and the code's imports (every stage's exact deps)."""
    _run("commands.dag", check=check, params_path=params_path)


@cli.command()
@click.argument("bucket")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Print at most N rows.")
@click.option("--data-dir", default="data", show_default=True, help="Dataset folder.")
def data(bucket: str, limit: int | None, data_dir: str) -> None:
    """Print a dataset bucket as CSV (length,bits,parity) on stdout."""
    limit = None if limit is None else min(limit, sys.maxsize)  # more rows than exist: all of them, as sys.maxsize
    _run("core.data", "print_bucket", bucket=bucket, limit=limit, data_dir=data_dir)


@cli.command()
@PARAMS
@click.option("--baseline", default="HEAD", show_default=True,
              help="Git revision whose committed metrics are the baseline.")
@click.option("--all", "show_all", is_flag=True, help="List every metric, not only regressions and improvements.")
@click.option("--markdown", is_flag=True, help="Print a markdown table (for a pull request or CI job summary).")
def check(params_path: str, baseline: str, show_all: bool, markdown: bool) -> None:
    """Regression gate: current metrics against the committed ones (exit 1 on regression)."""
    _run("commands.check", params_path=params_path, baseline=baseline, show_all=show_all, markdown=markdown)


@cli.command()
@click.option("--variant", required=True, help="Trained parity variant to use.")
@click.argument("bits", nargs=-1)
@PARAMS
def predict(variant: str, bits: tuple[str, ...], params_path: str) -> None:
    """Predict parity of bit strings (arguments, or stdin one per line): PARITY<TAB>P(1)."""
    _run("commands.predict", variant=variant, bits=bits, params_path=params_path)


@cli.command()
@click.argument("run_id")
def rerun(run_id: str) -> None:
    """Rerun an MLflow run exactly (same commit, params, data) and compare its metrics."""
    _run("commands.rerun", run_id=run_id)


@cli.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray).")
@PARAMS
def sweep(sweep_file: str, address: str | None, params_path: str) -> None:
    """Run a grid or random search over params keys on Ray Tune, tracked in MLflow."""
    _run("sweep.command", sweep_file=sweep_file, address=address, params_path=params_path)


if __name__ == "__main__":
    cli(prog_name="python -m stages")
