"""Tests for helpers.course.forkserver: processes forked with TensorFlow already imported.

The server imports the real ``PRELOAD`` list once for the module (about 6 s); every test then
starts launchers against it and checks what a grading relies on: the fork runs the requested
``-c``/``-m`` with the launcher's arguments, stdin/stdout, working directory, environment
and exit code; signals reach it; it dies with its launcher, and when the launcher's parent
dies; without a server the launcher is plain ``python``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.course import forkserver

LOADED = "import sys; print('tensorflow' in sys.modules)"


@pytest.fixture(scope="module")
def env():
    with forkserver.running() as env:
        yield env


def _run(env, args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(forkserver.python_argv(args, env), env=env, capture_output=True,
                          text=True, timeout=120, **kwargs)


def _written(path, what: str) -> str:
    """The text a fork writes to ``path`` once it has started (waits up to 60 s)."""
    for _ in range(600):
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{what} never started")


def _gone(pid: int, seconds: float = 15) -> bool:
    for _ in range(int(seconds / 0.1)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_without_a_server_it_is_plain_python(tmp_path):
    assert forkserver.python_argv(["-c", "pass"], {}) == [sys.executable, "-c", "pass"]
    nowhere = {**os.environ, forkserver.ENV: str(tmp_path / "no-socket")}
    result = _run(nowhere, ["-c", LOADED])  # the launcher falls back to python itself
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr


def test_a_fork_starts_with_tensorflow_imported_and_the_launchers_context(env, tmp_path):
    result = _run(env, ["-c", LOADED + "; print(sys.argv[1:])", "a", "b"])
    assert (result.returncode, result.stdout) == (0, "True\n['a', 'b']\n"), result.stderr
    script = ("import os, sys; print(os.getcwd(), os.environ['MARK'], sys.stdin.read()); "
              "print('err', file=sys.stderr); sys.exit(3)")
    result = _run({**env, "MARK": "m1"}, ["-c", script], cwd=tmp_path, input="in")
    assert result.returncode == 3
    assert (result.stdout, result.stderr) == (f"{tmp_path} m1 in\n", "err\n")
    result = _run(env, ["-m", "json.tool"], input='{"a": 1}')
    assert (result.returncode, result.stdout) == (0, '{\n    "a": 1\n}\n'), result.stderr
    result = _run(env, ["-c", "raise KeyError('x')"])
    assert result.returncode == 1 and "KeyError: 'x'" in result.stderr


def test_a_forked_kernel_draws_inline(env):
    """pyplot is preloaded, so its backend is the one ipykernel would have chosen."""
    script = "import matplotlib; print(matplotlib.get_backend())"
    result = _run({k: v for k, v in env.items() if k != "MPLBACKEND"}, ["-c", script])
    assert result.stdout == "module://matplotlib_inline.backend_inline\n", result.stderr


def test_signals_reach_the_fork(env, tmp_path):
    ready = tmp_path / "ready"
    script = (f"import signal, time; signal.signal(signal.SIGINT, lambda *a: exit(7)); "
              f"open({str(ready)!r}, 'w').write('1'); time.sleep(60)")
    for sig, code in ((signal.SIGINT, 7), (signal.SIGTERM, -signal.SIGTERM)):
        ready.unlink(missing_ok=True)
        launcher = subprocess.Popen(forkserver.python_argv(["-c", script], env), env=env)
        _written(ready, "the fork's signal handler")
        launcher.send_signal(sig)
        assert launcher.wait(timeout=30) == code


def _fork_pid(env, tmp_path, wrapper: str = "") -> tuple[subprocess.Popen, int]:
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    argv = forkserver.python_argv(["-c", script], env)
    command = [sys.executable, "-c", wrapper, *argv] if wrapper else argv
    process = subprocess.Popen(command, env=env)
    return process, int(_written(pid_file, "the fork"))


def test_the_fork_dies_with_its_launcher(env, tmp_path):
    launcher, pid = _fork_pid(env, tmp_path)
    assert pid != launcher.pid, "the fork is not the launcher"
    launcher.kill()
    launcher.wait()
    assert _gone(pid), f"fork {pid} outlived its launcher"


def test_the_fork_dies_when_the_launchers_parent_dies(env, tmp_path):
    # a grading worker that is killed: its kernel's launcher is orphaned and kills the fork
    wrapper = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(60)"
    parent, pid = _fork_pid(env, tmp_path, wrapper)
    parent.kill()
    parent.wait()
    assert _gone(pid), f"fork {pid} outlived its launcher's parent"


def test_a_small_memory_limit_starts_a_plain_kernel():
    from helpers.course.kernel import _CurrentPythonKernels

    kernels = _CurrentPythonKernels()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(forkserver.ENV, "/tmp/socket")
        kernels.memory_mb = forkserver.MIN_MEMORY_MB - 1
        assert "/tmp/socket" not in kernels.get_kernel_spec("python3").argv
        kernels.memory_mb = forkserver.MIN_MEMORY_MB
        assert "/tmp/socket" in kernels.get_kernel_spec("python3").argv
