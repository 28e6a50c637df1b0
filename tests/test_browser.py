"""End to end in a real browser: a student moves a slider and answers a quiz; a deck runs offline.

JupyterLab starts on 127.0.0.1 with a token, its own config, data, runtime and workspace
directories and the project's settings (``jupyter/overrides.json``, which ``make lab`` installs);
Playwright drives Debian's chromium (``/usr/bin/chromium``, headless). The tests

- open a copy of ``lessons/02_quantization.ipynb``, run it up to the bit-width explorer, drag
  the slider and check that the labels and the plot change;
- run a quiz cell, pick an answer, press *Check* and read the verdict, right and wrong (and see
  that JupyterLab's news pop-up stays away);
- build a deck with ``make slides``'s code, open it from disk with the network off (any request
  that is not a local file is aborted and recorded: there must be none), step through it and
  save screenshots of a figure slide and of reveal.js's speaker view into ``build/screenshots/``.

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

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LESSON = REPO / "lessons" / "02_quantization.ipynb"
LAB_SETTINGS = REPO / "jupyter" / "overrides.json"
SCREENSHOTS = REPO / "build" / "screenshots"  # git-ignored; look at them after a run
QUIZ_CELL = 'from helpers import quiz\nquiz.show("04_conclusion")'
NEWS_PROMPT = "official Jupyter news"
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
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(QUIZ_CELL)],
                                            metadata=_python_kernel()), root / "quiz.ipynb")
    settings = root / ".settings"  # what make lab installs as this venv's settings defaults
    (settings / "overrides.d").mkdir(parents=True)
    shutil.copy(LAB_SETTINGS, settings / "overrides.d" / "edge-ai.json")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"),
           "JUPYTER_DATA_DIR": str(root / ".data"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    log = open(root / "jupyterlab.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
         f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True",
         f"--LabApp.workspaces_dir={root / '.workspaces'}",
         f"--LabApp.app_settings_dir={settings}"]
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


def _python_kernel() -> dict:
    return {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def _open_notebook(page, jupyterlab, name: str) -> None:
    """Open a notebook of the private JupyterLab and wait until its kernel is up.

    ``reset`` starts from an empty workspace: JupyterLab would otherwise reopen the notebooks
    of an earlier test, and the one in front might not be ``name``.
    """
    page.goto(f"{jupyterlab['url']}/lab/tree/{name}?reset&token={jupyterlab['token']}")
    page.wait_for_function(
        "(name) => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.context"
        " && window.jupyterapp.shell.currentWidget.context.path === name"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
        arg=name, timeout=120_000)


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
            _open_notebook(page, jupyterlab, LESSON.name)
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


def test_answering_a_quiz_question_gives_feedback(jupyterlab):
    from playwright.sync_api import expect, sync_playwright

    from helpers import quiz

    questions = {q.id: q for q in quiz.load("04_conclusion").questions}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open_notebook(page, jupyterlab, "quiz.ipynb")
            page.evaluate("""async () => {
                const app = window.jupyterapp, panel = app.shell.currentWidget;
                await panel.sessionContext.ready;
                await app.commands.execute('notebook:run-all-cells');
            }""")
            output = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-OutputArea")
            for qid, pick_right in (("conc-3", True), ("conc-1", False)):
                question = questions[qid]
                card = output.locator(".widget-vbox").filter(has_text=question.prompt).last
                try:  # a busy machine: the kernel imports ipywidgets first
                    card.wait_for(state="visible", timeout=300_000)
                except Exception:
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=SCREENSHOTS / "quiz_failure.png")
                    raise
                index = question.correct[0] if pick_right else \
                    next(i for i in range(len(question.options)) if i not in question.correct)
                card.get_by_text(question.options[index].text, exact=True).click()
                card.get_by_role("button", name="Check").click()
                feedback = card.locator(".widget-html-content").last
                verdict = "Correct!" if pick_right else "Not quite."
                expect(feedback).to_contain_text(verdict, timeout=30_000)
                expect(feedback).to_contain_text(question.options[index].feedback[:40])
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            output.screenshot(path=SCREENSHOTS / "quiz_feedback.png")
            # the project's settings keep JupyterLab's news prompt from covering the output
            assert page.get_by_text(NEWS_PROMPT).count() == 0
        finally:
            browser.close()


def test_a_built_deck_runs_offline_with_speaker_notes(demo_deck):
    from playwright.sync_api import sync_playwright

    attempted, failed, errors = [], [], []

    def only_local_files(route):
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:  # data: URLs never reach the router; anything else would go to the network
            attempted.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_offline(True)
            context.route("**/*", only_local_files)
            context.on("requestfailed", lambda request: failed.append(request.url))
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(demo_deck.as_uri())
            page.wait_for_function("() => window.Reveal && window.Reveal.isReady()",
                                   timeout=60_000)
            assert page.evaluate("Reveal.getTotalSlides()") == 3
            # step forward until a slide shows a figure that has loaded
            for _ in range(6):
                if page.evaluate("""() => [...Reveal.getCurrentSlide().querySelectorAll('img')]
                                    .some(img => img.complete && img.naturalWidth > 0)"""):
                    break
                page.evaluate("Reveal.next()")
            else:
                pytest.fail("no slide of the deck showed a figure")
            page.wait_for_timeout(800)  # the slide transition
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "deck_figure_slide.png")
            figure_slide = page.evaluate("Reveal.getIndices()")
            page.evaluate("Reveal.next()")  # the formula fragment: MathJax typesets it offline
            # .mjx-chtml is CommonHTML's output; chromium with --disable-gpu leaves out the
            # MathJax_CHTML class the GPU path adds, so only this one is a reliable sign
            page.wait_for_function("() => document.querySelector('.mjx-chtml')",
                                   timeout=30_000)
            page.evaluate("Reveal.next()")
            assert "Q1. " in page.evaluate("Reveal.getCurrentSlide().innerText")  # the quiz
            page.evaluate("(i) => Reveal.slide(i.h, i.v)", figure_slide)
            with page.expect_popup() as popup:  # reveal.js's speaker view ("s")
                page.keyboard.press("s")
            speaker = popup.value
            speaker.wait_for_load_state()
            notes = speaker.locator(".speaker-controls-notes")
            notes.wait_for(state="visible", timeout=30_000)
            speaker.wait_for_function(
                "() => document.querySelector('.speaker-controls-notes')"
                ".innerText.includes('the curve stays flat')", timeout=30_000)
            speaker.wait_for_timeout(1500)  # the current and upcoming slide previews
            speaker.screenshot(path=SCREENSHOTS / "deck_speaker_view.png")
        finally:
            browser.close()
    assert not attempted, f"the deck tried to reach the network: {attempted}"
    assert not failed, f"local files the deck could not load: {failed}"
    assert not errors, errors
