# A local JupyterHub for trying the course as a class would, on one machine and on loopback only:
# any user name logs in (dummy authenticator), each student gets a single-user Jupyter server
# started from this repository's Python (a local process, no isolation between students), and
# the proxy is the configurable-http-proxy pinned in package.json beside this file.
#
#   npm ci --prefix deploy/jupyterhub/local       # once: the pinned proxy
#   .venv/bin/jupyterhub -f deploy/jupyterhub/local/jupyterhub_config.py
#
# then open http://127.0.0.1:8000 and log in with any name. Only for testing and rehearsal: a
# real class uses deploy/jupyterhub/config.yaml (Kubernetes). tests/test_hub.py and
# deploy/jupyterhub/loadtest.py start this same file with the EDGE_AI_HUB_* variables below.
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
STATE = Path(os.environ.get("EDGE_AI_HUB_STATE", REPO / ".cache" / "local-hub"))
PORT = int(os.environ.get("EDGE_AI_HUB_PORT", "8000"))
HUB_PORT = int(os.environ.get("EDGE_AI_HUB_HUB_PORT", PORT + 1))
API_PORT = int(os.environ.get("EDGE_AI_HUB_API_PORT", PORT + 2))
STATE.mkdir(parents=True, exist_ok=True)

c = get_config()  # noqa: F821 (defined by JupyterHub when it loads this file)

# Loopback only: the public proxy port, the hub's own port and the proxy's API port.
c.JupyterHub.bind_url = f"http://127.0.0.1:{PORT}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{HUB_PORT}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{API_PORT}"
c.ConfigurableHTTPProxy.command = [str(HERE / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")

# Any name logs in (a shared password if EDGE_AI_HUB_PASSWORD is set).
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
if os.environ.get("EDGE_AI_HUB_PASSWORD"):
    c.DummyAuthenticator.password = os.environ["EDGE_AI_HUB_PASSWORD"]

# Each student: a jupyterhub-singleuser process from this repository's environment, with a home
# folder under the state folder. Students get the course as in class, through the nbgitpuller
# link (docs/jupyterhub.md), here with this checkout as the repository.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(STATE / "home" / "{username}")
c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []  # Jupyter refuses root without it
c.Spawner.default_url = "/lab"
# A server starting while many others load TensorFlow can take minutes on 2 shared cores.
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
# Students share the instructor's model cache (run `make prepare` once before class).
c.Spawner.environment = {
    "EDGE_AI_CACHE": os.environ.get(
        "EDGE_AI_CACHE", str(Path.home() / ".cache" / "model-compression-edge-ai")),
}
c.Spawner.env_keep = ["PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "EDGE_AI_SEED",
                      "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "JUPYTERHUB_SINGLEUSER_APP"]

# An API token for the load test (deploy/jupyterhub/loadtest.py): it may create users, start
# their servers and issue their tokens; each simulated student then works with its own token.
if os.environ.get("EDGE_AI_HUB_TOKEN"):
    c.JupyterHub.services = [{"name": "loadtest", "api_token": os.environ["EDGE_AI_HUB_TOKEN"]}]
    c.JupyterHub.load_roles = [{"name": "loadtest", "services": ["loadtest"],
                                "scopes": ["admin:users", "admin:servers", "tokens", "list:users"]}]
