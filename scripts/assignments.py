"""Course assignments from the chapters' "Exercises" sections, with Otter-Grader.

    python scripts/assignments.py build [01 03 ...]          # make assignments
    python scripts/assignments.py grade 03 submission.ipynb  # make grade NB=03 SUBMISSION=...
    python scripts/assignments.py list                       # exercises found per chapter

The exercise text lives in ONE place: the end of each chapter source ``notebooks/<stem>.md``,
after the heading ``## Exercises``. There, in the MyST markdown the book renders with
``sphinx-exercise``:

* a code cell tagged ``exercise-setup`` holds the imports the exercises need;
* each exercise is a ``:::{exercise}`` block with a ``:label:``;
* a coding exercise has its solution in code cells tagged ``solution`` (between the gated
  ``{solution-start}`` / ``{solution-end}`` directives) followed by check cells tagged ``test``
  (shown to students) or ``test-hidden`` (only in the autograder); every check is worth 1 point;
* a written exercise has no test cells; its answer is a ``:::{solution}`` block (1 point, graded
  by hand).

``build`` turns each chapter's section into an Otter Assign master notebook (the tool's raw-cell
format: ``# BEGIN QUESTION`` ... ``# END QUESTION``) and runs ``otter assign``, which executes the
solutions against every test and writes:

    _build/assignments/<stem>/student/<stem>.ipynb       hand this folder out (public tests in tests/)
    _build/assignments/<stem>/instructor/<stem>.ipynb    the master notebook (solutions + all tests)
    _build/assignments/<stem>/instructor/autograder/     solutions notebook, all tests, autograder zip

In the student notebook every solution function keeps its signature and docstring and its body
becomes ``raise NotImplementedError`` (Otter's solution and prompt markers, added by this
script), written answers become a placeholder, outputs are cleared and hidden tests are absent.

``grade`` runs ``otter run`` (Otter's local grader: no Docker, no network) with the chapter's
autograder zip on one submission, prints a score per exercise and writes ``<name>.scores.json``
and ``<name>.scores.csv`` next to Otter's ``results.json`` in ``_build/grades/<stem>/<name>/``
(``<name>`` is the submission's file name, prefixed by its folder's name when the file kept the
handed-out name ``<stem>.ipynb``).

Why Otter-Grader 7 and not nbgrader 0.9: Otter's master-notebook format maps one to one onto the
book's exercise/solution/test cells, ``otter assign`` checks the solutions pass their own tests
when it builds, and ``otter run`` grades a notebook locally with a single command and file. It
adds about 20 small packages to the lock; nbgrader adds about 45 (a Jupyter server, JupyterLab,
a gradebook database with alembic and a course-directory layout) that a book does not need.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks"
OUT = ROOT / "_build" / "assignments"
GRADES = ROOT / "_build" / "grades"

EXERCISES_HEADING = re.compile(r"^##\s+Exercises\s*$", re.MULTILINE)
EXERCISE_RE = re.compile(
    r"^:::\{exercise\}\s*(?P<title>.*?)\s*\n(?P<body>.*?)^:::\s*$", re.MULTILINE | re.DOTALL
)
SOLUTION_RE = re.compile(
    r"^:::\{solution\}\s*(?P<label>\S+)\s*\n(?P<body>.*?)^:::\s*$", re.MULTILINE | re.DOTALL
)
OPTION_RE = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")
LABEL_LINE_RE = re.compile(r"^\([\w-]+\)=\s*$", re.MULTILINE)
ROLE_RE = re.compile(r"\{[\w:-]+\}`([^`<]*?)(?:\s*<([^`>]+)>)?`")
HIDDEN_MARKER = "# HIDDEN"


# ---------------------------------------------------------------- parsing the chapter sources


@dataclass
class Exercise:
    label: str
    title: str
    prompt: str  # markdown, directive removed
    solution_code: list[str] = field(default_factory=list)
    solution_text: str = ""
    tests: list[tuple[str, bool]] = field(default_factory=list)  # (source, hidden)

    @property
    def autograded(self) -> bool:
        return bool(self.tests)

    @property
    def points(self) -> int:
        return len(self.tests) if self.tests else 1


@dataclass
class Chapter:
    stem: str
    title: str
    intro: str
    setup: str
    exercises: list[Exercise]
    number: int  # the chapter's number in the book, that of its file: 07_dogfish is chapter 7

    def exercise_number(self, i: int) -> str:
        """'7.2' for the i-th (from 1) exercise of this chapter, as the rendered book numbers it."""
        return f"{self.number}.{i}"


def chapter_number(stem: str) -> int:
    """A chapter's number: that of its file (``07`` for ``07_dogfish``), which is also its number
    in the rendered book, where every file is a top-level chapter of _toc.yml's numbered part."""
    return int(stem.split("_", 1)[0])


