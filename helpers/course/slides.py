"""Slide decks from the lessons (``make slides``): one source, three views.

Each lesson carries Jupyter slide metadata (``cell.metadata.slideshow.slide_type``: slide,
subslide, fragment, skip, notes or "-"). This module executes a lesson (with the warm model
cache, so in about a minute), turns it into a reveal.js deck with nbconvert and writes
``build/slides/<lesson>.slides.html``. Everything a deck loads sits beside it in
``build/slides/assets/``, copied from the npm packages pinned in ``package.json`` (installed by
``npm ci``): reveal.js, require.js, jQuery and MathJax 2, the scripts nbconvert's slides
template asks for. No deck references a remote URL, so the decks work offline.

Widgets cannot run in a static deck, so their outputs are shown in their text form: the quiz
as its questions and options, an explorer as its current reading.

``count_slides`` counts a notebook's slides, visible words and quiz slides, for the slide
budgets of issue 14 (10-minute section: at most 12 slides and 700 words).

Usage::

    python -m helpers.course.slides                  # lessons 00-04 and any lesson with slides
    python -m helpers.course.slides lessons/01_pruning.ipynb --jobs 1
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import jinja2
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbconvert import SlidesExporter

from helpers.cache import atomic_write

__all__ = ["SlideCount", "count_slides", "slide_type", "has_slide_metadata", "decks_to_build",
           "install_assets", "remote_references", "local_references", "export_deck",
           "build_deck", "build", "main"]

REPO = Path(__file__).resolve().parents[2]
LESSONS = REPO / "lessons"
NODE_MODULES = REPO / "node_modules"
OUT_DIR = REPO / "build" / "slides"
ASSETS = "assets"  # beside the decks, so build/slides/ can be copied as a whole
# (npm package, path inside it) -> copied to assets/<package>/<path>
ASSET_FILES = [
    ("reveal.js", "LICENSE"), ("reveal.js", "dist"), ("reveal.js", "plugin/notes"),
    ("requirejs", "require.js"), ("jquery", "LICENSE.txt"), ("jquery", "dist/jquery.min.js"),
    # MathJax 2 (the template's API), only what TeX-AMS_CHTML-full needs: 12 of its 73 MB
    ("mathjax", "LICENSE"), ("mathjax", "MathJax.js"), ("mathjax", "config/Safe.js"),
    ("mathjax", "config/TeX-AMS_CHTML-full.js"), ("mathjax", "extensions"),
    ("mathjax", "jax/input/TeX"), ("mathjax", "jax/element"),
    ("mathjax", "jax/output/CommonHTML"), ("mathjax", "fonts/HTML-CSS/TeX/woff"),
    ("mathjax", "localization/en"),
]
THEME = "white"  # its fonts ship with reveal.js; "simple", "sky", ... import Google Fonts
SLIDE_TYPES = ("slide", "subslide", "fragment", "skip", "notes", "-")
HIDDEN = ("skip", "notes")
QUIZ_CALL = "quiz.show("
WORD = re.compile(r"[A-Za-z0-9]+(?:['’.,-][A-Za-z0-9]+)*")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# ipywidgets' default repr, e.g. "VBox(children=(...))": no use to a reader
WIDGET_REPR = re.compile(r"^[A-Z]\w*\((children|value|layout|description|options|index)=")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of an IPython traceback
STYLE = re.compile(r"<style[^>]*>.*?</style>", re.DOTALL | re.IGNORECASE)
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
# XML namespaces name a vocabulary; nothing fetches them
NAMESPACE = re.compile(r"""xmlns(:\w+)?=["']https?://""")
REMOTE = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'()<>]*""", re.IGNORECASE)
REFERENCE = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']([^"']+)["'])"""
                       r"""|(?:url\(\s*["']?([^"')]+)["']?\s*\))"""
                       r"""|(?:["']([\w./-]+\.js)["'])""")

