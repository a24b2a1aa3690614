"""Run a sweep's pending trials on Ray Tune: a local Ray by default, or an existing cluster.

Each trial is one Ray Tune trial of a function trainable (``stages.sweep.trial.trainable``)
reserving ``resources.cpu`` CPUs and ``resources.gpu`` GPUs, so a GPU cluster runs one
trial per GPU. The trials are a ``tune.grid_search`` over the planned trial specs: the
sweep plans (and caches) its trials itself, Ray schedules them. Ray's own output is kept
quiet; one line per started and finished trial is printed instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.core.errors import UserError
from stages.sweep.schema import Sweep

Say = Callable[[str], None]


def check_reachable(address: str) -> None:
    """UserError within seconds if nothing listens at host:port (Ray itself retries forever)."""
    if address == "auto" or "://" in address:  # Ray finds "auto" itself; ray:// is Ray Client
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise UserError(f"Ray cluster address {address}: nothing answers there ({e}); start one with "
                        "`ray start --head`, or leave out --address and RAY_ADDRESS for a local Ray") from None


def _init_ray(sweep: Sweep, address: str | None, say: Say) -> None:
    import ray

    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address:
        say(f"connecting to the Ray cluster at {address}")
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise UserError(f"Ray cluster at {address}: {first} (a cluster with token auth needs "
                            "RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
        return
    local = sweep.local_ray
    try:
        context = ray.init(num_cpus=local.cpus, num_gpus=local.gpus, include_dashboard=local.dashboard,
                           dashboard_host="127.0.0.1", **quiet)
    except Exception as e:
        if "missing packages" not in str(e):
            raise
        raise UserError(f"local_ray.dashboard: Ray's dashboard needs its extra packages: "
                        f"pip install 'ray[default]=={ray.__version__}'") from None
    if local.dashboard:
        say(f"Ray dashboard: http://{context.dashboard_url}")


def _check_fits(sweep: Sweep, cluster: bool, say: Say) -> tuple[int, int]:
    """(CPUs, GPUs) Ray has now. A trial that can never fit is an error on a local Ray (it
    would wait forever) and a warning on a cluster (an autoscaler may add nodes)."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = int(have.get("CPU", 0)), int(have.get("GPU", 0))
    need = sweep.resources
    if need.cpu > cpus or need.gpu > gpus:
        msg = (f"resources: a trial needs {need.cpu:g} CPU and {need.gpu:g} GPU, Ray has "
               f"{cpus} CPU and {gpus} GPU")
        if not cluster:
            raise UserError(f"{msg} (set local_ray.cpus/gpus or resources)")
        say(f"warning: {msg} now; trials wait until the cluster grows")
    return cpus, gpus


def _progress(total: int, say: Say, describe: Callable[[str], str]) -> Any:
    from ray.tune import Callback

    class Progress(Callback):
        """Prints one readable line per trial start and end (Ray's tables are switched off)."""

        def __init__(self) -> None:
            self.done = 0
            self.errors: dict[str, str] = {}  # trials Ray lost, also those that never started

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            say(f"  start      {trial.config['trial']['name']}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            say(f"  [{self.done}/{total}] {describe(trial.config['trial']['name'])}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            name = trial.config["trial"]["name"]
            self.errors[name] = "Ray lost the trial: its worker died or never started (Ray's error is in the sweep's output)"
            say(f"  [{self.done}/{total}] error  {name} (Ray lost the trial, see above)")

    return Progress()


def connect(sweep: Sweep, address: str | None, say: Say) -> tuple[int, int]:
    """Start the local Ray or connect to the cluster; return the (CPUs, GPUs) it has.

    UserError if the cluster cannot be reached or a trial can never fit. Called before the
    sweep writes anything or opens an MLflow run, so such a sweep is refused with one line
    and leaves no results and no FAILED runs.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address:
        check_reachable(address)
    else:  # set before Ray reads its config at import
        # Token auth is Ray's default for a new local instance; saying so explicitly keeps
        # it and skips its start-up warning.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        # A local instance serves only this machine: bind it to 127.0.0.1, not the host's
        # address. (This switch's one effect on Linux is that choice; ray/_private/services.py.)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    logging.getLogger("ray").setLevel(logging.WARNING)
    # On Ctrl-C these suggest Tuner.restore and list unfinished trials; the sweep resumes
    # by itself and says what did not run.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _init_ray(sweep, address, say)
    try:
        return _check_fits(sweep, bool(address), say)
    except BaseException:
        disconnect()
        raise


def disconnect() -> None:
    import ray

    ray.shutdown()


def run_trials(specs: list[dict[str, Any]], sweep: Sweep, have: tuple[int, int], say: Say,
               describe: Callable[[str], str]) -> dict[str, str]:
    """Run the trial specs on the Ray that ``connect`` reached; return {trial name: Ray's
    error} for trials Ray lost.

    The trials themselves write their outcome files; a trial Ray could not finish (its
    worker died) appears only in the returned dict. Interrupting (Ctrl-C) stops Ray Tune,
    whose unfinished trials then have no outcome file and run again next time.
    """
    from ray import tune
    from ray.cloudpickle import register_pickle_by_value

    import stages.sweep.trial as trial_module

    register_pickle_by_value(trial_module)  # workers need not import the project
    storage = Path(tempfile.mkdtemp(prefix="paritylab-tune-"))
    try:
        cpus, gpus = have
        at_once = sweep.max_concurrent or None
        say(f"{len(specs)} trials to run, each on {sweep.resources.cpu:g} CPU / {sweep.resources.gpu:g} GPU "
            f"of {cpus} CPU / {gpus} GPU" + (f", at most {at_once} at once" if at_once else ""))
        trainable = tune.with_resources(trial_module.trainable,
                                        {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
        name_of = lambda t: t.config["trial"]["name"]  # noqa: E731
        progress = _progress(len(specs), say, describe)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(specs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=at_once, trial_name_creator=name_of,
                                        trial_dirname_creator=name_of),
            run_config=tune.RunConfig(
                name=f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage),
                verbose=0, callbacks=[progress],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        grid = tuner.fit()
        lost = dict(progress.errors)
        lost |= {r.config["trial"]["name"]: f"{type(r.error).__name__}: {r.error}"[-2000:]
                 for r in grid if r.error is not None and r.config}
        return lost
    finally:
        shutil.rmtree(storage, ignore_errors=True)
