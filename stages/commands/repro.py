"""``python -m stages repro`` (what ``make repro`` runs): ``dvc repro``, independent stages side by side.

DVC runs one stage at a time, and every stage here is one CPU thread (params ``threads``),
so a plain ``dvc repro`` leaves the other cores idle. DVC's documented way to use them is
to start ``dvc repro`` on independent stages at once: it releases the repository lock while
a stage's command runs and guards every path with a read/write lock. This command, through
DVC's command line only:

0. validates ``params.yaml`` (a bad value stops everything before anything is touched) and
   writes ``dvc.yaml`` from it (``stages dag``); its stages skip checking that dvc.yaml again
   while neither file changes (``PARITYLAB_DAG_CHECKED``);
1. forgets the stages of variants or datasets no longer in params.yaml: their ``dvc.lock``
   entries and their outputs go, so nothing stale is left to compare or report;
2. asks ``dvc status --json`` which stages changed; they and every stage downstream of them
   are to run, except those whose inputs all come out bit-identical (not even started);
3. starts each as ``dvc repro --single-item STAGE`` once the stages it depends on finished,
   at most ``jobs`` at a time, each stopped after ``timeout_s``;
4. runs a plain ``dvc repro``, which finds nothing left: the end state, and every hash in
   ``dvc.lock``, is what ``dvc repro`` leaves. Each stage is seeded and single-threaded, so
   the order does not change results;
5. records every result of ``dvc.lock`` that MLflow does not hold yet (``stages sync``), so the
   UI shows them after a fresh clone or ``git pull`` too, where DVC skipped the stages.

The stages log no MLflow run of their own (``PARITYLAB_STAGE_RUNS=0`` unless set): the result
runs of step 5 hold the same settings, metrics, curves, files and data hashes, and `rerun` takes
them; a stage's own run would cost each of ~45 processes seconds of MLflow start-up. The store
is checked once, before the first stage. Every stage of one run and the result runs it records
share ``PARITYLAB_REPRO_ID`` (an MLflow tag). Each child's output
lines are printed prefixed with its stage. A failing stage stops new starts; running ones
finish; the exit status is non-zero. SIGTERM or Ctrl-C stop every running stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click
import yaml

from stages.commands import DAG_CHECKED, dag, dag_fingerprint
from stages.core.errors import UserError
from stages.core.params import load_params
from stages.tracking import STAGE_RUNS, store

# The dvc beside the running python (the venv's), so it runs stages with the same packages.
DVC = str(Path(sys.executable).with_name("dvc"))
STAGE_MEMORY = 2 << 30  # bytes one stage may take at its peak (measured: 1.3 GB)
GRACE_S = 30.0  # after SIGTERM, seconds a stage gets to end its MLflow run before SIGKILL


def default_jobs() -> int:
    """One stage per CPU, as many as memory holds at STAGE_MEMORY each; at least one."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min(os.cpu_count() or 1, pages // STAGE_MEMORY))


def upstream_outputs(stages: dict[str, Any]) -> dict[str, str]:
    """Output path -> the stage that writes it, from dvc.yaml's outs, metrics and plots."""
    owner = {}
    for name, s in stages.items():
        for out in [*s.get("outs", []), *s.get("metrics", []), *s.get("plots", [])]:
            owner[next(iter(out)) if isinstance(out, dict) else out] = name
    return owner


def upstream(stages: dict[str, Any]) -> dict[str, set[str]]:
    """Stage -> the stages whose outputs it reads (directly), from dvc.yaml's deps and outs."""
    owner = upstream_outputs(stages)
    return {name: {owner[d] for d in s.get("deps", []) if d in owner} for name, s in stages.items()}


def prune(stages: dict[str, Any], lock: Path = Path("dvc.lock")) -> tuple[list[str], list[str]]:
    """Forget what params.yaml no longer asks for -> (stages dropped, outputs deleted of
    stages that stay).

    A stage not in ``stages`` loses its dvc.lock entry; every output dvc.lock records that
    no current stage writes is deleted: those of dropped stages, and those a shared stage
    (``xor``, ``certify``: one output set per variant) no longer declares. Such a stage's
    entry also drops the deps and params keys it no longer declares (DVC does not see one taken
    out of a stage as a change, and would keep naming them): what a rerun would record, since
    each variant's outputs there depend only on that variant's inputs.
    """
    if not lock.is_file():
        return [], []
    doc = yaml.safe_load(lock.read_text()) or {}
    entries = doc.get("stages", {})
    gone = [name for name in entries if name not in stages]
    kept = set(upstream_outputs(stages))  # a stage renamed, not removed, keeps its outputs
    stale, gone_too = [], set()
    for name, entry in entries.items():
        for out in entry.get("outs", []):
            path = Path(out["path"])
            if out["path"] in kept:
                continue
            if name in stages:
                gone_too.add(name)
            if not (path.exists() or path.is_symlink()):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            _unignore(path)
            if name in stages:
                stale.append(out["path"])
    for name in gone:
        del entries[name]
    for name in gone_too:
        _forget_undeclared(entries[name], stages[name])
    if gone or gone_too:
        from stages.core.files import write_text

        write_text(lock, yaml.safe_dump(doc, sort_keys=False))
    return gone, stale


