"""The rendered book as a reader sees it: headless Chromium on the built HTML (after `make book`).

Every page is served from localhost and opened in Chromium; the checks are what a reader would
notice: maths typeset by the local MathJax (no raw TeX left), every figure loaded, no error in
any cell, the profile note on every chapter, and no request leaving the machine. Besides, every
page must show no MathJax error, log no JavaScript error, and cut off no code line or table cell
(see :func:`cut_off_elements` for what "cut off" means). Those three checks are functions that
tests/test_page_checks.py also runs on small, deliberately broken pages, so that a check that
could never fail would be noticed. Screenshots of the front page and of chapter 1 are written to
_build/screenshots/.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.book

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _chapters() -> list[Path]:
    return sorted((HTML / "book" / "chapters").glob("*.html"))


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free localhost port; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output readable
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def chromium_browser(executable: str) -> Iterator:
    """Headless Chromium through Playwright (a fresh, empty user-data-dir on every launch)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Visit:
    """An opened page, the hosts it contacted and the JavaScript errors it reported."""

    page: object
    hosts: set[str] = field(default_factory=set)
    js_errors: list[str] = field(default_factory=list)


def _on_console(visit: Visit, msg) -> None:
    if msg.type != "error":
        return
    where = (msg.location or {}).get("url", "")
    if urlparse(where).path == "/favicon.ico":
        return  # Chromium asks every site for /favicon.ico on its own; the book has none, by design
    visit.js_errors.append(f"console error: {msg.text}" + (f" ({where})" if where else ""))


