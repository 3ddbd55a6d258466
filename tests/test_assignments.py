"""Course assignments (scripts/assignments.py, Otter-Grader): what an instructor relies on.

* every chapter of _toc.yml has 2-4 exercises, at least one autograded and one written
  (discovered from notebooks/<stem>.md, so chapters added later are checked too);
* the student version holds no solution code, no written solution and no hidden test, and
  no outputs; it runs from top to bottom (the stubs raise only when called);
* grading (``otter run``, local) gives the instructor solutions full marks, the untouched student
  notebook zero on every autograded exercise, and a wrong answer loses that exercise's points.

The assignments are built once into a temporary folder (about 10 s per chapter, the solutions
checked against every test by ``otter assign``); each grading runs the notebook (about 10 s).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    """A module of scripts/ (command-line scripts, not part of the installed library)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


assignments = _load_script("assignments")


def _toc_chapters() -> list[str]:
    """Every executed chapter in _toc.yml, at any depth (chapters and their sections)."""

    def walk(entries):
        for e in entries or []:
            yield e.get("file", "")
            yield from walk(e.get("sections"))

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [f for part in toc["parts"] for f in walk(part.get("chapters"))]
    return [f.rsplit("/", 1)[1] for f in files if f.startswith("book/chapters/")]


CHAPTERS = _toc_chapters()


def test_toc_lists_chapters_and_the_teaching_page():
    assert len(CHAPTERS) >= 6
    assert set(CHAPTERS) == set(assignments.chapters()), "every chapter source is in _toc.yml, and only those"
    assert "book/teaching" in (ROOT / "_toc.yml").read_text()


