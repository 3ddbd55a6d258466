"""Course assignments from the chapters' "Exercises" sections, with Otter-Grader.

    python scripts/assignments.py build [01 03 ...]          # make assignments [NB="01 03"]
    python scripts/assignments.py grade 03 submission.ipynb  # make grade NB=03 SUBMISSION=...
    python scripts/assignments.py list                       # exercises found per chapter

Each chapter source ``notebooks/<stem>.md`` ends with ``## Exercises``, in the MyST the book
renders with ``sphinx-exercise``: a code cell tagged ``exercise-setup`` (the imports), then each
exercise as a ``:::{exercise}`` block with a ``:label:``, followed either by code cells tagged
``solution`` and checks tagged ``test`` (public) or ``test-hidden`` (autograder only), 1 point
each, or, for a written exercise, by a ``:::{solution}`` block (1 point, graded by hand).

``build`` turns each section into an Otter Assign master notebook and runs ``otter assign``, which
checks the solutions against every test. In ``_build/assignments/<stem>/``, ``student/`` is the
folder to hand out (stubs that raise ``NotImplementedError``, public tests, no outputs) and
``instructor/`` holds the master notebook and ``autograder/`` (solutions, all tests, the zip).
``grade`` runs ``otter run`` (local: no Docker, no network) on one submission and writes
``<name>.scores.json`` and ``<name>.scores.csv`` next to Otter's ``results.json`` in
``_build/grades/<stem>/<name>/``; ``<name>`` is the submission's file name, prefixed by its
folder's name when it kept the handed-out name ``<stem>.ipynb``.
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
import time
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat
from markdown_it import MarkdownIt
from mdit_py_plugins.colon_fence import colon_fence_plugin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_chapter import HIDDEN_TEST, ROOT, SOURCES, chapters, resolve

OUT = ROOT / "_build" / "assignments"
GRADES = ROOT / "_build" / "grades"

HEADING = re.compile(r"^##\s+Exercises\s*$", re.MULTILINE)
OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")
ROLE = re.compile(r"\{[\w:-]+\}`([^`<]*?)(?:\s*<([^`>]+)>)?`")
MYST = MarkdownIt("commonmark").use(colon_fence_plugin)  # ::: directives, as MyST parses them


@dataclass
class Exercise:
    label: str
    title: str
    prompt: str  # markdown, directive removed
    solution_code: list[str] = field(default_factory=list)
    solution_text: str = ""
    tests: list[tuple[str, bool]] = field(default_factory=list)  # (source, hidden)

    autograded = property(lambda self: bool(self.tests))
    points = property(lambda self: len(self.tests) or 1)  # 1 a check; 1 for a written answer


@dataclass
class Chapter:
    stem: str
    title: str
    intro: str = ""
    setup: str = ""
    exercises: list[Exercise] = field(default_factory=list)

    @property
    def number(self) -> int:  # that of its file (7 for 07_dogfish), as in the rendered book
        return int(self.stem.split("_", 1)[0])

    def exercise_number(self, i: int) -> str:  # "7.2" for its i-th exercise, as in the book
        return f"{self.number}.{i}"

    def last(self) -> Exercise:
        if not self.exercises:
            raise ValueError(f"{self.stem}: a solution or test cell comes before any exercise")
        return self.exercises[-1]


# ---------------------------------------------------------------- parsing the chapter sources


def _directive(text: str) -> tuple[dict[str, str], str]:
    """A directive's leading ``:key: value`` options and its content."""
    lines = text.split("\n")
    opts = {}
    while lines and (m := OPTION.match(lines[0].strip())):
        opts[m["key"]] = m["value"].strip()
        lines.pop(0)
    return opts, "\n".join(lines).strip()


def to_jupyter_markdown(text: str, names: dict[str, str]) -> str:
    """MyST-only syntax made readable in a plain Jupyter notebook: labels dropped, references to
    this chapter's exercises written as "Exercise 3.1", other roles unwrapped."""

    def role(m: re.Match) -> str:
        target = (m[2] or m[1]).strip()
        if target in names:
            return names[target]
        kind = {"fig": "figure", "tab": "table"}.get(target.split("-", 1)[0])
        return f"the chapter's {kind} `{target}`" if kind else f"`{m[1].strip() or m[2]}`"

    return ROLE.sub(role, re.sub(r"^\([\w-]+\)=\s*$", "", text, flags=re.MULTILINE)).strip()


