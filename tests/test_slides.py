"""``make slides``: slide counting, and a deck built offline from a tiny notebook.

The deck test executes a three-slide demo notebook (``tests/fixtures/slides/demo.ipynb``: a
plot, a formula, speaker notes, a quiz) in a kernel, builds it exactly as ``make slides``
builds a lesson, then reads the HTML as a browser would: everything it loads must be a local
file that exists, and no remote URL may appear anywhere in it. reveal.js and the scripts come from ``node_modules`` (``npm ci``; make
test and .ci/run install it).
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers import quiz
from helpers.course import slides

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tests" / "fixtures" / "slides" / "demo.ipynb"  # the demo_deck fixture builds it


def _cell(kind: str, source: str, slide_type: str | None = None):
    cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
    if slide_type:
        cell.metadata["slideshow"] = {"slide_type": slide_type}
    return cell


def test_count_slides_follows_reveal():
    notebook = new_notebook(cells=[
        _cell("md", "# Title (first visible cell: a slide without metadata)", None),
        _cell("md", "Read at home: many words here that no slide shows", "skip"),
        _cell("md", "Say this aloud", "notes"),
        _cell("md", "## Two | words ---", "subslide"),
        _cell("code", "print('code is not counted as words')", "fragment"),
        _cell("md", "- one more", "-"),
        _cell("code", "quiz.show('01_pruning')", "slide"),
        _cell("code", "quiz.show('01_pruning', ids=['p1'])", "subslide"),
        _cell("code", "quiz.show('hidden')", "skip"),
        _cell("md", "last slide", "slide"),
    ])
    count = slides.count_slides(notebook)
    assert count == (5, 8 + 2 + 2 + 2, 2)
    assert (count.slides, count.visible_words, count.quiz_slides) == tuple(count)


def test_count_slides_of_a_notebook_without_metadata_and_a_hidden_start():
    assert slides.count_slides(new_notebook(cells=[_cell("md", "a b c")])) == (1, 3, 0)
    notes_first = new_notebook(cells=[_cell("md", "x", "notes"), _cell("md", "y z", "-"),
                                      _cell("code", "quiz.show('q')", "-")])
    assert slides.count_slides(notes_first) == (1, 2, 1)
    assert not slides.has_slide_metadata(new_notebook(cells=[_cell("md", "a", "-")]))


def test_count_slides_rejects_an_unknown_slide_type():
    with pytest.raises(ValueError, match=r"cell 1: slide_type must be one of .* got 'side'"):
        slides.count_slides(new_notebook(cells=[_cell("md", "a"), _cell("md", "b", "side")]))


def test_the_lecture_is_built():
    decks = [p.name for p in slides.decks_to_build()]
    assert decks[:5] == ["00_introduction.ipynb", "01_pruning.ipynb", "02_quantization.ipynb",
                         "03_distillation.ipynb", "04_conclusion.ipynb"]


def test_remote_and_local_references():
    html = ('<svg xmlns="http://www.w3.org/2000/svg"></svg><script src="a/b.js?x=1"></script>'
            '<link href="https://cdn.example.org/x.css"><img src="data:image/png;base64,AA">'
            '<style>p { background: url(//cdn.example.org/i.png) }</style>'
            '<script>require(["assets/reveal.js/dist/reveal.js"])</script>'
            '<a href="#/2">next</a> <!-- see http://example.com -->')
    assert slides.remote_references(html) == ["https://cdn.example.org/x.css",
                                              "//cdn.example.org/i.png", "http://example.com"]
    assert slides.local_references(html) == ["a/b.js", "assets/reveal.js/dist/reveal.js"]


def test_missing_node_modules_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="npm ci"):
        slides.install_assets(tmp_path / "out", node_modules=tmp_path / "nothing")


class _Loads(HTMLParser):
    """Every URL a page's tags and inline styles would load, read independently of
    ``slides.local_references`` (which the build uses)."""

    def __init__(self):
        super().__init__()
        self.urls, self._in_style = [], False

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        self.urls += [value for name, value in attrs
                      if name in ("src", "href", "data", "poster", "srcset", "action")
                      and value]

    def handle_data(self, data):
        if self._in_style:
            self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", data)


def _css_references(sheet: Path, seen: set | None = None) -> list[tuple[str, Path]]:
    """(url, stylesheet) for every url() and @import of a stylesheet and the sheets it imports."""
    seen = set() if seen is None else seen
    if sheet in seen or not sheet.is_file():
        return []
    seen.add(sheet)
    found = []
    for target in re.findall(r"""url\(\s*['"]?([^'")]+)""", sheet.read_text(encoding="utf-8")):
        if not target.startswith("data:"):
            found.append((target, sheet))
            if target.split("?")[0].endswith(".css"):
                found += _css_references(sheet.parent / target, seen)
    return found


def test_the_deck_has_outputs_notes_and_the_quiz_as_text(demo_deck):
    html = demo_deck.read_text(encoding="utf-8")
    assert demo_deck.name == "demo.slides.html"
    assert html.count('<section') >= 3 and "Reveal.initialize" in html
    assert 'src="data:image/png;base64,' in html, "the executed plot"
    assert re.search(r'<aside class="notes">.*say why the plot matters', html, re.DOTALL)
    assert "Only for reading at home" not in html
    question = next(q for q in quiz.load("04_conclusion").questions if q.id == "conc-3")
    assert f"Q1. {question.prompt}" in html  # the quiz in its text form
    assert all(o.text in html for o in question.options)
    assert slides.WIDGET_VIEW not in html and "widget-state" not in html  # no dead widget
    assert slides.count_slides(nbformat.read(DEMO, as_version=4)) == (3, 36, 1)


def test_the_deck_references_no_remote_url(demo_deck):
    html = demo_deck.read_text(encoding="utf-8")
    without_namespaces = re.sub(r"""xmlns(:\w+)?=["']http://www\.w3\.org/[^"']*["']""", "",
                                html)
    assert not re.findall(r"https?://\S{0,60}", without_namespaces)
    loads = _Loads()
    loads.feed(html)
    remote = [u for u in loads.urls if re.match(r"(https?:)?//", u, re.IGNORECASE)]
    assert not remote and loads.urls, loads.urls


def test_every_asset_the_deck_loads_is_a_local_file(demo_deck):
    html = demo_deck.read_text(encoding="utf-8")
    loads = _Loads()
    loads.feed(html)
    local = {re.split(r"[?#]", u)[0] for u in loads.urls
             if not u.startswith(("data:", "#"))} | set(slides.local_references(html))
    for needed in ("assets/reveal.js/dist/reveal.js", "assets/reveal.js/plugin/notes/notes.js",
                   "assets/reveal.js/dist/reveal.css", "assets/requirejs/require.js",
                   "assets/jquery/dist/jquery.min.js", "assets/mathjax/MathJax.js"):
        assert needed in local
    missing = [p for p in sorted(local) if not (demo_deck.parent / p).is_file()]
    assert not missing
    # the theme's stylesheets and fonts: local files too, and nothing remote in them
    for css in (p for p in local if p.endswith(".css")):
        for target, sheet in _css_references(demo_deck.parent / css):
            assert not re.match(r"(https?:)?//", target), f"{sheet} loads {target}"
            assert (sheet.parent / re.split(r"[?#]", target)[0]).is_file(), (sheet, target)
    # MathJax loads its TeX input and CommonHTML output from its own folder
    assert (demo_deck.parent / "assets/mathjax/config/TeX-AMS_CHTML-full.js").is_file()
    fonts = demo_deck.parent / "assets/mathjax/jax/output/CommonHTML/fonts/TeX"
    assert (fonts / "fontdata.js").is_file()


def test_a_failing_lesson_is_one_line_and_no_deck(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    nbformat.write(new_notebook(cells=[_cell("code", "raise RuntimeError('boom')", "slide")],
                                metadata={"kernelspec": {"name": "python3",
                                                         "display_name": "Python 3"}}), broken)
    assert slides.main([str(broken), "--out", str(tmp_path / "out"), "--jobs", "1"]) == 1
    error = capsys.readouterr().err
    assert error.strip() == "error: broken.ipynb failed while executing: RuntimeError: boom"
    assert not (tmp_path / "out" / "broken.slides.html").exists()


def test_the_command_line_without_execution(tmp_path, capsys):
    assert slides.main([str(DEMO), "--out", str(tmp_path), "--no-execute"]) == 0
    assert "demo.ipynb: 3 slides, 36 visible words, 1 quiz slide(s)" in capsys.readouterr().out
    html = (tmp_path / "demo.slides.html").read_text(encoding="utf-8")
    assert "A demo deck" in html and 'src="data:image/png' not in html  # not run: no plot