# nbconvert's reveal template, minus what would load from a CDN (mermaid, the widget
# renderer) and with the deck's Reveal object on window (the browser test steps through it)
TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block jupyter_widgets %}{% endblock %}
{% block notebook_css %}
{{ super() }}
<style type="text/css">
/* on a slide: no In/Out prompts, and long code lines wrap instead of running off the edge */
.jp-InputPrompt, .jp-OutputPrompt { display: none; }
.jp-InputArea pre, .jp-OutputArea pre { white-space: pre-wrap; word-break: break-word; }
:root { --jp-code-font-size: 17px; }
.reveal h1, .reveal h2, .reveal h3, .reveal h4 { text-transform: none; }  /* keep case */
</style>
{% endblock notebook_css %}
{% block footer_js %}
<script>
require({waitSeconds: 15},
    ["{{ resources.reveal.url_prefix }}/dist/reveal.js",
     "{{ resources.reveal.url_prefix }}/plugin/notes/notes.js"],
    function (Reveal, RevealNotes) {
        window.Reveal = Reveal;
        Reveal.initialize({
            controls: true, progress: true, history: true, plugins: [RevealNotes],
            transition: "{{ resources.reveal.transition }}",
            slideNumber: "{{ resources.reveal.number }}",
            width: {{ resources.reveal.width | default('960', true) }},
            height: {{ resources.reveal.height | default('700', true) }}
        });
        function fit() {  // a slide taller than the screen scrolls instead of spilling over
            var slide = Reveal.getCurrentSlide();
            if (window.MathJax && MathJax.Hub.getAllJax(slide).length) {
                MathJax.Hub.Rerender(slide);
            }
            var h = $('.reveal').height() * 0.95;
            $('section.present').find('section').filter(function () {
                return $(this).height() > h;
            }).css('height', 'calc(95vh)').css('overflow-y', 'scroll').css('margin-top', '20px');
        }
        Reveal.on('ready', fit);
        Reveal.on('slidechanged', fit);
    });
</script>
{% endblock footer_js %}
"""


class SlideCount(NamedTuple):
    """What a deck shows: slides (slide + subslide), words on them, slides with a quiz."""

    slides: int
    visible_words: int
    quiz_slides: int


def slide_type(cell: dict) -> str:
    """A cell's ``slideshow.slide_type``; "-" (continue the current slide) when unset."""
    return (cell.get("metadata", {}).get("slideshow") or {}).get("slide_type") or "-"


def has_slide_metadata(notebook: dict) -> bool:
    """True when some cell of the notebook sets a slide type other than "-"."""
    return any(slide_type(cell) != "-" for cell in notebook["cells"])


def _words(markdown: str) -> int:
    """Words a reader sees: runs of letters and digits ("don't", "3.5" and "int8" are one
    word each); markup ("#", "|", "---", LaTeX backslashes) is not a word."""
    return len(WORD.findall(markdown))


def count_slides(notebook: dict) -> SlideCount:
    """Count the slides, visible words and quiz slides of a notebook, as reveal.js shows it.

    As nbconvert does, the first visible cell starts a slide whatever its type; after it each
    ``slide`` or ``subslide`` cell starts one. Visible words are the words of the markdown
    cells that are not ``skip`` or ``notes``. A quiz slide is a slide (or subslide) with a
    visible code cell calling ``quiz.show(``.

    Args:
        notebook: A notebook as a dict (``json.load``) or ``nbformat`` node.

    Raises:
        ValueError: a cell has a slide type reveal.js does not know.
    """
    slides, words, quiz_slides, has_quiz, started = 0, 0, 0, False, False
    for index, cell in enumerate(notebook["cells"]):
        kind = slide_type(cell)
        if kind not in SLIDE_TYPES:
            raise ValueError(f"cell {index}: slide_type must be one of {SLIDE_TYPES}, "
                             f"got {kind!r}")
        if kind in HIDDEN:
            continue
        if not started or kind in ("slide", "subslide"):
            quiz_slides += has_quiz
            slides, started, has_quiz = slides + 1, True, False
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            words += _words(source)
        elif cell["cell_type"] == "code" and QUIZ_CALL in source:
            has_quiz = True
    return SlideCount(slides, words, quiz_slides + has_quiz)