def parse(stem: str) -> Chapter:
    """The Exercises section of ``notebooks/<stem>.md``: its cells, by type and tag, and the
    exercise and solution directives of its Markdown cells, in document order."""
    cells = jupytext.read(SOURCES / f"{stem}.md").cells
    md = [c.source for c in cells if c.cell_type == "markdown"]
    ch = Chapter(stem, next((m[1] for s in md if (m := re.search(r"^#\s+(.+)$", s, re.M))), stem))
    start = next(
        (i for i, c in enumerate(cells) if c.cell_type == "markdown" and HEADING.search(c.source)), None
    )
    if start is None:
        return ch
    for cell in cells[start + 1 :]:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code":
            if "exercise-setup" in tags:
                ch.setup += cell.source.strip() + "\n"
            elif "solution" in tags:
                ch.last().solution_code.append(cell.source.strip())
            elif "test" in tags or HIDDEN_TEST in tags:
                ch.last().tests.append((cell.source.strip(), HIDDEN_TEST in tags))
            else:
                raise ValueError(
                    f"{stem}: code cell in Exercises without a tag "
                    f"(exercise-setup, solution, test, {HIDDEN_TEST}):\n{cell.source}"
                )
            continue
        markdown = MYST.parse(cell.source) if cell.cell_type == "markdown" else []
        for fence in (token for token in markdown if token.type == "colon_fence"):
            kind, _, arg = fence.info.partition(" ")
            arg, (opts, body) = arg.strip(), _directive(fence.content)
            if kind == "{exercise}":
                if "label" not in opts:
                    raise ValueError(f"{stem}: exercise {arg!r} has no :label:")
                ch.exercises.append(Exercise(opts["label"], arg, body))
            elif kind == "{solution}":
                if arg != ch.last().label:
                    raise ValueError(f"{stem}: solution for {arg} follows exercise {ch.last().label}")
                ch.last().solution_text = body
    names = {e.label: f"Exercise {ch.exercise_number(i)}" for i, e in enumerate(ch.exercises, start=1)}
    ch.intro = to_jupyter_markdown(HEADING.split(cells[start].source, 1)[1], names)
    for e in ch.exercises:
        e.prompt = to_jupyter_markdown(e.prompt, names)
        e.solution_text = to_jupyter_markdown(e.solution_text, names)
    return ch


# ---------------------------------------------------------------- the Otter master notebook


def mark_solution(code: str, message: str) -> str:
    """Otter's solution markers in a solution cell, so that ``otter assign`` writes the stub.

    Every top-level function keeps its signature and docstring; its body goes between
    ``# BEGIN SOLUTION NO PROMPT`` and ``# END SOLUTION``, followed by a prompt block holding
    ``raise NotImplementedError(message)`` (in the solutions, an unreachable string). Any other
    top-level statement is removed from the student version.
    """
    lines, out, pos = code.split("\n"), [], 0  # lines[:pos] are already copied
    for node in ast.parse(code).body:
        first, last = (getattr(node, "decorator_list", None) or [node])[0].lineno - 1, node.end_lineno
        out += lines[pos:first]
        if isinstance(node, ast.FunctionDef):
            body0 = node.body[0]
            head = body0.end_lineno if ast.get_docstring(node) is not None else body0.lineno - 1
            indent = re.match(r"\s*", lines[body0.lineno - 1])[0]
            out += [*lines[first:head], f"{indent}# BEGIN SOLUTION NO PROMPT", *lines[head:last]]
            out += [f"{indent}# END SOLUTION", f'{indent}""" # BEGIN PROMPT']
            out += [f"{indent}raise NotImplementedError({message!r})", f'{indent}""" # END PROMPT']
        else:
            out += ["# BEGIN SOLUTION NO PROMPT", *lines[first:last], "# END SOLUTION"]
        pos = last
    return "\n".join(out + lines[pos:])


def master_notebook(ch: Chapter, check_solutions: bool = True) -> nbformat.NotebookNode:
    """Otter Assign's master notebook for one chapter (the raw-cell format of Otter 4+)."""
    raw, md, code = nbformat.v4.new_raw_cell, nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    config = (
        f"# ASSIGNMENT CONFIG\nname: {ch.stem}\ninit_cell: true\ncheck_all_cell: false\nexport_cell: false\n"
        f"run_tests: {str(check_solutions).lower()}\nsolutions_pdf: false\ngenerate: true\n"
        "show_question_points: true\n"
    )
    cells = [
        raw(config),
        md(
            f"# Exercises of chapter {ch.number}: {ch.title}\n\n{ch.intro}\n\n"
            "Run the cells from the top. Replace each `raise NotImplementedError(...)` by your code, "
            "run the check cell below it, and write the written answers in the cells that say so. "
            "Hidden tests are run when your notebook is graded."
        ),
        code(ch.setup.strip()),
    ]
    for i, ex in enumerate(ch.exercises, start=1):
        number, question = ch.exercise_number(i), f"# BEGIN QUESTION\nname: ex{i}\npoints: {ex.points}\n"
        kind = "autograded" if ex.autograded else "written answer, graded by hand"
        cells += [
            raw(question if ex.autograded else question + "manual: true\n"),
            md(
                f"## Exercise {number}: {ex.title}\n\n*({kind}, {ex.points} point"
                f"{'s' if ex.points > 1 else ''}; `{ex.label}` in the book)*\n\n{ex.prompt}"
            ),
            raw("# BEGIN SOLUTION"),
        ]
        if ex.autograded:
            solution = mark_solution(
                "\n\n\n".join(ex.solution_code), f"Exercise {number}: replace this line by your code"
            )
            cells += [code(solution), raw("# END SOLUTION"), raw("# BEGIN TESTS")]
            cells += [code(f"# HIDDEN\n{src}" if hidden else src) for src, hidden in ex.tests]
            cells.append(raw("# END TESTS"))
        else:
            cells += [md(f"**Solution.** {ex.solution_text}"), raw("# END SOLUTION")]
        cells.append(raw("# END QUESTION"))
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.v4.new_notebook(
        cells=cells, metadata={"kernelspec": kernel, "language_info": {"name": "python"}}
    )


