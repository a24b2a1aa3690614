"""``python -m stages repro``: ``dvc repro`` with independent stages run side by side.

DVC runs one stage at a time, and every stage here is one CPU thread (params ``threads``),
so a plain ``dvc repro`` leaves the other cores idle. DVC's documented way to use them is
to start ``dvc repro`` on independent stages at once: it releases the repository lock while
a stage's command runs and guards every path with a read/write lock. This command does that
in dependency order:

0. ``params.yaml`` is validated first: a bad value stops everything before DVC removes
   (or any stage touches) an output.
1. ``dvc status`` names the stages whose code, data, params or outputs changed; they and
   every stage downstream of them are to run (a downstream stage whose inputs come out
   bit-identical is skipped by DVC as usual).
2. A stage starts, as ``dvc repro --single-item STAGE``, once every stage it depends on has
   finished; at most ``jobs`` at a time; those with the most stages waiting on them first,
   then in dvc.yaml order.
3. A plain ``dvc repro`` then runs whatever is left (normally nothing), so the end state is
   what ``dvc repro`` leaves: the same outputs, with the same hashes in ``dvc.lock``. Results
   do not depend on the order: each stage is seeded and single-threaded.

Each child's output lines are printed prefixed with its stage name. A failing stage stops
new starts; running ones finish; the exit status is non-zero. Stage commands start warm:
forked from a server that has torch and MLflow imported already (stages/warm.py), unless
``--cold``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click

from stages.errors import UserError
from stages.schema import load_params
from stages.warm import ENV, GRACE_S

# The dvc beside the running python (the venv's), so it runs stages with the same packages.
DVC = str(Path(sys.executable).with_name("dvc"))
STAGE_MEMORY = 2 << 30  # bytes one stage may take at its peak (measured: 1.2 GB)


def default_jobs() -> int:
    """One stage per CPU, as many as memory holds at STAGE_MEMORY each; at least one."""
    import psutil

    return max(1, min(os.cpu_count() or 1, psutil.virtual_memory().total // STAGE_MEMORY))


def _plan() -> tuple[list[str], dict[str, set[str]]]:
    """-> (stages to run, in dvc.yaml order; stage -> the stages among them it depends on)."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:  # a broken dvc.yaml, a missing dependency: one line and exit 2, not a traceback
        with Repo() as repo:
            graph = repo.index.graph  # edges: stage -> a stage it depends on
            names = {stage: stage.addressing for stage in graph.nodes}
            changed = set(repo.status())
            todo = {s for s in graph.nodes if names[s] in changed}
            for stage in list(todo):
                todo |= nx.ancestors(graph, stage)  # the stages downstream of a changed one
            order = [s for s in repo.index.stages if s in todo]  # dvc.yaml order
            needs = {names[s]: {names[d] for d in nx.descendants(graph, s) if d in todo} for s in order}
    except DvcException as e:
        raise UserError(f"dvc: {e}") from None
    return [names[s] for s in order], needs


def _dependants(needs: dict[str, set[str]]) -> dict[str, int]:
    """Stage -> how many stages wait on it, directly or not (run those first)."""
    return {s: sum(s in deps for deps in needs.values()) for s in needs}


# DVC's per-stage chatter, left out: the push hint is said once at the end; a stage with
# nothing to do shows as a "finished" line of a second or so.
_HINTS = ("Use `dvc push`", "didn't change, skipping")
_UP_TO_DATE = "Data and pipelines are up to date."  # news from the final dvc repro only


