"""Where a run comes from: repository root, git state, package versions, the `dvc repro` it belongs to.

Nothing here imports MLflow, torch or TensorFlow; every function is cheap enough to call
once per stage.
"""

from __future__ import annotations

import fnmatch
import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import yaml

EXPS_DIR = "/.dvc/tmp/exps/"  # where `dvc exp run --temp/--queue` copies the workspace
# Files that change during a normal `make repro` without changing what is computed:
# DVC's lock file, the .gitignore files it writes beside its outputs, and dvc.yaml (written
# from params.yaml and the code by `stages dag`). The params file is excluded too because
# the fully resolved params are recorded with every run.
NOT_SOURCE = ("dvc.lock", "dvc.yaml", ".gitignore")
VERSIONED = ("torch", "tensorflow", "keras", "mlflow", "dvc", "numpy")


def repo_root(cwd: str | Path | None = None) -> Path:
    """The main DVC repository's root, also from inside a DVC experiment's temporary copy.

    DVC sets ``DVC_ROOT`` for every stage command, and for `dvc exp run --temp/--queue`
    points it at the parent repository, not at the copy under ``.dvc/tmp/exps/``
    (dvc/repo/experiments/queue/base.py; checked with DVC 3.67). Without it (a stage run
    by hand), the cwd decides: a path inside ``<root>/.dvc/tmp/exps/`` maps to ``<root>``,
    otherwise the nearest ancestor holding ``.dvc/``; failing that, the cwd itself.
    """
    dvc_root = None if cwd else os.environ.get("DVC_ROOT")  # an explicit cwd is asked about itself
    start = os.path.abspath(cwd or dvc_root or os.getcwd())
    if EXPS_DIR in start + "/":
        return Path((start + "/").split(EXPS_DIR, 1)[0])
    path = Path(start)
    if dvc_root:
        return path
    for candidate in (path, *path.parents):
        if (candidate / ".dvc").is_dir():
            return candidate
    return path


def _git(*args: str, cwd: str | Path | None = None) -> str | None:
    """Output of a read-only git command, or None outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_commit(cwd: str | Path | None = None) -> str | None:
    out = _git("rev-parse", "HEAD", cwd=cwd)
    return out.strip() if out else None


def git_remote(cwd: str | Path | None = None) -> str | None:
    """The URL of remote ``origin``, or None (no remote, or not a git work tree)."""
    out = _git("remote", "get-url", "origin", cwd=cwd)
    return out.strip() if out else None


def dvc_output_patterns(cwd: str | Path | None = None) -> list[str]:
    """Glob patterns of every stage output in dvc.yaml (``${key}`` of a foreach -> ``*``)."""
    try:
        doc = yaml.safe_load((Path(cwd or ".") / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    patterns = []
    for stage in (doc.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind) or []:
                path = entry if isinstance(entry, str) else next(iter(entry), "")
                patterns.append(re.sub(r"\$\{[^}]*\}", "*", path).rstrip("/"))
    return [p for p in patterns if p]


def dirty_files(cwd: str | Path | None = None, params_file: str = "params.yaml") -> list[str]:
    """Tracked source files whose content differs from HEAD.

    Not source, so left out: DVC's bookkeeping (``dvc.lock``, ``.gitignore`` files), the
    params file (the resolved params are recorded with every run) and DVC's outputs
    (metrics and plots with ``cache: false`` are tracked by git, and DVC deletes and
    rewrites them during `dvc repro`). Untracked files are ignored too.
    """
    out = _git("status", "--porcelain=v1", "-z", "--untracked-files=no", cwd=cwd)
    if out is None:
        return []
    names = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if len(entry) <= 3:
            continue
        if entry[0] in "RC":  # a rename or copy: the old path follows as its own entry
            next(entries, None)
        names.append(entry[3:])
    return _source(names, cwd, params_file)


def source_changes(commit: str, cwd: str | Path | None = None, params_file: str = "params.yaml") -> list[str] | None:
    """Tracked source files that differ between ``commit`` and HEAD (what ``dirty_files`` counts
    as source); None when git cannot tell (not a work tree, or a commit it does not have)."""
    out = _git("diff", "--name-only", "--no-renames", "-z", commit, "HEAD", cwd=cwd)
    return None if out is None else _source([n for n in out.split("\0") if n], cwd, params_file)


def _source(names: list[str], cwd: str | Path | None, params_file: str) -> list[str]:
    outputs = dvc_output_patterns(cwd)
    return [n for n in names if Path(n).name not in (*NOT_SOURCE, Path(params_file).name)
            and not any(fnmatch.fnmatch(n, p) or fnmatch.fnmatch(n, p + "/*") for p in outputs)]


def package_versions() -> dict[str, str]:
    """Versions of Python and the frameworks, read from package metadata (nothing is imported)."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _is_dvc_run(cmdline: list[str]) -> bool:
    """True for `dvc repro`, `dvc exp run`, `dvc exp exec-run` (also as `python -m dvc`)."""
    return any(os.path.basename(a) == "dvc" for a in cmdline) and bool(
        {"repro", "exp"} & set(cmdline)
    )


