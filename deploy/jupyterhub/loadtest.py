"""Simulated students on the local hub: how many this machine holds, memory each, time to a result.

Starts the local JupyterHub (``local/jupyterhub_config.py``: dummy authenticator, local-process
spawner, the pinned configurable-http-proxy) on 127.0.0.1, then drives K students at once, each
through the hub's REST API (create the user, start the server, issue the user a token) and its
own server's kernel API (start a kernel, run every code cell of a notebook over the kernel
websocket). Memory is the peak RSS of each student's single-user server plus its kernel, sampled
from /proc every half second. Every wait is bounded, and the hub, its proxy and every server
and kernel it started are stopped on the way out, also after an error.

    .venv/bin/python deploy/jupyterhub/loadtest.py --students 1 2 4 8
    .venv/bin/python deploy/jupyterhub/loadtest.py --students 1 \
        --notebook solutions/lab1_pruning.ipynb

prints one Markdown table row per K. docs/jupyterhub.md records the output and the sizing taken
from it. tests/test_hub.py imports this module.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

__all__ = ["HERE", "REPO", "PROXY", "DEFAULT_NOTEBOOK", "LocalHub", "StudentRun", "local_hub",
           "course_link", "code_cells", "run_students", "summarize", "main"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROXY = HERE / "local" / "node_modules" / ".bin" / "configurable-http-proxy"
CONFIG = HERE / "local" / "jupyterhub_config.py"
DEFAULT_NOTEBOOK = REPO / "lessons" / "00_introduction.ipynb"


@dataclass
class LocalHub:
    """A running local hub: its public URL, an admin API token and the hub process."""
    url: str
    token: str
    process: subprocess.Popen
    state: Path
    log: Path

    def servers(self) -> dict[str, psutil.Process]:
        """The single-user server process of each user that has one, by user name."""
        found = {}
        for child in psutil.Process(self.process.pid).children():
            try:
                user = child.environ().get("JUPYTERHUB_USER")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if user:
                found[user] = child
        return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_tree(pid: int, grace: float = 20.0) -> None:
    """SIGTERM the hub (it stops its servers and proxy itself), then SIGKILL whatever is left of
    its process tree (servers run in sessions of their own) and of its process group."""
    try:
        root = psutil.Process(pid)
        tree = [root] + root.children(recursive=True)
        root.send_signal(signal.SIGTERM)
        psutil.wait_procs([root], timeout=grace)
    except psutil.NoSuchProcess:  # the hub already exited (a failed start)
        tree = []
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=5)
    try:
        os.killpg(pid, signal.SIGKILL)  # the hub leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def local_hub(startup_timeout: float = 90.0):
    """Start the local hub on free loopback ports; yield a :class:`LocalHub`; always stop it.

    Raises:
        FileNotFoundError: the pinned proxy is not installed (``npm ci --prefix ...``).
        RuntimeError: the hub did not answer within ``startup_timeout`` seconds (its log is in
            the message).
    """
    if not PROXY.exists():
        raise FileNotFoundError(f"configurable-http-proxy is not installed: run "
                                f"`npm ci --prefix {PROXY.parents[2].relative_to(REPO)}`")
    with tempfile.TemporaryDirectory(prefix="edge-ai-hub-") as tmp:
        state = Path(tmp)
        port, token = _free_port(), secrets.token_hex(16)
        env = dict(os.environ, EDGE_AI_HUB_STATE=str(state), EDGE_AI_HUB_PORT=str(port),
                   EDGE_AI_HUB_HUB_PORT=str(_free_port()), EDGE_AI_HUB_API_PORT=str(_free_port()),
                   EDGE_AI_HUB_TOKEN=token)
        log = state / "jupyterhub.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(CONFIG)],
                cwd=state, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        hub = LocalHub(f"http://127.0.0.1:{port}", token, process, state, log)
        try:
            _wait_until_up(hub, startup_timeout)
            yield hub
        finally:
            _stop_tree(process.pid)
            process.wait(timeout=10)


def _wait_until_up(hub: LocalHub, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{hub.url}/hub/api/", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the local hub did not start within {timeout:.0f} s; its log:\n"
                       + hub.log.read_text(errors="replace")[-3000:])


def course_link(hub_url: str, repo: str, branch: str, urlpath: str) -> str:
    """The nbgitpuller link that clones (or updates) ``repo`` into a student's home and opens
    ``urlpath`` (e.g. ``lab/tree/<repo name>/lessons/00_introduction.ipynb``)."""
    query = urllib.parse.urlencode({"repo": repo, "branch": branch, "urlpath": urlpath})
    return f"{hub_url.rstrip('/')}/hub/user-redirect/git-pull?{query}"


def code_cells(notebook: Path) -> list[str]:
    """The source of every non-empty code cell of ``notebook``, in order."""
    nb = nbformat.read(notebook, as_version=4)
    return [cell.source for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]


@dataclass
class StudentRun:
    """What one simulated student saw. Times are seconds from the spawn request."""
    name: str
    ok: bool = False
    error: str = ""
    server_ready_s: float | None = None
    first_result_s: float | None = None
    done_s: float | None = None
    cells_run: int = 0
    peak_rss_mb: float = 0.0


async def _api(hub: LocalHub, method: str, path: str, token: str | None = None,
               body: dict | None = None, base: str = "/hub/api") -> dict:
    request = HTTPRequest(f"{hub.url}{base}{path}", method=method, request_timeout=60,
                          headers={"Authorization": f"token {token or hub.token}"},
                          body=None if body is None and method in ("GET", "DELETE")
                          else json.dumps(body or {}), allow_nonstandard_methods=True)
    try:
        reply = await AsyncHTTPClient().fetch(request)
    except HTTPClientError as err:  # say which request failed: a student's run makes several
        err.message = f"{method} {base}{path}: {err.message}"
        raise
    return json.loads(reply.body) if reply.body else {}


def _message(code: str, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request",
                       "username": "student", "session": session, "version": "5.3",
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}


async def _execute(ws, code: str, session: str, timeout: float, on_output) -> None:
    """Run one cell over the kernel websocket; raise RuntimeError with the kernel's error."""
    msg = _message(code, session)
    await ws.write_message(json.dumps(msg))
    replied = idle = False
    error = None
    deadline = time.monotonic() + timeout
    while not (replied and idle):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"a cell did not finish within {timeout:.0f} s")
        raw = await asyncio.wait_for(ws.read_message(), left)
        if raw is None:
            raise RuntimeError("the kernel websocket closed")
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
            continue
        kind = reply["header"]["msg_type"]
        if kind in ("stream", "execute_result", "display_data"):
            on_output()
        elif kind == "error":
            error = f"{reply['content']['ename']}: {reply['content']['evalue']}"
        elif kind == "status" and reply["content"]["execution_state"] == "idle":
            idle = True
        elif kind == "execute_reply":
            replied = True
            if reply["content"]["status"] != "ok" and error is None:
                error = reply["content"].get("ename", "execution failed")
    if error:
        raise RuntimeError(error)