def decks_to_build(lessons: Path = LESSONS) -> list[Path]:
    """Lessons 00-04 (``lessons/0*.ipynb``) and every other lesson with slide metadata."""
    lessons = Path(lessons)
    lecture = sorted(lessons.glob("0*.ipynb"))
    others = [path for path in sorted(lessons.rglob("*.ipynb"))
              if path not in lecture and ".ipynb_checkpoints" not in path.parts
              and has_slide_metadata(nbformat.read(path, as_version=4))]
    return lecture + others


def install_assets(out_dir: Path = OUT_DIR, node_modules: Path = NODE_MODULES) -> Path:
    """Copy reveal.js, require.js, jQuery and MathJax from ``node_modules`` beside the decks.

    Returns:
        The assets folder (``out_dir/assets``).

    Raises:
        ValueError: a package is not installed (run ``npm ci`` in the repository).
    """
    node_modules, target = Path(node_modules), Path(out_dir) / ASSETS
    missing = sorted({package for package, part in ASSET_FILES
                      if not (node_modules / package / part).exists()})
    if missing:
        raise ValueError(f"{node_modules} lacks {', '.join(missing)}: run `npm ci` in "
                         f"{REPO} (make slides does)")
    for package, part in ASSET_FILES:
        source, copy = node_modules / package / part, target / package / part
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.map"))
        else:
            shutil.copy2(source, copy)
    return target


def remote_references(html: str) -> list[str]:
    """Every remote URL (``http://``, ``https://`` or protocol-relative ``//host``) in a page.

    Strict on purpose: comments and plain text count too, since any of them could turn into
    a request; only XML namespace declarations (``xmlns="http://www.w3.org/..."``), which
    name a vocabulary and are never fetched, are left out.
    """
    return [match.group(0) for match in REMOTE.finditer(NAMESPACE.sub("xmlns=", html))]


def local_references(html: str) -> list[str]:
    """The relative paths a page loads: ``src``/``href`` attributes, CSS ``url()`` and the
    quoted ``.js`` paths given to require.js; without fragments, queries and data URLs."""
    paths = []
    for match in REFERENCE.finditer(html):
        target = next(group for group in match.groups() if group)
        if target.startswith(("#", "data:", "mailto:", "javascript:")) \
                or re.match(r"([a-z]+:)?//", target, re.IGNORECASE):  # remote: not a path
            continue
        paths.append(re.split(r"[?#]", target)[0])
    return [p for p in paths if p]


def _static_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop the live widget views (and their saved state): each output keeps its text form."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                if WIDGET_REPR.match(data.get("text/plain", "")):
                    data["text/plain"] = "(an interactive widget: run this cell in JupyterLab)"
    return notebook


def export_deck(notebook: nbformat.NotebookNode, name: str, out_dir: Path = OUT_DIR) -> Path:
    """Write ``out_dir/<name>.slides.html`` from an (executed) notebook and return its path.

    Raises:
        ValueError: the deck would reference a remote URL, or a file it loads is not in
            ``out_dir`` (copy the assets there first: ``install_assets``).
    """
    out_dir = Path(out_dir)
    prefix = f"{ASSETS}/"
    exporter = SlidesExporter(
        extra_loaders=[jinja2.DictLoader({"edge_ai_slides.html.j2": TEMPLATE})],
        template_file="edge_ai_slides.html.j2",
        reveal_url_prefix=prefix + "reveal.js", reveal_theme=THEME, reveal_scroll=True,
        reveal_number="c/t",
        require_js_url=prefix + "requirejs/require.js",
        jquery_url=prefix + "jquery/dist/jquery.min.js",
        mathjax_url=prefix + "mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe")
    html, _ = exporter.from_notebook_node(_static_outputs(notebook),
                                          resources={"metadata": {"name": name}})
    # the inlined JupyterLab theme credits its sources in CSS comments: no use on a slide
    html = STYLE.sub(lambda m: CSS_COMMENT.sub("", m.group(0)), html)
    remote = remote_references(html)
    if remote:  # a new nbconvert template could bring one: never ship it silently
        raise ValueError(f"deck {name} would reference remote URLs {sorted(set(remote))[:5]}; "
                         f"point them at local copies in helpers/course/slides.py")
    missing = sorted({p for p in local_references(html) if not (out_dir / p).is_file()})
    if missing:
        raise ValueError(f"deck {name} needs {missing[:3]} in {out_dir}: call "
                         f"install_assets({str(out_dir)!r}) first")

    def write(tmp: Path) -> None:
        tmp.write_text(html, encoding="utf-8")
        tmp.chmod(0o644)  # a page to serve or copy, not a private temporary file

    return atomic_write(out_dir / f"{name}.slides.html", write)


