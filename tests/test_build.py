"""Incremental builds: a chapter is executed again exactly when something it depends on changed.

The chapters here are executed by a stand-in for papermill that records which chapters it was
asked to run, on a small book written to a temporary folder (and, for the import analysis, on
a copy of this repository's chapters and library), so no real chapter runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_info  # noqa: E402
import run_chapter as rc  # noqa: E402

ENV = {
    "machine": {
        "processor": "Test CPU",
        "cores": 4,
        "usable_cores": 2,
        "memory_bytes": 8 * 2**30,
        "gpus": [],
        "system": "Linux 6 (x86_64)",
    },
    "versions": {"Python": "3.11.9", "NumPy": "2.0.0"},
}

LIB = {
    "__init__.py": '"""The library."""\n',
    "_checks.py": "def positive(x):\n    return x > 0\n",
    "a.py": "from . import _checks\n\nA = 1\n",
    "b.py": "from .a import A\n\n\ndef f():\n    return A\n",
    "c.py": "C = 3\n",
    "d.py": "def late():\n    from .c import C\n    return C\n",
}
CHAPTERS = {
    "01_one": "from lib import a",
    "02_two": "from lib.b import f",
    "03_three": "import lib.c as c",
    "04_four": "import math\n%matplotlib inline",
    "05_five": "from lib import d",
}


def _chapter(title: str, code: str) -> str:
    return textwrap.dedent("""\
        ---
        jupytext:
          text_representation:
            extension: .md
            format_name: myst
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---

        # {title}

        ```{{code-cell}} ipython3
        :tags: [parameters]

        profile = "ci"
        seed = 0
        ```

        ```{{code-cell}} ipython3
        {code}
        ```
        """).format(title=title, code=code)


@pytest.fixture
def tree(tmp_path) -> rc.Tree:
    (tmp_path / "lib").mkdir()
    for name, text in LIB.items():
        (tmp_path / "lib" / name).write_text(text)
    (tmp_path / "notebooks").mkdir()
    for stem, code in CHAPTERS.items():
        (tmp_path / "notebooks" / f"{stem}.md").write_text(_chapter(f"Chapter {stem}", code))
    profiles = {
        p: {stem: {"seed": 0, "size": 10 if p == "ci" else 1000} for stem in CHAPTERS} for p in ("ci", "full")
    }
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump(profiles))
    (tmp_path / "requirements.txt").write_text("numpy==2.0.0\n")
    return rc.Tree(tmp_path)


class Executor:
    """Stands in for papermill: writes the output notebook, records the chapter, fails on demand."""

    def __init__(self, fail: set[str] = frozenset()):
        self.ran: list[str] = []
        self.fail = set(fail)

    def __call__(self, source: str, target: str, params: dict) -> None:
        stem = Path(target).stem
        self.ran.append(stem)
        nb = nbformat.read(source, as_version=4)
        failing = stem in self.fail
        nb.metadata["papermill"] = {"exception": failing, "parameters": params}
        if failing:
            nb.cells[-1]["outputs"] = [
                nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])
            ]
        nbformat.write(nb, target)
        if failing:
            raise RuntimeError(f"{stem} failed")


def build(tree: rc.Tree, names="all", profile="ci", overrides=None, fail=(), **kw) -> list[str]:
    """Run the build with the stand-in executor; the chapters it executed, in order."""
    executor = Executor(set(fail))
    explicit = names != "all"
    stems = rc.resolve(names, tree)
    outcomes = rc.build(
        stems,
        profile,
        overrides,
        tree=tree,
        executor=executor,
        explicit=explicit,
        environment=lambda: ENV,
        say=lambda s: None,
        **kw,
    )
    rc.report(outcomes, profile, tree, say=lambda s: None)
    build_info.write_page(tree.root)
    assert [o.chapter for o in outcomes if o.status in ("executed", "failed")] == executor.ran
    return executor.ran


def edit(path: Path, extra: str = "\n# edited\n") -> None:
    path.write_text(path.read_text() + extra)


# ---------------------------------------------------------------- what runs again


def test_first_build_executes_everything_and_an_unchanged_tree_executes_nothing(tree):
    assert build(tree) == list(CHAPTERS)
    assert build(tree) == []
    times = json.loads((tree.build / "build-times.json").read_text())
    assert [c["status"] for c in times["chapters"]] == ["skipped"] * len(CHAPTERS)
    assert times["executed"] == 0 and times["skipped"] == len(CHAPTERS)


def test_editing_a_chapter_source_reexecutes_only_that_chapter(tree):
    build(tree)
    edit(tree.sources / "03_three.md", "\nMore prose.\n")
    assert build(tree) == ["03_three"]
    assert build(tree) == []


@pytest.mark.parametrize(
    "module, importers",
    [
        ("a.py", ["01_one", "02_two"]),  # 02 imports it through b
        ("b.py", ["02_two"]),
        ("_checks.py", ["01_one", "02_two"]),  # relative import of a, two levels down for 02
        ("c.py", ["03_three", "05_five"]),  # 05 through an import inside a function of d
        ("__init__.py", ["01_one", "02_two", "03_three", "05_five"]),  # every importer of lib runs it
    ],
)
def test_editing_a_lib_module_reexecutes_exactly_the_chapters_that_import_it(tree, module, importers):
    build(tree)
    edit(tree.lib / module)
    assert build(tree) == importers
    assert build(tree) == []


def test_a_new_lib_module_that_no_chapter_imports_changes_nothing(tree):
    build(tree)
    (tree.lib / "unused.py").write_text("X = 1\n")
    assert build(tree) == []


def test_editing_one_chapters_values_in_profiles_reexecutes_only_that_chapter(tree):
    build(tree)
    data = yaml.safe_load(tree.profiles_file.read_text())
    data["ci"]["02_two"]["size"] = 11
    tree.profiles_file.write_text(yaml.safe_dump(data))
    assert build(tree) == ["02_two"]
    data["full"]["04_four"]["size"] = 999  # another profile's values: nothing built with ci changes
    tree.profiles_file.write_text(yaml.safe_dump(data))
    assert build(tree) == []
    assert build(tree, profile="full") == list(CHAPTERS)  # the profile name is part of the key


def test_editing_the_lock_file_reexecutes_every_chapter(tree):
    build(tree)
    edit(tree.lock, "scipy==1.14.0\n")
    assert build(tree) == list(CHAPTERS)


def test_force_executes_every_chapter(tree):
    build(tree)
    assert build(tree, force=True) == list(CHAPTERS)
    assert build(tree) == []


def test_a_failed_chapter_is_not_up_to_date(tree):
    assert build(tree, fail={"02_two"}) == ["01_one", "02_two"]  # the build stops at the failure
    times = json.loads((tree.build / "build-times.json").read_text())
    assert [c["status"] for c in times["chapters"]] == ["executed", "failed"] + ["not run"] * 3
    nb = nbformat.read(tree.out / "02_two.ipynb", as_version=4)
    assert rc.RECORD not in nb.metadata  # no key stored for the failed run
    assert build(tree) == ["02_two", "03_three", "04_four", "05_five"]
    assert build(tree) == []


def test_a_notebook_that_reports_an_error_is_not_up_to_date_even_with_the_right_key(tree):
    build(tree)
    path = tree.out / "01_one.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.metadata["papermill"]["exception"] = True
    nbformat.write(nb, path)
    assert build(tree) == ["01_one"]


def test_the_executed_notebook_a_reader_downloads_holds_no_hidden_check(tree):
    """Hidden autograder checks run with the chapter, then leave the notebook the book offers
    for download; a failed run keeps them (its notebook is for debugging, not rendering)."""
    for stem in ("01_one", "02_two"):
        path = tree.sources / f"{stem}.md"
        path.write_text(
            path.read_text()
            + textwrap.dedent(f"""
            ```{{code-cell}} ipython3
            :tags: [{rc.HIDDEN_TEST}, remove-cell]

            assert True  # a hidden check
            ```

            ```{{code-cell}} ipython3
            :tags: [test]

            assert True  # a public check
            ```
            """)
        )
    build(tree, fail={"02_two"})

    def tags(stem):
        return [
            c.metadata.get("tags", []) for c in nbformat.read(tree.out / f"{stem}.ipynb", as_version=4).cells
        ]

    assert ["test"] in tags("01_one") and not any(rc.HIDDEN_TEST in t for t in tags("01_one"))
    assert any(rc.HIDDEN_TEST in t for t in tags("02_two"))


def test_a_deleted_or_unreadable_notebook_is_executed_again(tree):
    build(tree)
    (tree.out / "04_four.ipynb").unlink()
    (tree.out / "05_five.ipynb").write_text("{ truncated")
    assert build(tree) == ["04_four", "05_five"]


def test_a_named_chapter_always_executes_and_its_overrides_are_in_the_key(tree):
    build(tree)
    assert build(tree, "01") == ["01_one"]  # up to date, but asked for
    assert build(tree) == []  # same values: its key is current
    assert build(tree, "01", overrides={"size": 5}) == ["01_one"]
    nb = nbformat.read(tree.out / "01_one.ipynb", as_version=4)
    assert nb.metadata[rc.RECORD]["profile"] == "ci+overrides"
    assert build(tree) == ["01_one"]  # the book's values differ from the override
    assert build(tree) == []


def test_dry_run_executes_nothing_and_says_why(tree):
    build(tree)
    edit(tree.lib / "c.py")
    lines: list[str] = []
    outcomes = rc.build(
        rc.chapters(tree),
        "ci",
        tree=tree,
        executor=Executor(),
        dry_run=True,
        environment=lambda: ENV,
        say=lines.append,
    )
    assert [o.chapter for o in outcomes if o.status == "would execute"] == ["03_three", "05_five"]
    assert any("changed: lib/c.py" in line for line in lines)


def test_bad_arguments_are_named(tree):
    with pytest.raises(SystemExit, match="-p"):
        build(tree, overrides={"no_such_value": 1})
    with pytest.raises(SystemExit, match="chapter"):
        rc.resolve("42", tree)
    with pytest.raises(SystemExit, match="--profile"):
        rc.parameters("01_one", "huge", {}, tree)


# ---------------------------------------------------------------- times and the page


def test_progress_lines_estimates_and_the_table(tree, capsys):
    lines: list[str] = []
    rc.build(["01_one"], "ci", tree=tree, executor=Executor(), environment=lambda: ENV, say=lines.append)
    assert "estimated unknown" in lines[0] and "executed in" in lines[1]
    lines.clear()
    rc.build(
        ["01_one", "02_two"],
        "ci",
        tree=tree,
        executor=Executor(),
        force=True,
        environment=lambda: ENV,
        say=lines.append,
    )
    assert "estimated unknown" not in lines[0] and "estimated " in lines[0]  # measured last time
    assert "estimated unknown" in lines[2]  # 02 never ran
    outcomes = rc.build(
        ["01_one", "02_two"], "ci", tree=tree, executor=Executor(), environment=lambda: ENV, say=lines.append
    )
    assert lines[-1].endswith("up to date, skipped")
    rc.report(outcomes, "ci", tree)
    printed = capsys.readouterr().out
    assert "01_one" in printed and "skipped" in printed and "total" in printed
    times = json.loads((tree.build / "build-times.json").read_text())
    assert {c["chapter"]: c["status"] for c in times["chapters"]} == {
        "01_one": "skipped",
        "02_two": "skipped",
    }


def test_the_build_page_describes_the_chapters_even_when_every_chapter_was_skipped(tree):
    build(tree)
    page = tree.root / build_info.PAGE
    page.unlink()
    assert build(tree) == []
    text = page.read_text()
    assert text.startswith("# How this book was built\n")
    assert "**`ci`** profile" in text and "Test CPU" in text and "8.0 GiB" in text and "NumPy" in text
    assert text.count("{doc}`") == len(CHAPTERS) and "**total**" in text
    for word in ("skipped", "up to date", "cache hit", "key"):
        assert word not in text.lower()


def test_the_build_page_gives_the_profile_of_each_chapter_when_they_differ(tree):
    build(tree)
    build(tree, "03", profile="full")
    text = (tree.root / build_info.PAGE).read_text()
    assert "different profiles" in text and "`full`" in text and "| profile |" in text


def test_format_seconds():
    assert build_info.format_seconds(8.26) == "8.3 s"
    assert build_info.format_seconds(125) == "2 min 05 s"
    assert build_info.format_seconds(3 * 3600 + 7 * 60) == "3 h 07 min"
    assert build_info.format_seconds(None) == "unknown"


# ---------------------------------------------------------------- the import analysis


def test_every_import_form_is_found():
    code = textwrap.dedent("""\
        import lib
        import lib.x as x
        from lib import a, b
        from lib.y import thing
        import numpy, os.path
        def later():
            from lib.z import w
    """)
    assert rc.imported_modules(code) == {
        "lib",
        "lib.x",
        "lib.a",
        "lib.b",
        "lib.y",
        "lib.y.thing",
        "lib.z",
        "lib.z.w",
    }
    relative = "from . import _checks\nfrom .data import MNIST\nfrom .. import outside\n"
    assert rc.imported_modules(relative, "lib.attacks") == {
        "lib",
        "lib._checks",
        "lib.data",
        "lib.data.MNIST",
    }
    assert rc.imported_modules(relative, "lib", is_package=True) == {
        "lib",
        "lib._checks",
        "lib.data",
        "lib.data.MNIST",
    }
    assert rc.imported_modules("from ..c import C", "lib.sub.m") == {"lib", "lib.c", "lib.c.C"}


def test_static_dependencies_cover_what_the_chapters_really_import(tmp_path):
    """Import each real chapter's imports in a fresh interpreter: every lib module Python loads
    is among the files in the chapter's key."""
    probe = textwrap.dedent("""\
        import ast, json, sys
        sys.path.insert(0, sys.argv[1])
        out = {}
        for stem, cells in json.loads(sys.stdin.read()).items():
            for name in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
                del sys.modules[name]
            for cell in cells:
                for node in ast.walk(ast.parse(cell)):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        exec(compile(ast.Module([node], []), stem, "exec"), {})
            out[stem] = sorted(m.__file__ for n, m in sys.modules.items()
                               if (n == "lib" or n.startswith("lib.")) and getattr(m, "__file__", None))
        print(json.dumps(out))
    """)
    cells = {stem: rc.chapter_code(stem) for stem in rc.chapters()}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT)],
        input=json.dumps(cells),
        text=True,
        capture_output=True,
        check=True,
        cwd=tmp_path,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(rc.chapters())
    for stem, files in loaded.items():
        static = {p.resolve() for p in rc.lib_dependencies(stem)}
        really = {Path(f).resolve() for f in files if Path(f).resolve().is_relative_to(ROOT / "lib")}
        assert really, stem
        assert really <= static, (stem, sorted(really - static))


def test_real_chapters_depend_on_their_lib_modules_only(tmp_path):
    """On a copy of this repository: editing a module no chapter imports executes nothing, and
    editing the module every chapter imports executes every chapter."""
    for name in ("notebooks", "lib"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("profiles.yml", "requirements.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    tree = rc.Tree(tmp_path)
    everything = rc.chapters(tree)
    assert build(tree) == everything
    imported = set().union(*({p.name for p in rc.lib_dependencies(s, tree)} for s in everything))
    for path in sorted(tree.lib.glob("*.py")):
        if path.name not in imported:
            edit(path)
    assert build(tree) == []
    edit(tree.lib / "profiles.py")
    assert build(tree) == everything
    users = [s for s in everything if tree.lib / "_checks.py" in rc.lib_dependencies(s, tree)]
    edit(tree.lib / "_checks.py")
    assert build(tree) == users