def _forget_undeclared(entry: dict[str, Any], stage: dict[str, Any]) -> None:
    """Drop from a dvc.lock entry the deps, params keys and outputs its dvc.yaml stage no longer declares."""
    outs = set(upstream_outputs({"s": stage}))
    entry["deps"] = [d for d in entry.get("deps", []) if d["path"] in stage.get("deps", [])]
    entry["outs"] = [o for o in entry.get("outs", []) if o["path"] in outs]
    keys = set(stage.get("params", []))
    for file, values in (entry.get("params") or {}).items():
        entry["params"][file] = {k: v for k, v in values.items() if k in keys}
    for part in ("deps", "outs", "params"):
        if not entry.get(part):
            entry.pop(part, None)


def _unignore(path: Path) -> None:
    """Drop the line DVC wrote for a cached output in its folder's .gitignore, as ``dvc
    remove`` does (scmrepo's ignore_remove): the file goes when nothing is left in it."""
    gitignore = path.parent / ".gitignore"
    if not gitignore.is_file():
        return
    lines = gitignore.read_text().splitlines(keepends=True)
    left = [line for line in lines if line.strip() != f"/{path.name}"]
    if not left:
        gitignore.unlink()
    elif left != lines:
        gitignore.write_text("".join(left))


def changed() -> set[str]:
    """The stages ``dvc status`` reports changed (code, data, params or outputs)."""
    proc = subprocess.run([DVC, "status", "--json"], capture_output=True, text=True,
                          env={**os.environ, "PATH": _path()})
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"dvc status failed: {last}")
    return set(json.loads(proc.stdout or "{}"))


def plan(stages: dict[str, Any], todo: set[str]) -> tuple[list[str], dict[str, set[str]]]:
    """-> (the stages to run: changed ones and all downstream, in dvc.yaml order; stage -> the
    stages among them it waits for)."""
    ups = upstream(stages)
    grew = True
    while grew:
        more = {s for s, deps in ups.items() if deps & todo} - todo
        todo |= more
        grew = bool(more)
    order = [s for s in stages if s in todo]
    return order, {s: ups[s] & todo for s in order}


# DVC's per-stage chatter, left out: the push and git hints are said once at the end; a stage
# with nothing to do shows as a "finished" line.
_HINTS = ("Use `dvc push`", "didn't change, skipping", "To track the changes with git", "git add ",
          "To enable auto staging", "dvc config core.autostage")
_UP_TO_DATE = "Data and pipelines are up to date."  # news from the final dvc repro only


_SKIPPED: set[str] = set()  # stages DVC found up to date (said "didn't change, skipping")