async def _student(hub: LocalHub, run: StudentRun, cells: list[str], timeout: float) -> None:
    """Fill ``run`` with what its student saw (also ``run.error`` on any failure)."""
    name = run.name
    start = time.monotonic()
    since = lambda: round(time.monotonic() - start, 2)  # noqa: E731
    try:
        await _api(hub, "POST", f"/users/{name}")
        await _api(hub, "POST", f"/users/{name}/server")
        deadline = start + timeout
        while not (await _api(hub, "GET", f"/users/{name}")).get("servers", {}).get(
                "", {}).get("ready"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready within {timeout:.0f} s")
            await asyncio.sleep(0.5)
        run.server_ready_s = since()
        token = (await _api(hub, "POST", f"/users/{name}/tokens",
                            body={"note": "loadtest"}))["token"]
        kernel = await _api(hub, "POST", "/api/kernels", token, {"name": "python3"},
                            base=f"/user/{name}")
        ws_url = (hub.url.replace("http", "ws", 1)
                  + f"/user/{name}/api/kernels/{kernel['id']}/channels")
        ws = await asyncio.wait_for(websocket_connect(HTTPRequest(
            ws_url, headers={"Authorization": f"token {token}"})), 60)
        session = uuid.uuid4().hex

        def first_output():
            if run.first_result_s is None:
                run.first_result_s = since()
        try:
            for code in cells:
                await _execute(ws, code, session, max(1.0, deadline - time.monotonic()),
                               first_output)
                run.cells_run += 1
        finally:
            ws.close()
        run.done_s = since()
        run.ok = True
    except Exception as err:  # noqa: BLE001 (any failure is this student's result, not a crash)
        run.error = f"{type(err).__name__}: {err}"


async def _sample_memory(hub: LocalHub, runs: dict[str, StudentRun], stop: asyncio.Event):
    while not stop.is_set():
        for user, server in hub.servers().items():
            try:
                rss = sum(p.memory_info().rss for p in [server] + server.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
            if user in runs:
                runs[user].peak_rss_mb = max(runs[user].peak_rss_mb, rss / 2**20)
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def _run_all(hub: LocalHub, names: list[str], cells: list[str], timeout: float):
    runs = {name: StudentRun(name) for name in names}
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(_sample_memory(hub, runs, stop))
    try:
        await asyncio.gather(*(_student(hub, run, cells, timeout) for run in runs.values()))
    finally:
        stop.set()
        await sampler
    # Free the machine for the next round: stop every server (bounded by the hub's own timeout).
    await asyncio.gather(*(_api(hub, "DELETE", f"/users/{n}/server") for n in names),
                         return_exceptions=True)
    deadline = time.monotonic() + 60
    while hub.servers() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return list(runs.values())


def run_students(hub: LocalHub, students: int, notebook: Path = DEFAULT_NOTEBOOK,
                 timeout: float = 600.0, prefix: str = "student") -> list[StudentRun]:
    """Drive ``students`` simulated students at once, each running every code cell of ``notebook``.

    Each student's whole run (server start plus all cells) is bounded by ``timeout`` seconds;
    their servers are stopped afterwards. Returns one :class:`StudentRun` per student.
    """
    if students < 1:
        raise ValueError(f"students must be at least 1, got {students}")
    cells = code_cells(Path(notebook))
    names = [f"{prefix}{i}" for i in range(students)]
    return asyncio.run(_run_all(hub, names, cells, timeout))


def summarize(runs: list[StudentRun]) -> dict:
    """One table row: how many completed, and median/max of memory and times over students."""
    done = [r for r in runs if r.ok]

    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        return round(statistics.median(values), 1), round(max(values), 1)
    return {"students": len(runs), "completed": len(done),
            "rss_mb": stat([r.peak_rss_mb for r in runs]),
            "server_ready_s": stat([r.server_ready_s for r in done]),
            "first_result_s": stat([r.first_result_s for r in done]),
            "done_s": stat([r.done_s for r in done]),
            "errors": sorted({r.error for r in runs if r.error})}


def _pair(values: tuple) -> str:
    return " / ".join("-" if v is None else f"{v:g}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, nargs="+", default=[1, 2, 4],
                        help="numbers of concurrent students to try, one round each")
    parser.add_argument("--notebook", type=Path, default=DEFAULT_NOTEBOOK)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds each student may take for the whole run")
    args = parser.parse_args(argv)
    if not args.notebook.exists():
        parser.error(f"no such notebook: {args.notebook}")
    if any(k < 1 for k in args.students):
        parser.error("--students must be positive integers")
    print(f"notebook: {args.notebook}; {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    print("| students | completed | peak RSS per student MB (median / max) | server ready s | "
          "first result s | whole notebook s | load avg |")
    print("|---|---|---|---|---|---|---|")
    with local_hub() as hub:
        for round_, k in enumerate(args.students):
            row = summarize(run_students(hub, k, args.notebook, args.timeout, f"r{round_}s"))
            cells = [k, row["completed"], _pair(row["rss_mb"]), _pair(row["server_ready_s"]),
                     _pair(row["first_result_s"]), _pair(row["done_s"]),
                     f"{os.getloadavg()[0]:.1f}"]
            print("| " + " | ".join(map(str, cells)) + " |", flush=True)
            for error in row["errors"]:
                print(f"  error: {error}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
