"""The class hub: the Zero to JupyterHub config and image recipe, and a local hub on 127.0.0.1.

The static checks (config keys and sizing, the image's install steps) run in every `make test`.
The local-hub tests start JupyterHub with the dummy authenticator, the local-process spawner and
the pinned configurable-http-proxy, and drive simulated students through the REST and kernel
APIs; they run under `make test-hub` (EDGE_AI_HUB_TEST=1), which `.ci/run` also runs, and skip
in a plain `make test`, which does not install the proxy.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "jupyterhub"
CONFIG = yaml.safe_load((DEPLOY / "config.yaml").read_text())

_spec = importlib.util.spec_from_file_location("loadtest", DEPLOY / "loadtest.py")
loadtest = importlib.util.module_from_spec(_spec)
sys.modules["loadtest"] = loadtest  # dataclasses look their module up here
_spec.loader.exec_module(loadtest)

# The keys of the chart's values that config.yaml may use, from the `properties` of Zero to
# JupyterHub's jupyterhub/values.schema.yaml (chart 4.x). ANY marks a section the schema leaves
# open (additionalProperties: true): JupyterHub traitlets, environment variables, free values.
ANY = object()
Z2JH = {
    "hub": {"config": ANY, "concurrentSpawnLimit": int, "activeServerLimit": int,
            "consecutiveFailureLimit": int, "extraConfig": ANY, "extraEnv": ANY},
    "singleuser": {
        "image": {"name": str, "tag": str, "pullPolicy": str, "pullSecrets": list},
        "cmd": str, "defaultUrl": str, "startTimeout": int, "extraEnv": ANY,
        "cpu": {"limit": float, "guarantee": float},
        "memory": {"limit": str, "guarantee": str},
        "storage": {"type": str, "capacity": str, "homeMountPath": str,
                    "dynamic": {"storageClass": str}},
        "lifecycleHooks": {"postStart": ANY, "preStop": ANY},
        "profileList": list},
    "cull": {"enabled": bool, "users": bool, "adminUsers": bool, "removeNamedServers": bool,
             "timeout": int, "every": int, "concurrency": int, "maxAge": int},
    "prePuller": {"hook": {"enabled": bool}, "continuous": {"enabled": bool}},
    "scheduling": {"userScheduler": {"enabled": bool},
                   "podPriority": {"enabled": bool},
                   "userPlaceholder": {"enabled": bool, "replicas": int},
                   "userPods": {"nodeAffinity": {"matchNodePurpose": str}}},
    "custom": ANY,
}


def _unknown_keys(values, schema, path=""):
    """Key paths of ``values`` the schema does not have, or whose value has the wrong type."""
    if schema is ANY:
        return []
    if isinstance(schema, dict):
        if not isinstance(values, dict):
            return [f"{path} should be a mapping"]
        return [problem for key, value in values.items()
                for problem in (_unknown_keys(value, schema[key], f"{path}.{key}".strip("."))
                                if key in schema else [f"{path}.{key}".strip(".")])]
    number = schema is float and isinstance(values, (int, float)) and not isinstance(values, bool)
    return [] if number or isinstance(values, schema) else [f"{path}: {values!r} is not {schema}"]


def _bytes(quantity: str) -> float:
    """A Kubernetes-style memory quantity as z2jh takes it ("1.5G", "512M", "2Gi") in bytes."""
    match = re.fullmatch(r"([0-9.]+)([KMGT]i?)", quantity)
    assert match, f"not a memory quantity: {quantity!r}"
    base = 1024 if match[2].endswith("i") else 1000
    return float(match[1]) * base ** ("KMGT".index(match[2][0]) + 1)


def test_schema_check_catches_a_misspelled_key():
    bad = {"singleuser": {"memory": {"guarante": "1G"}}, "cull": {"timeout": "1h"}}
    assert _unknown_keys(bad, Z2JH) == ["singleuser.memory.guarante",
                                        "cull.timeout: '1h' is not <class 'int'>"]


def test_config_uses_only_z2jh_keys():
    assert _unknown_keys(CONFIG, Z2JH) == []


def test_config_sizes_culls_and_prepulls():
    memory, cpu = CONFIG["singleuser"]["memory"], CONFIG["singleuser"]["cpu"]
    assert 0 < _bytes(memory["guarantee"]) <= _bytes(memory["limit"])
    assert 0 < cpu["guarantee"] <= cpu["limit"]
    assert CONFIG["cull"]["enabled"] and CONFIG["cull"]["timeout"] > 0
    assert CONFIG["prePuller"]["hook"]["enabled"] and CONFIG["prePuller"]["continuous"]["enabled"]


def test_course_link_opens_a_lesson_of_this_repository():
    pull = CONFIG["custom"]["nbgitpuller"]
    target = pull["repo"].rstrip("/").split("/")[-1]  # nbgitpuller's default target folder
    prefix = f"lab/tree/{target}/"
    assert pull["urlpath"].startswith(prefix)
    assert (ROOT / pull["urlpath"][len(prefix):]).is_file()
    link = loadtest.course_link("https://hub.example.org/", pull["repo"], pull["branch"],
                                pull["urlpath"])
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    assert link.startswith("https://hub.example.org/hub/user-redirect/git-pull?")
    assert query == {key: [pull[key]] for key in ("repo", "branch", "urlpath")}


def test_image_installs_as_make_does():
    """The Dockerfile runs the Makefile's install targets, which install the pinned `hub` extra."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    runs = " ".join(re.findall(r"^RUN (.*(?:\\\n.*)*)", dockerfile, re.M))
    assert "make .venv/.installed-hub PYTHON=python3.11" in runs and "make prepare" in runs
    assert re.search(r"^\$\(HUB_STAMP\): \$\(STAMP\)\n\t\$\(BIN\)/python -m pip install "
                     r"--quiet -e '\.\[dev,hub\]'", makefile, re.M)
    assert "ipykernel install --sys-prefix --name python3" in makefile
    assert re.search(r"^HUB_STAMP\s*:= \$\(VENV\)/\.installed-hub$", makefile, re.M)
    assert re.search(r"^FROM python:3\.11[-.]", dockerfile, re.M)
    assert "PATH=/srv/course/.venv/bin:$PATH" in dockerfile
    assert re.search(r'^CMD \["jupyterhub-singleuser"\]', dockerfile, re.M)
    extra = re.search(r"^hub = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)[1]
    assert re.findall(r'"(\w+)==[\w.]+"', extra) == ["jupyterhub", "nbgitpuller"]


# --- the local hub -------------------------------------------------------------------------

live = pytest.mark.skipif(os.environ.get("EDGE_AI_HUB_TEST") != "1",
                          reason="the local-hub test runs under `make test-hub`")
STUDENTS = int(os.environ.get("EDGE_AI_HUB_STUDENTS", "2"))


@pytest.fixture(scope="module")
def hub():
    """A local hub for this module; stopped (with its proxy, servers and kernels) even when a
    test fails, and checked to be gone."""
    assert loadtest.PROXY.exists(), "run `make test-hub` (it installs the pinned proxy with npm ci)"
    with loadtest.local_hub() as running:
        yield running
        pids = [running.process.pid] + [
            p.pid for p in psutil.Process(running.process.pid).children(recursive=True)]
    time.sleep(0.5)
    assert not [p.info for p in psutil.process_iter(["pid", "status", "cmdline"])
                if p.info["pid"] in pids and p.info["status"] != psutil.STATUS_ZOMBIE]


@live
def test_students_run_lesson_00_at_once(hub):
    cells = loadtest.code_cells(loadtest.DEFAULT_NOTEBOOK)
    runs = loadtest.run_students(hub, STUDENTS, timeout=900)
    assert [(r.name, r.ok, r.error) for r in runs] == [(r.name, True, "") for r in runs]
    assert all(r.cells_run == len(cells) for r in runs)
    # Sizing check: each student stayed within the memory config.yaml reserves per student
    # (server + kernel peaked at 0.97 GB RSS for lesson 00, 1.1 GB for lab 1, in loadtest.py
    # runs; the guarantee is 1.5 GB, the limit 3 GB).
    guarantee_mb = _bytes(CONFIG["singleuser"]["memory"]["guarantee"]) / 2**20
    assert all(100 < r.peak_rss_mb <= guarantee_mb for r in runs), [r.peak_rss_mb for r in runs]
    assert all(0 < r.server_ready_s <= r.first_result_s <= r.done_s for r in runs)


@live
def test_a_student_whose_cell_hangs_times_out_and_is_stopped(hub, tmp_path):
    notebook = tmp_path / "hangs.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('first result')"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(3600)"),
        nbformat.v4.new_code_cell("print('never reached')")]), notebook)
    [run] = loadtest.run_students(hub, 1, notebook, timeout=150, prefix="hangs")
    assert not run.ok and run.error.startswith("TimeoutError"), run.error
    assert run.cells_run == 1 and run.first_result_s is not None
    assert "hangs0" not in hub.servers()  # run_students stopped the server (and its kernel)