def toc_numbering() -> dict[str, int]:
    """stem -> the chapter number the rendered book gives it: the position among the numbered
    top-level chapters of _toc.yml (sphinx-exercise numbers exercises per such chapter)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    numbered = [
        entry["file"]
        for part in toc.get("parts", [])
        if part.get("numbered")
        for entry in part.get("chapters", [])
    ]
    return {Path(f).name: n for n, f in enumerate(numbered, start=1)}


def chapters() -> list[str]:
    """Stems of every chapter source that has an Exercises section, in order."""
    return sorted(p.stem for p in SOURCES.glob("[0-9][0-9]_*.md"))


def resolve(names: list[str]) -> list[str]:
    if not names or names == ["all"]:
        return chapters()
    out = []
    for name in names:
        hits = [c for c in chapters() if c == name or c.split("_", 1)[0] == name.zfill(2)]
        if len(hits) != 1:
            raise SystemExit(f"no unique chapter {name!r}; chapters are: {', '.join(chapters())}")
        out += hits
    return out


def _directive_body(text: str) -> tuple[dict[str, str], str]:
    """Split a directive body into its leading ``:key: value`` options and the content."""
    lines = text.split("\n")
    opts: dict[str, str] = {}
    while lines and (m := OPTION_RE.match(lines[0].strip())):
        opts[m["key"]] = m["value"].strip()
        lines.pop(0)
    return opts, "\n".join(lines).strip()


def to_jupyter_markdown(text: str, names: dict[str, str] | None = None) -> str:
    """MyST-only syntax made readable in a plain Jupyter notebook: labels dropped, references to
    this chapter's exercises written as "Exercise 3.1", other roles unwrapped."""
    names = names or {}

    def role(m: re.Match) -> str:
        target = (m[2] or m[1]).strip()
        if target in names:
            return names[target]
        kind = {"fig": "figure", "tab": "table"}.get(target.split("-", 1)[0])
        return f"the chapter's {kind} `{target}`" if kind else f"`{m[1].strip() or m[2]}`"

    return ROLE_RE.sub(role, LABEL_LINE_RE.sub("", text)).strip()


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def parse(stem: str) -> Chapter:
    """The Exercises section of ``notebooks/<stem>.md``, as exercises with solutions and tests."""
    nb = jupytext.read(SOURCES / f"{stem}.md")
    title = next(
        (
            m[1]
            for c in nb.cells
            if c.cell_type == "markdown"
            for m in [re.search(r"^#\s+(.+)$", c.source, re.MULTILINE)]
            if m
        ),
        stem,
    )
    start = next(
        (
            i
            for i, c in enumerate(nb.cells)
            if c.cell_type == "markdown" and EXERCISES_HEADING.search(c.source)
        ),
        None,
    )
    if start is None:
        return Chapter(stem, title, "", "", [], chapter_number(stem))
    head = nb.cells[start].source
    intro = EXERCISES_HEADING.split(head, 1)[1]  # MyST until the exercises are numbered
    setup, exercises = "", []
    for cell in nb.cells[start + 1 :]:
        tags = _tags(cell)
        if cell.cell_type == "code":
            if "exercise-setup" in tags:
                setup += cell.source.strip() + "\n"
            elif "solution" in tags:
                _current(exercises, stem).solution_code.append(cell.source.strip())
            elif "test" in tags or "test-hidden" in tags:
                _current(exercises, stem).tests.append((cell.source.strip(), "test-hidden" in tags))
            else:
                raise ValueError(
                    f"{stem}: code cell in Exercises without a tag "
                    f"(exercise-setup, solution, test, test-hidden):\n{cell.source}"
                )
            continue
        if cell.cell_type != "markdown":
            continue
        # exercises and solutions in the order they appear (one cell may hold several of each)
        blocks = [(m.start(), "exercise", m) for m in EXERCISE_RE.finditer(cell.source)]
        blocks += [(m.start(), "solution", m) for m in SOLUTION_RE.finditer(cell.source)]
        for _, kind, m in sorted(blocks, key=lambda b: b[0]):
            if kind == "exercise":
                opts, body = _directive_body(m["body"])
                if "label" not in opts:
                    raise ValueError(f"{stem}: exercise {m['title']!r} has no :label:")
                exercises.append(Exercise(opts["label"], m["title"], body))
                continue
            ex = _current(exercises, stem)
            if m["label"] != ex.label:
                raise ValueError(f"{stem}: solution for {m['label']} follows exercise {ex.label}")
            ex.solution_text = _directive_body(m["body"])[1]
    number = chapter_number(stem)
    names = {e.label: f"Exercise {number}.{i}" for i, e in enumerate(exercises, start=1)}
    for e in exercises:
        e.prompt = to_jupyter_markdown(e.prompt, names)
        e.solution_text = to_jupyter_markdown(e.solution_text, names)
    return Chapter(stem, title, to_jupyter_markdown(intro, names), setup, exercises, number)


