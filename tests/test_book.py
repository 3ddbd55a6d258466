"""The rendered book as a reader sees it: headless Chromium on the built HTML (after `make book`).

Every page is served from localhost and opened in Chromium; the checks are what a reader would
notice: maths typeset by the local MathJax (no raw TeX left), every figure loaded, no error in
any cell, the profile note on every chapter, and no request leaving the machine. Screenshots of
the front page and of chapter 1 are written to _build/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.book


def _chapters() -> list[Path]:
    return sorted((HTML / "book" / "chapters").glob("*.html"))


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail("no rendered book at _build/html: run `make book PROFILE=ci` first")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output readable
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: run `make system-packages` (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright starts Chromium with a fresh, empty user-data-dir of its own on every launch.
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield b
        b.close()


def _open(browser, url: str):
    """Load ``url``, wait for MathJax to finish, and return (page, hosts contacted)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    hosts: set[str] = set()
    page.on("request", lambda req: hosts.add(urlparse(req.url).hostname or ""))
    page.goto(url, wait_until="load")
    if not page.evaluate("() => [...document.scripts].some(s => s.src.includes('mathjax'))"):
        return page, hosts  # Sphinx adds MathJax only to pages with maths
    page.wait_for_function("() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise",
                           timeout=30_000)
    page.evaluate("() => window.MathJax.startup.promise")
    return page, hosts


def _pages() -> list[str]:
    pages = ["book/intro.html", "book/preface.html", "book/bibliography.html"]
    return pages + [str(p.relative_to(HTML)) for p in _chapters()]


def test_there_are_chapters():
    assert _chapters(), "no chapter was rendered"


@pytest.mark.parametrize("rel", _pages())
def test_page_reads_correctly(server, browser, rel):
    page, hosts = _open(browser, f"{server}/{rel}")
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
            "() => document.querySelectorAll('.output.traceback, .output.error, .cell_output .stderr .ansi-red-fg').length"
        )
        assert errors == 0 and "Traceback (most recent call last)" not in text
        # nothing was fetched from another machine
        assert hosts <= {"127.0.0.1", ""}, hosts
        if "chapters/" in rel:
            assert "executed with the" in text and "profile" in text
            assert page.evaluate("() => document.querySelectorAll('main img').length") >= 1
    finally:
        page.close()


def test_chapter_one_has_its_figures_and_numbers(server, browser):
    page, _ = _open(browser, f"{server}/book/chapters/01_smoothing.html")
    try:
        assert page.evaluate("() => document.querySelectorAll('figure img').length") >= 2
        captions = page.inner_text("main")
        assert "Fig. 1.1" in captions and "Fig. 1.2" in captions
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "chapter01.png"), full_page=True)
    finally:
        page.close()
    front, _ = _open(browser, f"{server}/book/intro.html")  # index.html only redirects here
    try:
        front.screenshot(path=str(SHOTS / "front.png"), full_page=True)
    finally:
        front.close()
    assert (SHOTS / "front.png").stat().st_size > 10_000