def test_file_number_is_the_chapter_number_in_the_book():
    """07_dogfish is chapter 7 of the rendered book (a top-level chapter, not a section), so
    `make chapter NB=07`, the page's number and its exercises' numbers (7.1, 7.2, ...) agree."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    numbered = [e["file"] for part in toc["parts"] if part.get("numbered") for e in part["chapters"]]
    numbering = {Path(f).name: n for n, f in enumerate(numbered, start=1)}  # as Sphinx numbers them
    assert numbering == {stem: assignments.Chapter(stem, "").number for stem in assignments.chapters()}
    ch = assignments.parse("07_dogfish")
    assert ch.number == 7 and ch.exercise_number(1) == "7.1"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_chapter_has_graded_exercises(stem):
    ch = assignments.parse(stem)
    assert 2 <= len(ch.exercises) <= 6, f"{stem}: {len(ch.exercises)} exercises, want 2 to 6"
    assert any(e.autograded for e in ch.exercises), f"{stem}: no autograded exercise"
    assert any(not e.autograded for e in ch.exercises), f"{stem}: no written (conceptual) exercise"
    assert ch.setup.strip(), f"{stem}: no cell tagged exercise-setup"
    for e in ch.exercises:
        assert e.label.startswith("ex-"), e.label
        if e.autograded:
            assert e.solution_code, f"{stem}/{e.label}: tests but no solution cell"
            assert any(not hidden for _, hidden in e.tests), f"{stem}/{e.label}: no public test"
            for code in e.solution_code:  # the stub keeps only function definitions
                tree = ast.parse(code)
                assert any(isinstance(n, ast.FunctionDef) for n in tree.body), e.label
        else:
            assert e.solution_text, f"{stem}/{e.label}: written exercise without a solution block"
            assert not e.solution_code, f"{stem}/{e.label}: solution code but no test"
    labels = [e.label for e in ch.exercises]
    assert len(set(labels)) == len(labels)


def test_parser_rejects_an_untagged_code_cell(tmp_path, monkeypatch):
    src = (ROOT / "notebooks" / "01_smoothing.md").read_text()
    broken = src + "\n```{code-cell} ipython3\nx = 1\n```\n"
    (tmp_path / "01_smoothing.md").write_text(broken)
    monkeypatch.setattr(assignments, "SOURCES", tmp_path)
    with pytest.raises(ValueError, match="without a tag"):
        assignments.parse("01_smoothing")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # traitlets, imported by otter
def test_mark_solution_leaves_a_stub_that_raises():
    code = 'def f(x):\n    """Doc."""\n    y = x + 1\n    return y\n\n\nHELPER = 3\n'
    marked = assignments.mark_solution(code, "msg")
    from otter.assign.solutions import replace_solutions

    student = "\n".join(replace_solutions(marked.split("\n"), "python"))
    assert "y = x + 1" not in student and "HELPER" not in student
    ns: dict = {}
    exec(student, ns)
    with pytest.raises(NotImplementedError, match="msg"):
        ns["f"](1)
    solved: dict = {}
    exec(marked, solved)
    assert solved["f"](1) == 2 and solved["HELPER"] == 3


# ---------------------------------------------------------------- the built assignments


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("assignments")
    for stem in CHAPTERS:  # the gradings below check the solutions: no need for Otter to run them too
        assignments.build(stem, root, check_solutions=False)
    return root


def _student_nb(root: Path, stem: str) -> Path:
    return root / stem / "student" / f"{stem}.ipynb"


def _solution_nb(root: Path, stem: str) -> Path:
    return root / stem / "instructor" / "autograder" / f"{stem}.ipynb"


def _distinctive(code: str) -> list[str]:
    """Lines of solution bodies or tests long enough to identify them (not signatures/docstrings)."""
    out = []
    tree = ast.parse(code)
    lines = code.split("\n")
    for node in tree.body:
        body = node.body if isinstance(node, ast.FunctionDef) else [node]
        if (
            isinstance(node, ast.FunctionDef)
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
        ):
            body = body[1:]
        for stmt in body:
            for ln in lines[stmt.lineno - 1 : stmt.end_lineno]:
                s = ln.strip()
                if len(s) >= 14 and not s.startswith("#"):
                    out.append(s)
    return out


@pytest.mark.parametrize("stem", CHAPTERS)
def test_student_version_has_no_solutions_no_hidden_tests_no_outputs(built, stem):
    ch = assignments.parse(stem)
    path = _student_nb(built, stem)
    text = path.read_text()  # sources and metadata (where Otter keeps the public tests)
    nb = nbformat.read(path, as_version=4)
    visible = "\n".join(ln.strip() for c in nb.cells for ln in c.source.split("\n"))
    public = {
        ln.strip() for e in ch.exercises for src, hidden in e.tests if not hidden for ln in src.split("\n")
    } | {ln.strip() for ln in ch.setup.split("\n")}
    for e in ch.exercises:
        for code in e.solution_code:
            for line in _distinctive(code):
                if line not in public:
                    assert line not in visible, f"{stem}/{e.label}: solution line in student version: {line}"
        for src, hidden in e.tests:
            if hidden:
                for line in _distinctive(src):
                    if line not in public:
                        assert json.dumps(line)[1:-1] not in text and line not in visible, (
                            f"{stem}/{e.label}: hidden test line in student version: {line}"
                        )
        if e.solution_text:
            first = re.sub(r"\s+", " ", e.solution_text)[:60]
            assert first not in re.sub(r"\s+", " ", visible), f"{stem}/{e.label}: written solution leaked"
    n_auto = sum(e.autograded for e in ch.exercises)
    assert visible.count("raise NotImplementedError") >= n_auto
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
    tests = nb.metadata["otter"]["tests"]
    assert all(not case["hidden"] for t in tests.values() for s in t["suites"] for case in s["cases"])
    # the instructor's autograder keeps the hidden tests
    sol = nbformat.read(_solution_nb(built, stem), as_version=4)
    hidden_cases = [
        c
        for t in sol.metadata["otter"]["tests"].values()
        for s in t["suites"]
        for c in s["cases"]
        if c["hidden"]
    ]
    assert len(hidden_cases) == sum(h for e in ch.exercises for _, h in e.tests)
    assert assignments.autograder_zip(stem, built).stat().st_size > 0


def _execute(path: Path) -> nbformat.NotebookNode | Exception:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()  # raises on any error
    except Exception as e:  # reported by the test
        return e
    return nb


@pytest.mark.parametrize("stem", CHAPTERS)
def test_student_notebook_runs_top_to_bottom(grades, stem):
    nb = grades[(stem, "executed")]
    assert not isinstance(nb, Exception), f"{stem}: the student notebook stops with an error:\n{nb}"
    checks = [c for c in nb.cells if c.cell_type == "code" and "grader.check" in c.source]
    assert checks and all(c.outputs for c in checks)


SABOTAGE = """\
import numpy as _np
def _off(x):
    if isinstance(x, tuple):
        return tuple(_off(v) for v in x)
    if isinstance(x, (int, _np.integer)) and not isinstance(x, bool):
        return int(x) + 1
    return _np.asarray(x, dtype=float) * 1.01 + 0.01
def _wrong(f):
    return lambda *a, **k: _off(f(*a, **k))
