"""The README as a new user follows it: a fresh `git clone`, a plain shell, every command.

The commands are read from README.md's ```bash blocks, so a README change is tested as
written. They run in order in a clone of this repository's HEAD (commit first) with a
shell whose PATH holds no venv: `make` works there, and every later command runs after the
README's own `source .venv/bin/activate`. Only the commands that take more than a minute
or need what a test machine lacks are left out (SKIP, each with its reason); the params are
tests/params_small.yaml so `make repro` takes about a minute, not twenty. After them the
README's "Adding or removing a variant" example is added to params.yaml, built, taken out
and built again, and the clone must be exactly the commit it started from.

The clone's `.venv` is a symlink to the venv running the tests (nothing is installed), and
its requirements.lock and pyproject.toml are dated before that venv's install stamp so
`make` does not reinstall into it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)

# Command prefix -> why the test does not run it.
SKIP = {
    "make test": "the fast suite takes ~5 minutes; it is what runs this file",
    "python -m stages sweep sweeps/smoke.yaml": "~2 minutes on the full params; tests/test_sweep.py runs a tiny sweep",
    "python -m stages sweep sweeps/study.yaml --address auto": "needs a Ray cluster (test_sweep: refused when none)",
    "RAY_ADDRESS=ray://head:10001": "needs a Ray cluster",
    "python -m stages sweep sweeps/fixed_length.yaml": "hours of CPU on a Ray cluster; tests/test_fixed_length.py plans every trial",
    "mlflow server --backend-store-uri postgresql://": "needs PostgreSQL and S3; .ci/mlflow_postgres.sh runs it",
    "export MLFLOW_TRACKING_URI=http://mlflow-host:5000": "names a placeholder server",
    "curl -s http://127.0.0.1:5000/": "needs `make ui` running; tests/test_ui.py asks a real server the same",
}
MAY_FAIL = {"python -m stages check": (0, 1)}  # 1 = a metric regressed: the gate's answer, not a crash


def readme_commands(text: str) -> list[str]:
    """Every command line of the ```bash blocks, continuation lines joined, in order."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def skipped(command: str) -> str | None:
    return next((why for prefix, why in SKIP.items() if command.startswith(prefix)), None)


def plain_env(clone: Path) -> dict[str, str]:
    """A login shell's environment: no venv on PATH or active, no store or cluster chosen."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "COLUMNS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    venv_bins = {str(VENV / "bin"), str(VENV.resolve() / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in venv_bins)
    env["COLUMNS"] = "200"  # a wide terminal: the width tables are made to fit
    env |= {"HOME": os.environ.get("HOME", str(clone)), "GIT_AUTHOR_NAME": "new user", "GIT_COMMITTER_NAME": "new user",
            "GIT_AUTHOR_EMAIL": "user@example.com", "GIT_COMMITTER_EMAIL": "user@example.com"}
    return env


def bash(command: str, cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode in ok, f"`{command}` exited {proc.returncode}:\n{out[-4000:]}"
    assert "Traceback" not in out, f"`{command}` printed a traceback:\n{out[-4000:]}"
    return out


def test_skip_list_names_readme_commands() -> None:
    """A skip entry the README no longer has would hide nothing but mislead: keep it true."""
    commands = readme_commands((ROOT / "README.md").read_text())
    for prefix in SKIP:
        assert any(c.startswith(prefix) for c in commands), f"SKIP names {prefix!r}, not in README.md"


def test_params_comment_commands_are_the_readmes() -> None:
    """params.yaml's header says how to try a change: the same line the README runs."""
    commented = re.findall(r"^#\s+(dvc exp run -S '[^']+')", (ROOT / "params.yaml").read_text(), re.M)
    assert commented
    commands = readme_commands((ROOT / "README.md").read_text())
    for line in commented:
        assert any(c.startswith(line) for c in commands), f"params.yaml's `{line}` is not in README.md"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh clone of HEAD with the venv linked in and the small params; a plain-shell env."""
    stamp = VENV / ".installed"
    if not stamp.exists():
        pytest.skip(f"{stamp} missing: this venv was not made by `make setup`, and make would reinstall")
    clone = tmp_path_factory.mktemp("readme") / "paritylab"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(VENV.resolve())
    before = stamp.stat().st_mtime - 1
    for name in ("requirements.lock", "pyproject.toml"):
        os.utime(clone / name, (before, before))
    (clone / "params.yaml").write_text((ROOT / "tests/params_small.yaml").read_text())
    env = plain_env(clone)
    assert subprocess.run(["bash", "-c", "command -v dvc"], env=env, capture_output=True).returncode != 0, \
        "dvc is on the plain shell's PATH: the test would not show that the README's commands need no venv"
    return clone, env


@pytest.mark.slow
def test_readme_commands_from_a_fresh_clone(clone: tuple[Path, dict[str, str]]) -> None:
    repo, env = clone
    ran = []
    for command in readme_commands((repo / "README.md").read_text()):
        if skipped(command):
            continue
        if command.startswith("source "):  # what activation does: the environment it leaves
            out = bash(f"{command}\nenv -0", repo, env)  # the line may end in a comment
            env = dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)
            continue
        ok = next((codes for prefix, codes in MAY_FAIL.items() if command.startswith(prefix)), (0,))
        out = bash(command, repo, env, ok)
        ran.append(command)
        if command.startswith("make repro"):  # the new user's own results are their baseline
            bash("git add -A && git commit -qm 'my results (small params)'", repo, env)
        if command.startswith("dvc exp show"):
            _check_exp_show(out, command)
        if command.startswith("python -m stages check"):
            assert len(out.splitlines()) <= 30 and out.strip().splitlines()[-1].startswith("check against")
        if command.startswith("dvc plots show"):
            assert (repo / "dvc_plots/index.html").exists()
            assert "dvc_plots" not in bash("git status --porcelain", repo, env)
    assert len(ran) >= 10, ran
    _add_and_remove_a_variant(repo, env)


def _check_exp_show(out: str, command: str) -> None:
    """After `dvc exp run -S KEY=...` the table fits a 200-column terminal and shows KEY."""
    key = re.search(r"-S '([\w.]+)=", (ROOT / "README.md").read_text())
    assert key
    width = max(len(line) for line in out.splitlines())
    print(f"\n`{command}`: {width} characters wide\n{out}")  # shown with pytest -s
    assert width <= 200, f"`{command}` is {width} characters wide:\n{out}"
    assert key.group(1) in out, f"`{command}` does not show {key.group(1)}:\n{out}"


def _add_and_remove_a_variant(repo: Path, env: dict[str, str]) -> None:
    """The README's example block in, `make repro`, out, `make repro`: back to the commit."""
    bash("git reset -q --hard && dvc checkout -q --force", repo, env)  # drop the experiment's workspace
    example = re.search(r"`(\w+): (\{family: [^`]+\})`", (repo / "README.md").read_text())
    assert example, "README.md: no `NAME: {family: ...}` example under 'Adding or removing a variant'"
    name = example.group(1)
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("variants:\n", f"variants:\n  {example.group(0).strip('`')}\n", 1))
    bash("make repro", repo, env)
    assert name in (repo / "dvc.lock").read_text() and (repo / f"artifacts/metrics/{name}.json").exists()
    (repo / "params.yaml").write_text(text)
    bash("make repro", repo, env)
    residue = bash("git status --porcelain --untracked-files=all", repo, env)
    assert residue == "", f"after removing {name}, the clone differs from its commit:\n{residue}"
    check = bash("python -m stages check", repo, env)
    assert name not in check and ", 0 new," in check, check
