"""The warm-start server (stages/warm.py): a command run through it behaves as if run itself.

A real server (torch and MLflow preloaded, a few seconds) and real `python -m stages` commands.
The pipeline's own runs through it (`python -m stages repro`) are in tests/test_pipeline.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stages.warm import ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, str]]:
    """A running server and its socket path; it listens once its preload is done."""
    path = str(tmp_path_factory.mktemp("warm") / "socket")
    proc = subprocess.Popen([sys.executable, "-m", "stages.warm", path], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield proc, path
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    assert not os.path.exists(path)


def command(path: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages", *args], cwd=ROOT,
                            env={**os.environ, ENV: path}, text=True, **popen)


def children(server: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(server.pid).children()


def test_output_and_exit_status_are_the_commands(server, data_dir: Path) -> None:
    proc, path = server
    ok = command(path, "data", "val", "--limit", "3", "--data-dir", str(data_dir),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = ok.communicate(timeout=60)
    assert ok.returncode == 0, err
    assert out.splitlines()[0] == "length,bits,parity" and len(out.splitlines()) == 4
    bad = command(path, "data", "nosuch", "--data-dir", str(data_dir),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = bad.communicate(timeout=60)
    assert bad.returncode == 2 and err.startswith("error: ") and "nosuch" in err and out == ""
    assert children(proc) == []


def _blocked_in_server(path: str, server: subprocess.Popen, data_dir: Path) -> subprocess.Popen:
    """A command whose child (of the server) blocks writing to a pipe nobody reads."""
    client = command(path, "data", "train", "--data-dir", str(data_dir), stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not children(server):
        assert client.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return client


def test_a_signal_to_the_command_reaches_its_child(server, data_dir: Path) -> None:
    proc, path = server
    client = _blocked_in_server(path, proc, data_dir)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == -signal.SIGTERM  # the child's end, passed on as it was
    assert children(proc) == []


def test_a_command_killed_outright_takes_its_child_along(server, data_dir: Path) -> None:
    proc, path = server
    client = _blocked_in_server(path, proc, data_dir)
    client.kill()  # no chance to forward anything: the server sees the connection close
    client.wait(timeout=30)
    deadline = time.monotonic() + 30
    while children(proc):
        assert time.monotonic() < deadline, "the child outlived its command"
        time.sleep(0.05)


def test_without_a_server_the_command_runs_itself(tmp_path: Path, data_dir: Path) -> None:
    cold = command(str(tmp_path / "nothing-here"), "data", "val", "--limit", "1",
                   "--data-dir", str(data_dir), stdout=subprocess.PIPE)
    out, _ = cold.communicate(timeout=60)
    assert cold.returncode == 0 and len(out.splitlines()) == 2


def test_a_command_of_another_interpreter_is_told_to_run_itself(server) -> None:
    """Its packages may not be the ones preloaded: the server forks nothing and says `cold`."""
    import json
    import socket
    import struct

    proc, path = server
    job = json.dumps({"argv": ["--help"], "cwd": str(ROOT), "env": {}, "path0": str(ROOT),
                      "executable": "/elsewhere/bin/python"}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        socket.send_fds(sock, [struct.pack("!I", len(job))], [0, 1, 2])
        sock.sendall(job)
        assert sock.makefile("r").readline() == "cold\n"
    assert children(proc) == []


def test_a_command_gone_mid_request_leaves_the_server_serving(server, data_dir: Path) -> None:
    import socket
    import struct

    proc, path = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        socket.send_fds(sock, [struct.pack("!I", 1000)], [0, 1, 2])
        sock.sendall(b'{"argv": ')  # and gone
    test_output_and_exit_status_are_the_commands(server, data_dir)