def _call(hub, method, path, token=None, body=None, base="/hub/api", timeout=60):
    request = urllib.request.Request(
        f"{hub.url}{base}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token or hub.token}"})
    return urllib.request.urlopen(request, timeout=timeout)


@live
def test_nbgitpuller_link_clones_the_course(hub, tmp_path):
    """The course link's git-pull (nbgitpuller in the student's server) clones a course repo
    into the student's home, where the link's urlpath then points."""
    pull = CONFIG["custom"]["nbgitpuller"]
    course = tmp_path / pull["repo"].rstrip("/").split("/")[-1]
    notebook = pull["urlpath"].split("/", 3)[3]  # lab/tree/<target>/<notebook path>
    (course / notebook).parent.mkdir(parents=True)
    (course / notebook).write_bytes((ROOT / notebook).read_bytes())
    git = ["git", "-C", str(course), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "init", "-q", "-b", pull["branch"], str(course)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "course"], check=True)

    name = "puller"
    _call(hub, "POST", f"/users/{name}")
    _call(hub, "POST", f"/users/{name}/server")
    deadline = time.monotonic() + 300
    while not json.load(_call(hub, "GET", f"/users/{name}"))["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, "the student's server did not start in 300 s"
        time.sleep(0.5)
    token = json.load(_call(hub, "POST", f"/users/{name}/tokens", body={}))["token"]
    query = urllib.parse.urlencode({"repo": str(course), "branch": pull["branch"]})
    events = []
    server = f"/user/{name}"
    with _call(hub, "GET", f"/git-pull/api?{query}", token, base=server, timeout=120) as stream:
        for line in stream:  # server-sent events, ends when the pull has finished or failed
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
                if events[-1].get("phase") in ("finished", "error"):
                    break
    assert events and events[-1]["phase"] == "finished", events[-1:]
    path = urllib.parse.quote(pull["urlpath"].split("/", 2)[2])
    reply = json.load(_call(hub, "GET", f"/api/contents/{path}?content=0", token, base=server))
    assert reply["type"] == "notebook"
    _call(hub, "DELETE", f"/users/{name}/server")


@live
def test_a_hub_that_fails_to_start_reports_its_log_and_leaves_nothing(tmp_path, monkeypatch):
    broken = tmp_path / "jupyterhub_config.py"
    broken.write_text("raise SystemExit('broken config for the test')\n")
    monkeypatch.setattr(loadtest, "CONFIG", broken)
    before = set(psutil.pids())
    with pytest.raises(RuntimeError, match="broken config for the test"):
        with loadtest.local_hub(startup_timeout=60):
            pass
    time.sleep(0.5)
    left = [p.info["cmdline"] for p in psutil.process_iter(["pid", "cmdline"])
            if p.info["pid"] not in before and "jupyterhub" in " ".join(p.info["cmdline"] or [])]
    assert not left
