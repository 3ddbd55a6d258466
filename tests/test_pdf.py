"""The PDF of the book (`make pdf`): jupyter-book's LaTeX builder and XeLaTeX on the front page,
the preface, chapter 1 and the bibliography, built into a temporary folder.

Checked: the PDF is written and has pages, XeLaTeX reports no error and no undefined reference
or citation, every figure of chapter 1 is in it, and Sphinx warns about nothing but links to the
pages this shortened book leaves out. Needs the executed chapter 1 (`make chapters` or `make
book`) and TeX Live (`bash scripts/system_packages.sh pdf`); without XeLaTeX the test is skipped,
except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "chapters" / "01_smoothing.ipynb"
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")

pytestmark = pytest.mark.book

# The book with one chapter: the preface stays because the front page links to it, the
# bibliography because the chapter cites.
TOC = {
    "format": "jb-book",
    "root": "book/intro",
    "parts": [
        {"caption": "Front matter", "chapters": [{"file": "book/preface"}]},
        {"caption": "Chapters", "numbered": True, "chapters": [{"file": "book/chapters/01_smoothing"}]},
        {"caption": "Back matter", "chapters": [{"file": "book/bibliography"}]},
    ],
}
# Links to pages outside the shortened book; any other Sphinx warning fails the test.
ELSEWHERE = re.compile(r"undefined label: '[^']+'|unknown document: '[^']+'")


def _figures(notebook: Path) -> int:
    """The PNG figures chapter 1 shows (glued by name, so stored as papermill records)."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum(
        any(kind.endswith("image/png") for kind in output.get("data", {}))
        for cell in cells
        for output in cell.get("outputs", [])
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[str, Path]:
    if shutil.which("xelatex") is None:
        if os.environ.get("CI"):
            pytest.fail("XeLaTeX is missing under CI: .ci/run installs it (scripts/system_packages.sh pdf)")
        pytest.skip("XeLaTeX is not installed (bash scripts/system_packages.sh pdf installs TeX Live)")
    assert CHAPTER.exists(), "chapter 1 is not executed: run `make chapters` (or `make book`) first"
    out = tmp_path_factory.mktemp("pdf")
    toc = out / "_toc.yml"
    toc.write_text(yaml.safe_dump(TOC, sort_keys=False))
    run = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(ROOT), "--builder", "pdflatex", "-n"]
        + ["--toc", str(toc), "--path-output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "LATEXOPTS": "-interaction=nonstopmode -halt-on-error"},
        timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    return output, out / "_build" / "latex"


def test_the_pdf_has_the_pages_of_the_chapter(built):
    _, latex = built
    pdf = latex / "book.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    log = (latex / "book.log").read_text(errors="replace")
    pages = re.search(r"Output written on book\.pdf \((\d+) pages?", log)
    assert pages, "XeLaTeX wrote no PDF"
    assert int(pages.group(1)) >= 10, pages.group(0)  # title, contents, preface, chapter 1, references


def test_latex_reports_no_error_and_no_undefined_reference(built):
    _, latex = built
    log = (latex / "book.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert not errors, errors
    # one warning may be wrapped over several lines of the log; "undefined" is on its last
    undefined = re.findall(r"LaTeX Warning: (?:Reference|Citation|Hyper reference) `[^']*'", log)
    assert not undefined, undefined
    assert "There were undefined references" not in log
    assert "Rerun to get cross-references right" not in log


def test_every_figure_and_the_maths_are_in_the_pdf(built):
    _, latex = built
    tex = (latex / "book.tex").read_text()
    figures = _figures(CHAPTER)
    assert figures > 0
    included = re.findall(r"\\sphinxincludegraphics(?:\[[^]]*\])?\{\{([^}]+)\}\.png\}", tex)
    assert len(set(included)) >= figures
    log = (latex / "book.log").read_text(errors="replace").replace("\n", "")  # unwrap its lines
    assert all(f"<{name}.png>" in log for name in set(included))  # read by XeLaTeX, not only named
    # display maths with the chapter's own tags, (1) and (L1), outside `split`, where amsmath
    # sets them at the margin (inside, it stops with "\tag not allowed here")
    assert r"\tag{1}" in tex and r"\tag{L1}" in tex
    splits = re.findall(r"\\begin\{split\}(.*?)\\end\{split\}", tex, flags=re.S)
    assert splits and not [body for body in splits if r"\tag" in body]


def test_sphinx_warns_only_about_pages_left_out(built):
    output, _ = built
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert all(ELSEWHERE.search(line) for line in warnings), warnings