def open_page(browser, url: str) -> Visit:
    """Load ``url`` at a 1280 x 900 viewport, wait for MathJax to finish typesetting, and return
    the :class:`Visit`. The listeners are attached before the page loads, so errors raised while
    it loads are caught: console messages of type ``error`` (a resource that failed to load
    included) and uncaught exceptions (``pageerror``)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    visit = Visit(page)
    page.on("request", lambda req: visit.hosts.add(urlparse(req.url).hostname or ""))
    page.on("console", functools.partial(_on_console, visit))
    page.on("pageerror", lambda exc: visit.js_errors.append(f"uncaught: {exc}"))
    page.goto(url, wait_until="load")
    if page.evaluate("() => [...document.scripts].some(s => s.src.includes('mathjax'))"):
        # Sphinx adds MathJax only to pages with maths
        page.wait_for_function(
            "() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise", timeout=30_000
        )
        page.evaluate("() => window.MathJax.startup.promise")
    page.evaluate("() => new Promise(r => setTimeout(r, 100))")  # let late messages arrive
    return visit


def mathjax_errors(page) -> list[str]:
    """What MathJax could not typeset: MathJax 3 renders a TeX error as an ``mjx-merror`` element
    and marks it with ``data-mjx-error`` (MathJax 2 used ``.MathJax_Error``). Returns the error
    messages; empty when all maths typeset."""
    return page.evaluate(
        """() => [...document.querySelectorAll('mjx-merror, [data-mjx-error], .MathJax_Error')]
                 .map(e => e.getAttribute('data-mjx-error') || e.textContent.trim() || e.tagName)"""
    )


# What "cut off" means: part of a code line or table cell that the reader can neither see nor
# scroll to. Checked for every rendered pre, code, td and th inside <main>:
#   1. the element is wider than its box (scrollWidth > clientWidth) and its own overflow-x is
#      hidden or clip; a table cell counts with overflow-x visible too, since its text then runs
#      over the neighbouring cell or out of the table;
#   2. or its content reaches past the left or right edge of an ancestor whose overflow-x is
#      hidden or clip (on html or body that edge is the viewport's).
# A box the theme makes scrollable (overflow-x auto or scroll; sphinx-book-theme does so for code
# blocks, cell outputs and wide tables) shows a scroll bar: what sticks out of it is reachable,
# not cut off. The scrolling box itself must still be visible, so the walk up the ancestors goes
# on with its edges. A page that scrolls sideways as a whole is likewise not cut off.
_CUT_OFF_JS = r"""(selector) => {
  const clips = v => v === 'hidden' || v === 'clip';
  const scrolls = v => v === 'auto' || v === 'scroll';
  const root = document.documentElement;
  const name = e => e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className.trim()
      ? '.' + e.className.trim().split(/\s+/).join('.') : '');
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!el.getClientRects().length) continue;  // not rendered (display: none, a closed dropdown)
    const st = getComputedStyle(el);
    const cell = el.tagName === 'TD' || el.tagName === 'TH';
    const what = name(el) + ' "' + el.textContent.trim().slice(0, 60) + '"';
    const cut = clips(st.overflowX) || (cell && st.overflowX === 'visible');
    if (el.scrollWidth > el.clientWidth + 1 && cut) {
      found.push(what + ': wider than its box (' + el.scrollWidth + ' > ' + el.clientWidth + ' px)');
      continue;
    }
    const r = el.getBoundingClientRect();
    let left = r.left;
    let right = st.overflowX === 'visible' ? r.left + Math.max(r.width, el.scrollWidth) : r.right;
    for (let a = el.parentElement; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      const top = a === document.body || a === root;
      if (clips(s.overflowX)) {
        const ar = top ? {left: 0, right: root.clientWidth} : a.getBoundingClientRect();
        if (right > ar.right + 1 || left < ar.left - 1) {
          found.push(what + ': cut off by ' + name(a));
          break;
        }
      } else if (scrolls(s.overflowX) && !top) {
        const ar = a.getBoundingClientRect();
        left = ar.left;
        right = ar.right;
      }
    }
  }
  return found;
}"""

CUT_OFF_SELECTOR = "main pre, main code, main td, main th"


def cut_off_elements(page, selector: str = CUT_OFF_SELECTOR) -> list[str]:
    """Code lines and table cells cut off by the page width (see the comment above); empty when
    everything is visible or can be scrolled to."""
    return page.evaluate(_CUT_OFF_JS, selector)


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail("no rendered book at _build/html: run `make book PROFILE=ci` first")
    with serve_directory(HTML) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: run `make system-packages` (Debian package chromium)")
    with chromium_browser(CHROMIUM) as b:
        yield b


def _pages() -> list[str]:
    pages = ["book/intro.html", "book/preface.html", "book/bibliography.html"]
    return pages + [str(p.relative_to(HTML)) for p in _chapters()]


def test_there_are_chapters():
    assert _chapters(), "no chapter was rendered"


@pytest.mark.parametrize("rel", _pages())
def test_page_reads_correctly(server, browser, rel):
    visit = open_page(browser, f"{server}/{rel}")
    page, hosts = visit.page, visit.hosts
    try:
        text = page.inner_text("main")
        # maths typeset by the local MathJax: no raw TeX delimiters left in the visible text
        assert "\\(" not in text and "\\[" not in text and "$$" not in text
        if "chapters/" in rel:  # chapters have maths: typeset, by the MathJax of the build
            assert page.evaluate("() => document.querySelectorAll('mjx-container').length") > 0
            assert page.evaluate(
                "() => [...document.scripts].some(s => s.src.includes('_static/mathjax/tex-chtml.js'))"
            )
        # every figure loaded
        broken = page.evaluate(
            "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert broken == [], broken
        # no cell shows an error
        errors = page.evaluate(
            "() => document.querySelectorAll("
            "'.output.traceback, .output.error, .cell_output .stderr .ansi-red-fg').length"
        )
        assert errors == 0 and "Traceback (most recent call last)" not in text
        # nothing was fetched from another machine
        assert hosts <= {"127.0.0.1", ""}, hosts
        # what a reader would see broken: maths MathJax rejected, a failed script, text cut off
        assert mathjax_errors(page) == []
        assert visit.js_errors == []
        assert cut_off_elements(page) == []
        if "chapters/" in rel:
            assert "executed with the" in text and "profile" in text
            assert page.evaluate("() => document.querySelectorAll('main img').length") >= 1
    finally:
        page.close()


def test_chapter_one_has_its_figures_and_numbers(server, browser):
    page = open_page(browser, f"{server}/book/chapters/01_smoothing.html").page
    try:
        assert page.evaluate("() => document.querySelectorAll('figure img').length") >= 2
        captions = page.inner_text("main")
        assert "Fig. 1.1" in captions and "Fig. 1.2" in captions
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "chapter01.png"), full_page=True)
    finally:
        page.close()
    # a glued table is numbered as a table (book/_ext/book_tables.py), and so is a reference to it
    page = open_page(browser, f"{server}/book/chapters/02_gaussian.html").page
    try:
        found = page.evaluate(
            "() => [...document.querySelectorAll('figcaption .caption-number')].map(e => e.textContent)"
        )
        numbers = [n.strip() for n in found]
        assert "Table 2.1" in numbers and "Fig. 2.1" in numbers, numbers
        assert not any(n.startswith("Fig.") and "Table" in n for n in numbers)
        assert "Table 2." in page.inner_text("main p:has(a[href='#tab-certified'])")
    finally:
        page.close()
    front = open_page(browser, f"{server}/book/intro.html").page  # index.html only redirects here
    try:
        front.screenshot(path=str(SHOTS / "front.png"), full_page=True)
    finally:
        front.close()
    assert (SHOTS / "front.png").stat().st_size > 10_000
