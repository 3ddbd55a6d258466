"""The rendered-book checks of tests/test_book.py, shown to fail on what they are meant to catch.

Each check runs in headless Chromium on tiny pages served from a temporary folder: a clean page,
on which every check passes, and pages broken on purpose (a MathJax error, a script that throws,
a console error, a code line and a table cell cut off by the page width), on which the matching
check must fail. A check that passes on a broken page would let the book's pages pass unseen.
These run in the unit suite (not marked ``book``); they need Chromium and Playwright and are
skipped, saying so, where either is missing.
"""

from __future__ import annotations

import importlib.util

import pytest
from test_book import CHROMIUM, chromium_browser, cut_off_elements, mathjax_errors, open_page, serve_directory

STYLE = """<style>
  body { margin: 0; font: 14px monospace; }
  main { width: 600px; }
  .clip { overflow: hidden; }
  pre.scroll { overflow-x: auto; }
  table.fixed { table-layout: fixed; width: 300px; border-collapse: collapse; }
  table.fixed td { width: 100px; }
</style>"""

PAGES = {
    "clean.html": """<main><h1>Clean</h1>
      <pre class="scroll">short line</pre>
      <pre class="scroll">a long line in a scrollable block """
    + "x" * 200
    + """</pre>
      <table><tr><th>q</th><td>0.1</td></tr></table>
      <p><mjx-container class="MathJax"><mjx-math>x</mjx-math></mjx-container></p></main>""",
    "merror.html": """<main><p><mjx-container class="MathJax">
      <mjx-merror data-mjx-error="Undefined control sequence \\foo"><mjx-mtext>\\foo</mjx-mtext></mjx-merror>
      </mjx-container></p></main>""",
    "throws.html": """<main><p>text</p></main><script>undefined_function_of_the_theme();</script>""",
    "redeclared.html": """<main><p>text</p></main>
      <script>const THEBE_JS_URL = "a";</script><script>const THEBE_JS_URL = "a";</script>""",
    "console.html": """<main><p>text</p></main><script>console.error("something failed");</script>""",
    "cut_code.html": """<main><div class="clip"><pre>a long line in a block that does not scroll """
    + "x" * 200
    + """</pre></div></main>""",
    "cut_pre.html": """<main><pre class="clip" style="white-space: pre">a clipped line """
    + "y" * 200
    + """</pre></main>""",
    "cut_cell.html": """<main><table class="fixed"><tr><td>ok</td>
      <td>"""
    + "z" * 60
    + """</td><td>ok</td></tr></table></main>""",
    "cut_body.html": """<main style="width: 3000px"><pre>"""
    + "w" * 400
    + """</pre></main>
      <style>body { overflow-x: hidden; }</style>""",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    for name, body in PAGES.items():
        (root / name).write_text(f"<!doctype html><html><head>{STYLE}</head><body>{body}</body></html>")
    with serve_directory(root) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (make system-packages installs it: Debian package chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("Playwright is not installed (it is in requirements.txt)")
    with chromium_browser(CHROMIUM) as b:
        yield b


def _visit(browser, site, name):
    visit = open_page(browser, f"{site}/{name}")
    visit.page.set_viewport_size({"width": 800, "height": 600})  # main (600 px) fits; 3000 px does not
    return visit


def test_clean_page_passes_every_check(browser, site):
    visit = _visit(browser, site, "clean.html")
    try:
        assert mathjax_errors(visit.page) == []
        assert visit.js_errors == []
        assert cut_off_elements(visit.page) == []
    finally:
        visit.page.close()


def test_mathjax_error_is_caught(browser, site):
    visit = _visit(browser, site, "merror.html")
    try:
        errors = mathjax_errors(visit.page)
        assert errors and all("Undefined control sequence" in e for e in errors), errors
        assert visit.js_errors == [] and cut_off_elements(visit.page) == []
    finally:
        visit.page.close()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("throws.html", "undefined_function_of_the_theme"),
        ("redeclared.html", "THEBE_JS_URL"),
        ("console.html", "something failed"),
    ],
)
def test_javascript_error_is_caught(browser, site, name, expected):
    visit = _visit(browser, site, name)
    try:
        assert any(expected in e for e in visit.js_errors), visit.js_errors
        assert mathjax_errors(visit.page) == []
    finally:
        visit.page.close()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cut_code.html", "cut off by div.clip"),
        ("cut_pre.html", "pre.clip"),
        ("cut_cell.html", "td"),
        ("cut_body.html", "cut off by body"),
    ],
)
def test_cut_off_text_is_caught(browser, site, name, expected):
    visit = _visit(browser, site, name)
    try:
        found = cut_off_elements(visit.page)
        assert len(found) == 1 and expected in found[0], found
        assert visit.js_errors == [] and mathjax_errors(visit.page) == []
    finally:
        visit.page.close()
