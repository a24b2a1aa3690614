"""Warm starts for stage commands: a fork server with torch and MLflow already imported.

DVC runs each stage as its own process, and for a short stage most of the time is imports
(MLflow with its SQLite store 2.4 s, torch 1.7 s, torch's optimizer importing torch._dynamo
1.0 s) repeated by each of ~48 stages. ``python -m stages repro`` starts one server and
names its socket in ``PARITYLAB_WARM``; a stage command (``python -m stages ...``, run by
dvc) that finds the variable hands its arguments, working directory, environment and
standard streams to the server, which forks a child to run it. The child's output is the
command's own, its exit status becomes the command's, a signal sent to the command goes to
the child, and the child is stopped if the command goes away. Stage code is imported
fresh in each child (only third-party packages are preloaded), and TensorFlow is never
preloaded: it starts threads, which a fork does not survive. Without the variable (plain
``dvc repro``, the tests, a shell) a command runs as itself; so does it when no server
answers.

Protocol, one connection per command: the client sends a 4-byte length with its three
standard-stream descriptors (SCM_RIGHTS), then that many bytes of JSON {argv, cwd, env,
path0, executable}; the server answers ``pid N`` once the child runs and ``status S`` (a
wait status) when it ends, or ``cold`` (run yourself) to a command of another interpreter.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

ENV = "PARITYLAB_WARM"
PRELOAD = ("numpy", "pandas", "pydantic", "click", "yaml", "torch", "torch.optim", "torch._dynamo",
           "mlflow", "mlflow.store.tracking.sqlalchemy_store", "mlflow.pytorch")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_S = 30.0  # a child whose command is gone gets SIGTERM, then SIGKILL this much later


# --- client: the stage command ------------------------------------------------------------

def delegate(path: str) -> None:
    """Run this command (sys.argv) in a child of the server at ``path`` and exit as it does.

    Returns, having done nothing, when no server is listening there (or it says ``cold``):
    the caller then runs the command itself.
    """
    # Held until the child's pid is known, then forwarded: a SIGTERM in between would
    # otherwise end this command alone, and the child only later, when the server notices.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        pid, reply = _start_child(path)
        if pid is not None:
            for signum in FORWARDED:
                signal.signal(signum, lambda s, _f: _signal(pid, s))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    if pid is None:
        return
    line = reply.readline()
    if not line:  # the server was killed: so, with it, was the child
        sys.exit(f"error: the warm-start server ({path}) went away while the command ran")
    status = int(line.split()[1])
    if os.WIFSIGNALED(status):  # end by the same signal, so whoever waits on us sees what happened
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    sys.exit(os.waitstatus_to_exitcode(status))


def _start_child(path: str) -> tuple[int | None, Any]:
    """Send this command to the server; -> (the child's pid, the reply stream), or (None, None)
    if there is no server or it answers ``cold``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None, None
    env = {k: v for k, v in os.environ.items() if k != ENV}  # the child runs the command itself
    job = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env, "path0": sys.path[0],
                      "executable": sys.executable}).encode()
    socket.send_fds(sock, [struct.pack("!I", len(job))], [0, 1, 2])
    sock.sendall(job)
    reply = sock.makefile("r")
    line = reply.readline()
    if not line:
        sys.exit(f"error: the warm-start server ({path}) went away; rerun, or use `repro --cold`")
    if line.startswith("cold"):  # another interpreter than the server's: nothing ran
        sock.close()
        return None, None
    return int(line.split()[1]), reply


# --- server ---------------------------------------------------------------------------------

def serve(path: str) -> dict[str, Any]:
    """Serve at ``path`` until SIGTERM or until the parent process ends.

    Returns only in a forked child, with the job it is to run (see run()); the server
    itself ends through sys.exit, once its children have ended. The socket's folder is
    the caller's to make private (stages/repro.py uses a mkdtemp folder, mode 0700).
    """
    for name in PRELOAD:
        __import__(name)
    gc.freeze()  # so a child's garbage collections leave these objects (and their pages) alone
    server = _Server(path)
    while True:
        job = server.step()
        if job is not None:
            return job