def build_deck(path: Path, out_dir: Path = OUT_DIR, execute: bool = True,
               timeout: int = 900) -> Path:
    """Execute a notebook in its own folder (unless ``execute=False``) and write its deck.

    Args:
        path: The notebook.
        out_dir: Where the deck goes (its assets must be there: ``install_assets``).
        execute: Run the notebook first, so the deck shows its outputs.
        timeout: Seconds one cell may take (a cold model cache trains first).

    Raises:
        ValueError: the notebook is missing, or a cell failed (which cell, and the error).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no notebook {path}")
    notebook = nbformat.read(path, as_version=4)
    if execute:
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            # the kernel's C-level logs (TensorFlow, zmq) would drown the build's report
            client.execute(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except CellExecutionError as error:
            last = ANSI.sub("", str(error)).strip().splitlines()[-1:] or [""]
            raise ValueError(f"{path.name} failed while executing: {last[0]}") from None
        except CellTimeoutError:
            raise ValueError(f"{path.name}: a cell ran longer than {timeout} s; warm the "
                             f"model cache first (make prepare) or raise --timeout") from None
        except DeadKernelError as error:
            raise ValueError(f"{path.name}: the kernel died ({error})") from None
    return export_deck(notebook, path.stem, out_dir)


def build(paths: list[Path], out_dir: Path = OUT_DIR, jobs: int = 2, execute: bool = True,
          node_modules: Path = NODE_MODULES, timeout: int = 900) -> tuple[list[Path], list[str]]:
    """Build several decks, ``jobs`` at a time (each executes in its own kernel).

    Returns:
        The decks written, and one line per notebook that failed.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    install_assets(out_dir, node_modules)
    decks, failures = [], []
    # spawn: a fresh interpreter per worker (fork and the kernels' zmq sockets do not mix)
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(jobs, len(paths)) or 1,
            mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(build_deck, p, out_dir, execute, timeout): p for p in paths}
        for future in concurrent.futures.as_completed(futures):
            try:
                decks.append(future.result())
                print(f"wrote {decks[-1]}", flush=True)
            except Exception as error:  # noqa: BLE001 - one lesson must not stop the others
                first = (str(error).strip().splitlines() or [""])[0]
                failures.append(first if isinstance(error, ValueError) else
                                f"{futures[future].name}: {type(error).__name__}: {first}")
                print(f"error: {failures[-1]}", file=sys.stderr, flush=True)
    return sorted(decks), failures


def main(argv: list[str] | None = None) -> int:
    """Command line: build the decks; exit 1 if any notebook failed."""
    parser = argparse.ArgumentParser(prog="python -m helpers.course.slides",
                                     description="Build reveal.js decks from the lessons.")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="default: lessons 00-04 and every lesson with slide metadata")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="default: build/slides")
    parser.add_argument("--jobs", type=int, default=2, help="lessons run at once (default 2)")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds one cell may run (default 900)")
    parser.add_argument("--no-execute", action="store_true",
                        help="export without running the notebooks (no outputs)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or decks_to_build()
    try:
        _, failures = build(notebooks, args.out, args.jobs, not args.no_execute,
                            timeout=args.timeout)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in notebooks:
        count = count_slides(nbformat.read(path, as_version=4))
        print(f"{path.name}: {count.slides} slides, {count.visible_words} visible words, "
              f"{count.quiz_slides} quiz slide(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