def _current(exercises: list[Exercise], stem: str) -> Exercise:
    if not exercises:
        raise ValueError(f"{stem}: a solution or test cell comes before any exercise")
    return exercises[-1]


# ---------------------------------------------------------------- the Otter master notebook


def mark_solution(code: str, message: str) -> str:
    """Otter's solution markers around a solution cell, so that ``otter assign`` writes the stub.

    Every top-level function keeps its signature and docstring; its body is wrapped in
    ``# BEGIN SOLUTION NO PROMPT`` / ``# END SOLUTION`` followed by a prompt block
    (``\"\"\" # BEGIN PROMPT`` ... ``\"\"\" # END PROMPT``) holding ``raise NotImplementedError``: the
    student sees the raise, the solution notebook an unreachable string. Any other top-level
    statement is removed from the student version.
    """
    tree = ast.parse(code)
    lines = code.split("\n")
    out: list[str] = []
    pos = 0  # lines[:pos] are already copied
    for node in tree.body:
        first = (node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno) - 1
        last = node.end_lineno
        out += lines[pos:first]
        if isinstance(node, ast.FunctionDef):
            body0 = node.body[0]
            doc = (
                isinstance(body0, ast.Expr)
                and isinstance(body0.value, ast.Constant)
                and isinstance(body0.value.value, str)
            )
            head_end = body0.end_lineno if doc else body0.lineno - 1
            first_statement = node.body[1] if doc and len(node.body) > 1 else body0
            indent = re.match(r"\s*", lines[first_statement.lineno - 1])[0]
            out += lines[first:head_end]
            out.append(f"{indent}# BEGIN SOLUTION NO PROMPT")
            out += lines[head_end:last]
            out += [
                f"{indent}# END SOLUTION",
                f'{indent}""" # BEGIN PROMPT',
                f"{indent}raise NotImplementedError({message!r})",
                f'{indent}""" # END PROMPT',
            ]
        else:
            out += ["# BEGIN SOLUTION NO PROMPT", *lines[first:last], "# END SOLUTION"]
        pos = last
    out += lines[pos:]
    return "\n".join(out)


def _raw(text: str):
    return nbformat.v4.new_raw_cell(text)