def repro_id() -> str:
    """An id shared by the stages of one `dvc repro` (or one DVC experiment), for grouping runs.

    1. ``PARITYLAB_REPRO_ID`` if set (CI, `rerun`, or a user who wants to name a batch);
    2. else the nearest ancestor process that is a DVC run: ``"<pid>-<start time>"``. In
       queued experiments the nearest one is the per-experiment ``dvc exp exec-run``, so
       each experiment gets its own id; the start time makes a recycled pid harmless;
    3. else this process itself (a stage run by hand is its own group).
    """
    if env := os.environ.get("PARITYLAB_REPRO_ID"):
        return env
    me = psutil.Process()
    for proc in me.parents():
        try:
            if _is_dvc_run(proc.cmdline()):
                return f"{proc.pid}-{int(proc.create_time())}"
        except psutil.Error:  # a parent that exited or is not ours to read
            continue
    return f"{me.pid}-{int(me.create_time())}"


def provenance_tags(dvc_stage: str) -> dict[str, str]:
    """Tags recording how this stage ran: git state, DVC stage and experiment, versions, command.

    ``dvc_stage`` (``train-lstm``) is used unless DVC itself says (``DVC_STAGE``). Keys
    have no prefix; the caller namespaces them. ``git.dirty`` counts only tracked source
    files (see ``dirty_files``); they are listed in ``git.dirty_files``.
    """
    commit = git_commit() or "none"
    dirty = dirty_files()
    dvc_stage = os.environ.get("DVC_STAGE") or dvc_stage
    me = psutil.Process()
    tags = {
        "host": socket.gethostname(),  # pid and pid_start: a run whose process died is found and
        "pid": str(me.pid),  # marked FAILED the next time the store is opened
        "pid_start": str(int(me.create_time())),
        "git.commit": commit,
        "git.dirty": str(bool(dirty)).lower(),
        "dvc_stage": dvc_stage,
        "repro_id": repro_id(),
        "command": " ".join(["python", *_argv()]),
        "reproduce": f"git checkout {commit} && dvc repro {dvc_stage}",
    }
    if dirty:
        tags["git.dirty_files"] = " ".join(dirty)[:5000]
    if name := os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = name
        # The experiment's own commit exists only once it has finished.
        tags["reproduce"] = f"dvc exp apply {name} && dvc repro {dvc_stage}"
    if base := os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc_exp_baseline_rev"] = base
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


def params_doc_from_argv() -> dict[str, Any] | None:
    """The params file this stage was started with (``--params PATH``, default params.yaml)."""
    argv, name = sys.argv, "params.yaml"
    for i, arg in enumerate(argv):
        if arg == "--params" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--params="):
            name = arg.removeprefix("--params=")
    path = Path(name)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def _argv() -> list[str]:
    """sys.argv with `python -m stages` restored (argv[0] is then the path of __main__.py)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("stages", "__main__.py")):
        argv[0:1] = ["-m", "stages"]
    return argv