class _Server:
    """The server's state: one listening socket, the running children and their commands."""

    def __init__(self, path: str) -> None:
        self.path, self.parent = path, os.getppid()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)  # only after the preload: a command that comes earlier runs itself
        self.listener.listen(64)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)  # a signal wakes the select in step()
        self.stopping = False
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver, which then stops us
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ)
        self.children: dict[int, socket.socket] = {}  # pid -> its command's connection
        self.deadlines: dict[int, float] = {}  # pid -> when it gets SIGKILL (it was sent SIGTERM)

    def step(self) -> dict[str, Any] | None:
        """Handle what happened within a second; -> a job, in a child just forked, else None."""
        for key, _ in self.sel.select(timeout=1.0):
            if key.fileobj is self.listener:
                job = self._fork(*self.listener.accept())
                if job is not None:
                    return job
            elif key.fileobj == self.wake_r:
                os.read(self.wake_r, 4096)
            else:  # a command's connection turned readable: the command is gone
                self.sel.unregister(key.fileobj)
                self._stop(key.data)
        self._reap()
        for pid, due in self.deadlines.items():
            if time.monotonic() > due:
                _signal(pid, signal.SIGKILL)
        if self.stopping or os.getppid() != self.parent:
            for pid in self.children.keys() - self.deadlines.keys():
                self._stop(pid)
            if not self.children:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                sys.exit(0)
        return None

    def _fork(self, conn: socket.socket, _address: Any) -> dict[str, Any] | None:
        """Fork a child for the job on ``conn``; -> the job in the child, None in the server."""
        job = _receive(conn)
        if job is None:
            return None
        if job.get("executable") != sys.executable:  # its packages may differ from those preloaded here
            for fd in job["fds"]:
                os.close(fd)
            _send(conn, "cold")
            conn.close()
            return None
        pid = os.fork()
        if pid == 0:  # the child: drop the server's state
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.sel.close()
            for sock in (self.listener, conn, *self.children.values()):
                sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            return job
        for fd in job["fds"]:
            os.close(fd)
        self.children[pid] = conn
        _send(conn, f"pid {pid}")
        self.sel.register(conn, selectors.EVENT_READ, pid)
        return None

    def _stop(self, pid: int) -> None:
        """SIGTERM now (a stage ends its MLflow run KILLED), SIGKILL after GRACE_S."""
        _signal(pid, signal.SIGTERM)
        self.deadlines.setdefault(pid, time.monotonic() + GRACE_S)

    def _reap(self) -> None:
        """Wait for the children that ended; tell each one's command its wait status."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid)
            self.deadlines.pop(pid, None)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn)
            _send(conn, f"status {status}")
            conn.close()


def _receive(conn: socket.socket) -> dict[str, Any] | None:
    """The job sent on ``conn``; None (all closed) if the command went away mid-request."""
    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    data = b""
    try:
        (size,) = struct.unpack("!I", header)
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the command went away")
            data += chunk
        return {**json.loads(data), "fds": fds}
    except (OSError, ValueError, struct.error):
        for fd in fds:
            os.close(fd)
        conn.close()
        return None


def _send(conn: socket.socket, line: str) -> None:
    with contextlib.suppress(OSError):  # the command may be gone already
        conn.sendall(f"{line}\n".encode())


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def run(job: dict[str, Any]) -> None:
    """In a forked child: become ``python -m stages ARGV`` as run by the command that sent ``job``.

    Ends the process. Like multiprocessing's forked children it skips the interpreter's
    teardown, which here would write to every object of the preloaded packages (refcounts)
    and so copy the server's whole heap: 2 s, more than the stage itself at times.
    """
    import runpy
    import threading
    import traceback

    for target, fd in enumerate(job["fds"]):
        os.dup2(fd, target)
        os.close(fd)
    unbuffered = bool(job["env"].get("PYTHONUNBUFFERED"))  # stages/repro.py sets it, to show progress live
    sys.stdout.reconfigure(line_buffering=unbuffered or os.isatty(1), write_through=unbuffered)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    for name in [m for m in sys.modules if m.split(".")[0] in ("stages", "models")]:
        del sys.modules[name]  # the project's code comes fresh from the command's checkout
    sys.path[0] = job["path0"]
    sys.argv = ["-m", *job["argv"]]
    code = 0
    try:
        runpy.run_module("stages", run_name="__main__", alter_sys=True)
    except SystemExit as e:  # as the interpreter reads it
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        threading._shutdown()  # what the interpreter does first at exit: wait for threads
        import atexit

        atexit._run_exitfuncs()  # MLflow ends an active run here, for one
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":  # python -m stages.warm SOCKET: the server (started by stages/repro.py)
    run(serve(sys.argv[1]))