def _pump(name: str | None, proc: subprocess.Popen) -> None:
    """Copy a child's output to ours, each line prefixed with its stage, hints left out."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if name and "didn't change, skipping" in line:
            _SKIPPED.add(name)
        if any(hint in line for hint in _HINTS) or (name and (_UP_TO_DATE in line or not line.strip())):
            continue
        click.echo(f"[{name}] {line.rstrip()}" if name else line.rstrip())


def _path() -> str:
    """PATH with this interpreter's folder first: dvc.yaml's ``python`` is then the venv's,
    activated or not."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _start(args: list[str], name: str | None) -> tuple[subprocess.Popen, threading.Thread, float]:
    """Start ``dvc ARGS``; a thread copies its output. -> (process, thread, start time)."""
    proc = subprocess.Popen(  # its own process group: _stop signals dvc and the stage together
        [DVC, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1", "PATH": _path()},
    )
    pump = threading.Thread(target=_pump, args=(name, proc), daemon=True)
    pump.start()
    return proc, pump, time.perf_counter()


def _finished(name: str, proc: subprocess.Popen, began: float, timeout_s: float) -> bool | None:
    """None while ``name`` runs; stops it past its timeout; -> whether it succeeded."""
    if proc.poll() is None:
        if time.perf_counter() - began <= timeout_s:
            return None
        click.echo(f"TIMEOUT {name}: still running after {timeout_s:.0f} s; stopping it", err=True)
        _stop([proc])
    return proc.returncode == 0


def locked_outs(lock: Path = Path("dvc.lock")) -> dict[str, str] | None:
    """Output path -> its hash as dvc.lock records it; None when the file cannot be read whole
    (DVC may be writing it: the caller then assumes every output changed)."""
    try:
        doc = yaml.load(lock.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        return {o["path"]: o.get("md5") for e in doc["stages"].values() for o in e.get("outs") or []}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


def run_all(order: list[str], needs: dict[str, set[str]], jobs: int, timeout_s: float,
            changed_now: set[str] | None = None, reads: dict[str, set[str]] | None = None) -> list[str]:
    """Run ``order`` by its dependencies, ``jobs`` at a time; -> the stages that failed.

    A stage not in ``changed_now`` (what ``dvc status`` reported; None: run every stage) runs
    only if a file it ``reads`` (its deps in dvc.yaml) came out of an earlier stage changed: one
    whose inputs are all bit-identical is up to date, as DVC would find after seconds of
    starting up. (An edit to one bucket reruns ``generate``, which rewrites every dataset,
    and then only the stages that read that bucket.)
    """
    waiting_on = {s: sum(s in deps for deps in needs.values()) for s in needs}  # run those first
    pending, done, failed = list(order), set(), []
    reads = reads or {}
    before, moved = locked_outs(), set()  # moved: outputs written with a new hash

    def stale(stage: str) -> bool:
        return changed_now is None or stage in changed_now or before is None or bool(reads.get(stage, set()) & moved)

    running: dict[str, tuple[subprocess.Popen, threading.Thread, float]] = {}
    try:
        while running or (pending and not failed):
            ready = [s for s in pending if needs[s] <= done] if not failed else []
            for name in [s for s in ready if not stale(s)]:
                pending.remove(name)
                done.add(name)
                click.echo(f"{name}: up to date, its inputs came out unchanged ({len(done)}/{len(order)})")
            ready = [s for s in ready if s not in done]
            for name in sorted(ready, key=lambda s: -waiting_on[s])[: jobs - len(running)]:
                pending.remove(name)
                running[name] = _start(["--wait-for-lock", "repro", "--single-item", name], name)
            time.sleep(0.1)
            for name, (proc, pump, began) in list(running.items()):
                ok = _finished(name, proc, began, timeout_s)
                if ok is None:
                    continue
                pump.join()
                del running[name]
                if ok:
                    done.add(name)
                    if name not in _SKIPPED and before is not None:
                        after = locked_outs()
                        if after is None:
                            before = None  # unreadable: from now on every stage runs (DVC decides)
                        else:
                            moved |= {p for p, md5 in after.items() if before.get(p) != md5}
                    took = "up to date, skipped" if name in _SKIPPED else f"finished in {time.perf_counter() - began:.1f} s"
                    click.echo(f"{name}: {took} ({len(done)}/{len(order)})")
                else:
                    failed.append(name)
                    click.echo(f"FAILED {name} (exit {proc.returncode})"
                               + ("; waiting for the running stages" if running else ""), err=True)
    finally:  # Ctrl-C, SIGTERM or an error here: stop what runs (each stage ends its MLflow run KILLED)
        _stop([proc for proc, _, _ in running.values()])
    return failed


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each child's process group (dvc and its stage), SIGKILL after GRACE_S."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(jobs: int | None = None, timeout_s: float = 3600.0) -> None:
    start = time.perf_counter()
    jobs = jobs or default_jobs()
    load_params("params.yaml")  # every stage reads it: refuse a bad one before anything is touched
    dag.main()
    os.environ[DAG_CHECKED] = dag_fingerprint()  # its stages need not check dvc.yaml again
    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]  # ours and the user's own
    gone, stale = prune(stages)
    if gone:
        click.echo(f"removed {len(gone)} stage(s) no longer in params.yaml, with their outputs: {', '.join(gone)}")
    if stale:
        click.echo(f"removed {len(stale)} output(s) of variants no longer in params.yaml: {', '.join(stale)}")
    os.environ.setdefault("PARITYLAB_REPRO_ID", f"repro-{uuid.uuid4().hex[:12]}")
    os.environ.setdefault(STAGE_RUNS, "0")
    store.check_store()  # sync writes to it at the end: refuse it now, not after an hour of stages
    roots = changed()
    order, needs = plan(stages, set(roots))
    if order:
        click.echo(f"{len(order)} stages to run, {jobs} at a time: {', '.join(order)}")
    failed = run_all(order, needs, jobs, timeout_s, roots, {s: set(stages[s].get("deps", [])) for s in order})
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
    from stages.commands import sync

    sync.main()  # MLflow holds every result of this dvc.lock, whatever DVC skipped
    if order:
        click.echo(f"Pipeline reproduced in {time.perf_counter() - start:.0f} s. "
                   "Use `dvc push` to send your updates to remote storage.")
