"""A fork server: grading workers and kernels that start with TensorFlow already imported.

Importing TensorFlow, tf-keras, TFMOT and IPython costs a grading about 6 CPU-seconds, a fifth
of what a lab-1 submission needs in all. ``grade_many`` therefore starts one server
(:func:`serve`) that imports them once; every worker and kernel is then a fork of it. The fork
happens before any TensorFlow op has run in the server, which is what makes it safe:
TensorFlow starts its thread pools on first use, not on import.

The grader runs :func:`python_argv` of the usual ``python ARGS``: a small launcher (standard
library only) that hands its arguments, environment, working directory and stdin/stdout/stderr
to the server, then stands for the forked process. It forwards signals to it and exits with
its exit code (or dies of its signal). If the launcher's parent dies, it kills the fork. If
the launcher is killed, the fork sees its connection close and exits. Without a server
(``$EDGE_AI_FORKSERVER`` unset, or nothing listening there) the launcher runs ``python ARGS``
itself, so a grading never depends on the server.
"""
from __future__ import annotations

import builtins
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ENV", "PRELOAD", "MIN_MEMORY_MB", "python_argv", "serve", "running"]

ENV = "EDGE_AI_FORKSERVER"  # the server's socket path, in the environment of its clients
# What a lab imports (TensorFlow through helpers), and what a kernel and a worker run on
PRELOAD = ("numpy", "helpers", "tf_keras", "tensorflow_model_optimization", "helpers.data",
           "helpers.measure", "helpers.models", "helpers.pruning", "helpers.quantization",
           "helpers.distillation", "helpers.lowrank", "helpers.lottery",
           "ai_edge_litert.interpreter", "ipykernel.kernelapp", "helpers.course.grading")

# A fork starts with the preloaded libraries mapped (measured: 1.8 GB of address space, 0.76 GB
# resident, shared with the server until written), and a memory limit (RLIMIT_AS) counts them:
# kernels limited to less than this start as plain processes instead.
MIN_MEMORY_MB = 3072
_MESSAGE_BYTES = 1 << 20
_FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")

# The launcher: ``python -I -S -c _LAUNCHER SOCKET ARGS...`` (no site, no imports beyond the
# standard library, so it starts in milliseconds).
_LAUNCHER = r"""
import json, os, signal, socket, sys
path, argv = sys.argv[1], sys.argv[2:]
try:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(path)
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    pid = int(conn.recv(64))
except (OSError, ValueError):
    os.execv(sys.executable, [sys.executable, *argv])
def forward(signum, frame):
    try:
        os.kill(pid, signum)
    except OSError:
        pass
for name in %r:
    signal.signal(getattr(signal, name), forward)
parent = os.getppid()
conn.settimeout(0.5)
while True:
    try:
        reply = conn.recv(64)
        break
    except socket.timeout:
        if os.getppid() != parent:
            os.kill(pid, signal.SIGKILL)
            sys.exit(1)
code = int(reply) if reply else 1
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
""" % (_FORWARDED,)


def python_argv(args: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """The command that runs ``python ARGS`` as a fork of the server named in ``env``.

    Args:
        args: ``python``'s arguments, starting with ``-m MODULE`` or ``-c CODE``.
        env: The environment the command will run in (default: this process's); without
            ``$EDGE_AI_FORKSERVER`` in it the command is plainly ``[sys.executable, *args]``.
    """
    path = (os.environ if env is None else env).get(ENV)
    if not path:
        return [sys.executable, *args]
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, path, *args]


def _run(argv: list[str]) -> None:
    """Run ``python ARGV`` (``-m MODULE ...`` or ``-c CODE ...``) in this process."""
    if len(argv) < 2 or argv[0] not in ("-m", "-c"):
        raise ValueError(f"the fork server runs '-m MODULE' or '-c CODE', got {argv[:2]}")
    if argv[0] == "-m":
        sys.argv, sys.path[0] = [argv[1], *argv[2:]], os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
        main = type(sys)("__main__")
        main.__builtins__ = builtins
        sys.modules["__main__"] = main
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)


def _exit_code(error: SystemExit) -> int:
    if error.code is None or isinstance(error.code, int):
        return error.code or 0
    print(error.code, file=sys.stderr)
    return 1


def _child(listener: socket.socket, wakeup: tuple[int, int], others: list[socket.socket],
           conn: socket.socket, fds: list[int], request: dict) -> None:
    """In the fork: become the process the launcher asked for, then exit (never returns)."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sock in (listener, *others):
            sock.close()
        for fd in wakeup:
            os.close(fd)
        for name in ("SIGCHLD", "SIGTERM"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])

        def exit_with_launcher() -> None:  # the launcher's end closes when it dies
            while conn.recv(64):
                pass
            os._exit(1)

        threading.Thread(target=exit_with_launcher, daemon=True).start()
        _run(request["argv"])
        code = 0
    except SystemExit as error:
        code = _exit_code(error)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _reap(children: dict[int, socket.socket]) -> None:
    """Collect finished forks and tell each one's launcher its exit code."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.send(str(os.waitstatus_to_exitcode(status)).encode())
            except OSError:
                pass
            conn.close()


def serve(path: str, preload: Sequence[str] = PRELOAD) -> None:
    """Listen on the Unix socket ``path``, import ``preload``, and fork for every launcher.

    Returns when the process that started the server exits.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)  # launchers that connect while the imports run wait in the backlog
    # matplotlib reads its backend when imported (a preloaded module imports pyplot): the one
    # an IPython kernel sets for itself, so that plots in a forked kernel show inline
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # the fork imports it itself, and reports the error there
            pass
    # the imported objects go to a generation the collector never walks: a fork's collections
    # then do not write to (and copy) the pages it shares with the server (measured, lab 1:
    # 80,700 instead of 104,600 page faults per kernel)
    gc.collect()
    gc.freeze()
    parent = os.getppid()
    wakeup = os.pipe()
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        ready, _, _ = select.select([listener, wakeup[0]], [], [], 1.0)
        if wakeup[0] in ready:
            os.read(wakeup[0], 4096)
        _reap(children)
        if listener not in ready:
            continue
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            message, fds, _, _ = socket.recv_fds(conn, _MESSAGE_BYTES, 3)
            request = json.loads(message)
            if len(fds) != 3:
                raise ValueError("expected stdin, stdout and stderr")
        except (OSError, ValueError):
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(listener, wakeup, list(children.values()), conn, fds, request)
        for fd in fds:
            os.close(fd)
        try:
            conn.send(str(pid).encode())
        except OSError:  # the launcher is gone; the fork sees that and exits
            pass
        children[pid] = conn


@contextmanager
def running(env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Start a server for the duration of a ``with`` block.

    Args:
        env: The server's environment (default: this process's); its forks get their
            launcher's environment instead.

    Yields:
        ``env`` with ``$EDGE_AI_FORKSERVER`` set: the environment for the server's clients.
    """
    env = dict(os.environ if env is None else env)
    env.pop(ENV, None)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="forkserver-") as tmp:
        path = str(Path(tmp) / "socket")
        server = subprocess.Popen([sys.executable, "-m", "helpers.course.forkserver", path],
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            for _ in range(1000):  # it binds before importing anything heavy: ~0.1 s
                if Path(path).exists() or server.poll() is not None:
                    break
                time.sleep(0.01)
            yield {**env, ENV: path}
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