"""


def _wrong_answer(built: Path, stem: str, tmp: Path) -> Path:
    """The instructor solutions with every autograded exercise's functions made slightly wrong:
    every returned number moved by 1% + 0.01, integers by 1 (right after each solution cell)."""
    nb = nbformat.read(_solution_nb(built, stem), as_version=4)
    for ex in assignments.parse(stem).exercises:
        names = [
            n.name
            for code in ex.solution_code
            for n in ast.parse(code).body
            if isinstance(n, ast.FunctionDef)
        ]
        if not names:
            continue
        idx = next(
            i for i, c in enumerate(nb.cells) if c.cell_type == "code" and f"def {names[0]}(" in c.source
        )
        sabotage = SABOTAGE + "".join(f"{n} = _wrong({n})\n" for n in names)
        nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(sabotage))
    out = tmp / f"{stem}-wrong.ipynb"
    nbformat.write(nb, out)
    return out


@pytest.fixture(scope="module")
def grades(built, tmp_path_factory):
    """Every grading of every chapter and a plain execution of each student notebook, two at a
    time (each runs a notebook in a kernel)."""
    tmp = tmp_path_factory.mktemp("grades")
    jobs = {}
    for stem in CHAPTERS:
        jobs[(stem, "instructor")] = _solution_nb(built, stem)
        jobs[(stem, "student")] = _student_nb(built, stem)
        jobs[(stem, "wrong")] = _wrong_answer(built, stem, tmp)

        jobs[(stem, "executed")] = _student_nb(built, stem)

    def run(item):
        (stem, kind), nb = item
        if kind == "executed":
            return (stem, kind), _execute(nb)
        return (stem, kind), assignments.grade(stem, nb, out=tmp / stem / kind, root=built)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, jobs.items()))


@pytest.mark.parametrize("stem", CHAPTERS)
def test_instructor_solutions_score_full_marks(grades, stem):
    g = grades[(stem, "instructor")]
    auto = [r for r in g["exercises"] if r["grading"] == "autograded"]
    assert auto and all(r["score"] == r["possible"] > 0 for r in auto), auto
    assert g["autograded_score"] == g["autograded_possible"]
    written = [r for r in g["exercises"] if r["grading"] == "manual"]
    assert written and all(r["score"] is None for r in written)
    out = Path(g["out"])
    assert len(list(out.glob("*.scores.json"))) == 1 and len(list(out.glob("*.scores.csv"))) == 1
    scores = json.loads(next(out.glob("*.scores.json")).read_text())
    assert scores["autograded_score"] == g["autograded_score"]


@pytest.mark.parametrize("stem", CHAPTERS)
def test_untouched_student_version_scores_zero(grades, stem):
    auto = [r for r in grades[(stem, "student")]["exercises"] if r["grading"] == "autograded"]
    assert auto and all(r["score"] == 0 for r in auto), auto


@pytest.mark.parametrize("stem", CHAPTERS)
def test_a_wrong_answer_loses_its_points(grades, stem):
    """Every autograded function answers 1% off: each exercise's own checks must notice."""
    for row in grades[(stem, "wrong")]["exercises"]:
        if row["grading"] == "autograded":
            assert row["score"] == 0 < row["possible"], row


# ---------------------------------------------------------------- the rendered book (after `make book`)


@pytest.mark.book
@pytest.mark.parametrize("stem", CHAPTERS)
def test_rendered_chapter_shows_numbered_exercises_with_hidden_solutions(stem):
    page = ROOT / "_build" / "html" / "book" / "chapters" / f"{stem}.html"
    if not page.exists():
        pytest.fail(f"no rendered {page.name}: run `make book PROFILE=ci` first")
    html = page.read_text()
    ch = assignments.parse(stem)
    number = ch.number
    assert html.count('class="exercise admonition"') == len(ch.exercises)
    assert html.count('class="solution dropdown admonition"') == len(ch.exercises)  # behind a toggle
    for k, ex in enumerate(ch.exercises, start=1):
        assert f'id="{ex.label}"' in html, ex.label
        assert f"Exercise {ch.exercise_number(k)}" in html and ch.exercise_number(k).startswith(f"{number}.")
    # the solutions ran in the book build: every solution cell has its code, no cell an error
    assert html.count("tag_solution") >= sum(e.autograded for e in ch.exercises)


@pytest.mark.book
def test_rendered_teaching_page_links_every_exercise():
    page = ROOT / "_build" / "html" / "book" / "teaching.html"
    if not page.exists():
        pytest.fail("no rendered teaching page: run `make book PROFILE=ci` first")
    html = page.read_text()
    for stem in CHAPTERS:
        for ex in assignments.parse(stem).exercises:
            assert f"#{ex.label}" in html, f"teaching page does not link {ex.label}"