def _otter(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otter", *args], cwd=cwd, capture_output=True, text=True)


def _rel(path: Path) -> Path:
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def build(stem: str, root: Path = OUT, check_solutions: bool = True) -> Path:
    """Student and instructor versions of one chapter under ``root/<stem>``; with
    ``check_solutions``, ``otter assign`` fails unless the solutions pass every test."""
    ch = parse(stem)
    if not ch.exercises:
        raise SystemExit(f"{stem}: no Exercises section in notebooks/{stem}.md")
    target = Path(root) / stem
    instructor = target / "instructor"
    shutil.rmtree(target, ignore_errors=True)
    instructor.mkdir(parents=True)
    nbformat.write(master_notebook(ch, check_solutions), instructor / f"{stem}.ipynb")
    start = time.perf_counter()
    proc = _otter("assign", "-v", f"{stem}.ipynb", "dist", cwd=instructor)
    if proc.returncode != 0:
        raise SystemExit(f"[{stem}] otter assign failed:\n{proc.stdout}\n{proc.stderr}")
    (instructor / "dist" / "autograder").rename(instructor / "autograder")
    (instructor / "dist" / "student").rename(target / "student")
    (instructor / "dist").rmdir()
    print(
        f"[{stem}] {len(ch.exercises)} exercises ({sum(e.autograded for e in ch.exercises)} autograded)"
        f" in {time.perf_counter() - start:.1f} s\n  student:    {_rel(target / 'student')}/\n"
        f"  instructor: {_rel(instructor)}/  (autograder zip: {_rel(autograder_zip(stem, root))})",
        flush=True,
    )
    return target


def autograder_zip(stem: str, root: Path = OUT) -> Path:
    zips = sorted((Path(root) / stem / "instructor" / "autograder").glob("*.zip"))
    if not zips:
        raise SystemExit(f"no autograder for {stem}: run `make assignments` first")
    return zips[-1]


# ---------------------------------------------------------------- grading


def grade(stem: str, submission: Path, out: Path | None = None, root: Path = OUT) -> dict:
    """Grade one submission with ``otter run`` (local, no Docker). Returns the score table."""
    ch, auto = parse(stem), autograder_zip(stem, root)
    submission = Path(submission).resolve()
    name = submission.stem if submission.stem != stem else f"{submission.parent.name}-{submission.stem}"
    out = (out or GRADES / stem / name).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = _otter("run", "-a", str(auto), "-o", str(out), str(submission), cwd=out)
    if not (out / "results.json").exists():
        raise SystemExit(f"otter run failed on {submission}:\n{proc.stdout}\n{proc.stderr}")
    # Gradescope's format: one entry per autograded question, with its score and max_score
    results = json.loads((out / "results.json").read_text()).get("tests", [])
    scores = {t["name"]: t for t in results if "score" in t}
    rows = []
    for i, ex in enumerate(ch.exercises, start=1):
        r = scores.get(f"ex{i}", {"score": 0.0}) if ex.autograded else {}
        row = {"exercise": ch.exercise_number(i), "name": f"ex{i}", "label": ex.label, "title": ex.title}
        row["score"] = float(r["score"]) if r else None
        row["possible"] = float(r.get("max_score", ex.points))
        row["grading"] = "autograded" if r else "manual"
        rows.append(row)
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
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return summary | {"out": out}


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
        for stem in [s for name in args.chapters or ["all"] for s in resolve(name)]:
            if not args.chapters and not parse(stem).exercises:
                print(f"[{stem}] skipped: no Exercises section in notebooks/{stem}.md", flush=True)
                continue
            build(stem)
        print(f"assignments written to {_rel(OUT)}/ in {time.perf_counter() - start:.1f} s")
    elif args.cmd == "grade":
        (stem,) = resolve(args.chapter)
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