def master_notebook(ch: Chapter, check_solutions: bool = True) -> nbformat.NotebookNode:
    """Otter Assign's master notebook for one chapter (the raw-cell format of Otter 4+)."""
    cells = [
        _raw(
            textwrap.dedent(f"""\
            # ASSIGNMENT CONFIG
            name: {ch.stem}
            init_cell: true
            check_all_cell: false
            export_cell: false
            run_tests: {str(check_solutions).lower()}
            solutions_pdf: false
            generate: true
            show_question_points: true
            """)
        ),
        nbformat.v4.new_markdown_cell(
            f"# Exercises of chapter {ch.number}: {ch.title}\n\n{ch.intro}\n\n"
            "Run the cells from the top. Replace each `raise NotImplementedError(...)` by your code, "
            "run the check cell below it, and write the written answers in the cells that say so. "
            "Hidden tests are run when your notebook is graded."
        ),
        nbformat.v4.new_code_cell(ch.setup.strip()),
    ]
    for i, ex in enumerate(ch.exercises, start=1):
        name = f"ex{i}"
        kind = "autograded" if ex.autograded else "written answer, graded by hand"
        config = f"# BEGIN QUESTION\nname: {name}\npoints: {ex.points}\n"
        if not ex.autograded:
            config += "manual: true\n"
        cells.append(_raw(config))
        cells.append(
            nbformat.v4.new_markdown_cell(
                f"## Exercise {ch.exercise_number(i)}: {ex.title}\n\n*({kind}, {ex.points} point"
                f"{'s' if ex.points > 1 else ''}; `{ex.label}` in the book)*\n\n{ex.prompt}"
            )
        )
        if ex.autograded:
            code = "\n\n\n".join(ex.solution_code)
            marked = mark_solution(code, f"Exercise {ch.exercise_number(i)}: replace this line by your code")
            cells += [
                _raw("# BEGIN SOLUTION"),
                nbformat.v4.new_code_cell(marked),
                _raw("# END SOLUTION"),
                _raw("# BEGIN TESTS"),
            ]
            for src, hidden in ex.tests:
                cells.append(nbformat.v4.new_code_cell(f"{HIDDEN_MARKER}\n{src}" if hidden else src))
            cells.append(_raw("# END TESTS"))
        else:
            cells += [
                _raw("# BEGIN SOLUTION"),
                nbformat.v4.new_markdown_cell(f"**Solution.** {ex.solution_text}"),
                _raw("# END SOLUTION"),
            ]
        cells.append(_raw("# END QUESTION"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _otter() -> str:
    exe = Path(sys.executable).with_name("otter")
    return str(exe) if exe.exists() else "otter"


def _clear_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)


def build(stem: str, root: Path = OUT, check_solutions: bool = True) -> Path:
    """Student and instructor versions of one chapter under ``root/<stem>``. With
    ``check_solutions`` (the default) ``otter assign`` first runs the solutions against every test
    and fails if one does not pass."""
    ch = parse(stem)
    if not ch.exercises:
        raise SystemExit(f"{stem}: no Exercises section in notebooks/{stem}.md")
    target = Path(root) / stem
    shutil.rmtree(target, ignore_errors=True)
    instructor = target / "instructor"
    instructor.mkdir(parents=True)
    master = instructor / f"{stem}.ipynb"
    nbformat.write(master_notebook(ch, check_solutions), master)
    start = time.perf_counter()
    proc = subprocess.run(
        [_otter(), "assign", "-v", master.name, "dist"], cwd=instructor, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"[{stem}] otter assign failed:\n{proc.stdout}\n{proc.stderr}")
    (instructor / "dist" / "autograder").rename(instructor / "autograder")
    (instructor / "dist" / "student").rename(target / "student")
    (instructor / "dist").rmdir()
    _clear_outputs(target / "student" / f"{stem}.ipynb")
    auto = autograder_zip(stem, root)
    print(
        f"[{stem}] {len(ch.exercises)} exercises "
        f"({sum(e.autograded for e in ch.exercises)} autograded) in {time.perf_counter() - start:.1f} s\n"
        f"  student:    {_rel(target / 'student')}/\n"
        f"  instructor: {_rel(instructor)}/  (autograder zip: {_rel(auto)})",
        flush=True,
    )
    return target


def _rel(path: Path) -> Path:
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def autograder_zip(stem: str, root: Path = OUT) -> Path:
    zips = sorted((Path(root) / stem / "instructor" / "autograder").glob("*.zip"))
    if not zips:
        raise SystemExit(f"no autograder for {stem}: run `make assignments` first")
    return zips[-1]


# ---------------------------------------------------------------- grading


def grade(stem: str, submission: Path, out: Path | None = None, root: Path = OUT) -> dict:
    """Grade one submission with ``otter run`` (local, no Docker). Returns the score table."""
    ch = parse(stem)
    auto = autograder_zip(stem, root)
    submission = Path(submission).resolve()
    # students often keep the handed-out name: then the folder the file is in tells them apart
    name = submission.stem if submission.stem != stem else f"{submission.parent.name}-{submission.stem}"
    out = (out or GRADES / stem / name).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = subprocess.run(
        [_otter(), "run", "-a", str(auto), "-o", str(out), str(submission)],
        cwd=out,
        capture_output=True,
        text=True,
    )
    results = out / "results.json"
    if not results.exists():
        raise SystemExit(f"otter run failed on {submission}:\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(results.read_text())
    # Otter writes Gradescope's format: one entry per question with score and max_score
    by_name = {t["name"]: t for t in raw.get("tests", []) if "score" in t}
    rows = []
    for i, ex in enumerate(ch.exercises, start=1):
        r = by_name.get(f"ex{i}")
        if ex.autograded:
            score = float(r["score"]) if r else 0.0
            possible = float(r["max_score"]) if r else float(ex.points)
            status = "autograded"
        else:
            score, possible, status = None, float(ex.points), "manual"
        rows.append(
            {
                "exercise": ch.exercise_number(i),
                "name": f"ex{i}",
                "label": ex.label,
                "title": ex.title,
                "score": score,
                "possible": possible,
                "grading": status,
            }
        )
    auto_rows = [r for r in rows if r["score"] is not None]
    summary = {
        "chapter": stem,
        "submission": str(submission),
        "autograded_score": sum(r["score"] for r in auto_rows),
        "autograded_possible": sum(r["possible"] for r in auto_rows),
        "exercises": rows,
    }
    (out / f"{name}.scores.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / f"{name}.scores.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary["out"] = out
    return summary


def print_scores(summary: dict) -> None:
    print(f"{summary['chapter']}: {summary['submission']}")
    for r in summary["exercises"]:
        score = "graded by hand" if r["score"] is None else f"{r['score']:g} / {r['possible']:g}"
        print(f"  Exercise {r['exercise']:<5} {r['title'][:48]:<48} {score}")
    print(f"  autograded total: {summary['autograded_score']:g} / {summary['autograded_possible']:g}")
    print(f"  scores written to {_rel(summary['out'])}/")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="generate student and instructor versions")
    b.add_argument("chapters", nargs="*", help="chapter numbers or stems (default: every chapter)")
    g = sub.add_parser("grade", help="grade one submission")
    g.add_argument("chapter")
    g.add_argument("submission", type=Path)
    g.add_argument("--out", type=Path, default=None)
    sub.add_parser("list", help="list the exercises of every chapter")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        start = time.perf_counter()
        for stem in resolve(args.chapters):
            if not args.chapters and not parse(stem).exercises:
                print(f"[{stem}] skipped: no Exercises section in notebooks/{stem}.md", flush=True)
                continue
            build(stem)
        print(f"assignments written to {OUT.relative_to(ROOT)}/ in {time.perf_counter() - start:.1f} s")
    elif args.cmd == "grade":
        (stem,) = resolve([args.chapter])
        print_scores(grade(stem, args.submission, args.out))
    else:
        for stem in chapters():
            ch = parse(stem)
            print(f"{stem}: {len(ch.exercises)} exercises")
            for ex in ch.exercises:
                print(f"  {ex.label:<28} {'autograded' if ex.autograded else 'written':<11} {ex.title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