def _pump(name: str | None, proc: subprocess.Popen) -> None:
    """Copy a child's output to ours, each line prefixed with its stage, hints left out."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if any(hint in line for hint in _HINTS) or (name and _UP_TO_DATE in line):
            continue
        click.echo(f"[{name}] {line.rstrip()}" if name else line.rstrip())


@contextlib.contextmanager
def _warm_server(enabled: bool) -> Iterator[None]:
    """While inside, stage commands run by dvc are forked from one server (stages/warm.py).

    It takes a few seconds to import torch and MLflow; a stage started before it listens
    starts cold, as without it.
    """
    if not enabled:
        yield
        return
    folder = tempfile.mkdtemp(prefix="paritylab-warm-")
    socket_path = os.path.join(folder, "socket")
    server = subprocess.Popen([sys.executable, "-m", "stages.warm", socket_path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, start_new_session=True)
    os.environ[ENV] = socket_path
    try:
        yield
    finally:
        del os.environ[ENV]
        server.terminate()  # it stops its children, if any are left, and exits
        try:
            server.wait(timeout=GRACE_S + 5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _start(args: list[str], name: str | None) -> tuple[subprocess.Popen, threading.Thread, float]:
    """Start ``dvc ARGS``; a thread copies its output (see _pump). -> (process, thread, start time)."""
    proc = subprocess.Popen(  # its own process group: _stop signals dvc and the stage together
        [DVC, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    pump = threading.Thread(target=_pump, args=(name, proc), daemon=True)
    pump.start()
    return proc, pump, time.perf_counter()


def _run_all(order: list[str], needs: dict[str, set[str]], jobs: int) -> list[str]:
    """Run ``order`` by its dependencies, ``jobs`` at a time; -> the stages that failed."""
    priority = _dependants(needs)
    pending, done, failed = list(order), set(), []
    running: dict[str, tuple[subprocess.Popen, threading.Thread, float]] = {}
    try:
        while running or (pending and not failed):
            ready = [s for s in pending if needs[s] <= done] if not failed else []
            for name in sorted(ready, key=lambda s: -priority[s])[: jobs - len(running)]:
                pending.remove(name)
                running[name] = _start(["--wait-for-lock", "repro", "--single-item", name], name)
            time.sleep(0.1)
            for name, (proc, pump, began) in list(running.items()):
                if proc.poll() is None:
                    continue
                pump.join()
                del running[name]
                if proc.returncode == 0:
                    done.add(name)
                    click.echo(f"finished {name} in {time.perf_counter() - began:.1f} s "
                               f"({len(done)}/{len(order)})")
                else:
                    failed.append(name)
                    click.echo(f"FAILED {name} (exit {proc.returncode})"
                               + ("; waiting for the running stages" if running else ""), err=True)
    finally:  # Ctrl-C, SIGTERM or an error here: stop what runs (each stage ends its MLflow run KILLED)
        _stop([proc for proc, _, _ in running.values()])
    return failed


def _stop(procs: list[subprocess.Popen], grace_s: float = 30.0) -> None:
    """SIGTERM to each child's process group (dvc and its stage), SIGKILL after ``grace_s``."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(jobs: int | None = None, warm: bool = True) -> None:
    start = time.perf_counter()
    jobs = jobs or default_jobs()
    signal.signal(signal.SIGTERM, _interrupt)  # so a killed run stops its stages too
    load_params("params.yaml")  # every stage reads it: refuse a bad one before DVC touches anything
    order, needs = _plan()
    if order:
        click.echo(f"{len(order)} stages to run, {jobs} at a time: {', '.join(order)}")
    with _warm_server(warm and bool(order)):
        failed = _run_all(order, needs, jobs)
    if failed:
        click.echo(f"error: {', '.join(failed)} failed; the stages after them did not run", err=True)
        sys.exit(1)
    # Whatever is left, by DVC's own rules (normally nothing): the end state is dvc repro's.
    proc, pump, _ = _start(["--wait-for-lock", "repro"], None)
    try:
        proc.wait()
    except BaseException:
        _stop([proc])
        raise
    pump.join()
    if proc.returncode:
        sys.exit(proc.returncode)
    if order:
        click.echo(f"Pipeline reproduced in {time.perf_counter() - start:.0f} s. "
                   "Use `dvc push` to send your updates to remote storage.")
