"""End to end in a real browser: JupyterLab runs a lesson, a student moves its slider.

JupyterLab starts on 127.0.0.1 with a token and its own config, data, runtime and workspace
directories; Playwright drives Debian's chromium (``/usr/bin/chromium``, headless). The test
opens a copy of ``lessons/02_quantization.ipynb``, runs it up to the bit-width explorer, drags
the slider and checks that the labels and the plot change.

Needs ``apt-get install chromium``. Without it the test is skipped, unless
``EDGE_AI_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LESSON = REPO / "lessons" / "02_quantization.ipynb"
EXPLORER_CALL = "widgets.bitwidth_explorer("
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

if not CHROMIUM.exists():
    if os.environ.get("EDGE_AI_REQUIRE_BROWSER") == "1":
        pytest.fail(f"EDGE_AI_REQUIRE_BROWSER=1 but {CHROMIUM} is missing: "
                    f"apt-get install -y chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A private JupyterLab server over a folder holding a copy of the lesson."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(LESSON, root / LESSON.name)  # autosave must never touch the repository
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"),
           "JUPYTER_DATA_DIR": str(root / ".data"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    log = open(root / "jupyterlab.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
         f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True",
         f"--LabApp.workspaces_dir={root / '.workspaces'}"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (root / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"url": url, "token": token, "root": root}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _explorer_cell_index() -> int:
    cells = json.loads(LESSON.read_text())["cells"]
    return next(i for i, cell in enumerate(cells)
                if cell["cell_type"] == "code" and EXPLORER_CALL in "".join(cell["source"]))


def test_moving_the_bitwidth_slider_redraws_the_plot(jupyterlab):
    from playwright.sync_api import sync_playwright

    index = _explorer_cell_index()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{jupyterlab['url']}/lab/tree/{LESSON.name}"
                      f"?token={jupyterlab['token']}")
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
                timeout=120_000)
            # what a student does: select the explorer's cell, run everything up to it
            page.evaluate("""async (index) => {
                const app = window.jupyterapp, panel = app.shell.currentWidget;
                await panel.sessionContext.ready;
                panel.content.activeCellIndex = index;
                await app.commands.execute('notebook:run-all-above');
                await app.commands.execute('notebook:run-cell');
            }""", index)
            cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
            slider = cell.locator(".widget-slider .noUi-target")
            image = cell.locator(".widget-image")
            labels = cell.locator(".widget-html-content")
            # a cold model cache trains LeNet-5 first: minutes, not seconds
            slider.wait_for(state="visible", timeout=600_000)
            image.wait_for(state="visible", timeout=60_000)
            assert "bits" in cell.locator(".widget-slider").inner_text()
            readout = cell.locator(".widget-readout")
            before = {"readout": readout.inner_text(), "labels": labels.inner_text(),
                      "image": image.screenshot()}

            box = slider.bounding_box()  # click near the left end of the track: few bits
            page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + box["height"] / 2)

            deadline = time.monotonic() + 60
            while readout.inner_text() == before["readout"] \
                    or labels.inner_text() == before["labels"]:
                assert time.monotonic() < deadline, "the slider moved but nothing answered"
                page.wait_for_timeout(200)
            page.wait_for_timeout(500)  # let the new frame paint
            after = image.screenshot()
            assert after != before["image"], "the plot did not change"
            assert "error" not in cell.locator(".jp-OutputArea").inner_text().lower()
        finally:
            browser.close()
