"""Execute chapters of the book with papermill, using the parameters of a profile.

    python scripts/run_chapter.py 01 --profile ci -p mc_samples 500
    python scripts/run_chapter.py all --profile full [--force] [--dry-run]

A chapter is named by its number or its file stem (``01`` or ``01_smoothing``). Its jupytext
source ``notebooks/<stem>.md`` is converted to a notebook, executed by papermill (kernel
``python3``, the one of this virtual environment) with the profile's values from
``profiles.yml`` plus any ``-p name value`` overrides, and written, with its outputs, to
``book/chapters/<stem>.ipynb``, where jupyter-book picks it up. On a failure the partly
executed notebook is still written there (papermill marks the failing cell), and the command
exits non-zero.

``all`` executes only the chapters that are not up to date. A chapter's *key* is a hash of
everything its results depend on: its source ``notebooks/<stem>.md``; its resolved parameters
(the profile's values, any overrides, the profile name); the source of every ``lib/`` module it
imports, directly or through other ``lib`` modules (found statically, with ``ast``); and the lock
file ``requirements.txt``. When a chapter finishes without error the key is stored in the
executed notebook's metadata, together with the time it took and the machine it ran on. A
chapter is up to date when its executed notebook exists, finished without error and stores the
current key. ``--force`` executes every chapter; a chapter named explicitly is always executed.

Each chapter prints a line when it starts, with the time it took last time under the same
profile (kept in ``_build/chapter-times.json``), and one when it ends. A table of the times
closes the run and is written to ``_build/build-times.json``. Every run (but a dry run) then
rewrites the page "How this book was built" (``book/generated/build_info.md``, see
``build_info.py``).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import build_info  # noqa: E402

from lib import profiles  # noqa: E402

LIB = "lib"  # the package whose sources are part of a chapter's key
KEY_VERSION = 1  # bump when the way keys are computed changes: every chapter is then executed again
HIDDEN_TEST = "test-hidden"  # the tag of the autograder's hidden checks (see assignments.py)
RECORD = build_info.RECORD

# executor(source_ipynb, target_ipynb, parameters): executes the notebook, writes the target
Executor = Callable[[str, str, dict[str, Any]], Any]


@dataclass(frozen=True)
class Tree:
    """Where a book's files live; the repository by default, a copy of it in the tests."""

    root: Path = ROOT

    @property
    def sources(self) -> Path:
        return self.root / "notebooks"

    @property
    def out(self) -> Path:
        return self.root / "book" / "chapters"

    @property
    def lib(self) -> Path:
        return self.root / LIB

    @property
    def profiles_file(self) -> Path:
        return self.root / "profiles.yml"

    @property
    def lock(self) -> Path:
        return self.root / "requirements.txt"

    @property
    def build(self) -> Path:
        return self.root / "_build"


REPO = Tree()
SOURCES = REPO.sources
OUT = REPO.out


def chapters(tree: Tree = REPO) -> list[str]:
    """Stems of every chapter source, in order."""
    return sorted(p.stem for p in tree.sources.glob("[0-9][0-9]_*.md"))


def resolve(name: str, tree: Tree = REPO) -> list[str]:
    """The chapters ``name`` stands for: a number (``3`` or ``03``), a stem, or ``all``."""
    if name == "all":
        return chapters(tree)
    hits = [c for c in chapters(tree) if c == name or c.split("_", 1)[0] == name.zfill(2)]
    if len(hits) != 1:
        raise SystemExit(f"chapter: no unique chapter {name!r}; chapters are: {', '.join(chapters(tree))}")
    return hits


def parameters(stem: str, profile: str, overrides: dict[str, Any], tree: Tree = REPO) -> dict[str, Any]:
    """The values papermill injects: the profile's, then the overrides, then the profile name
    (``ci+overrides`` when anything was overridden)."""
    if profile not in profiles.PROFILES:
        raise SystemExit(f"--profile: unknown profile {profile!r}; choose one of {profiles.PROFILES}")
    data = profiles.load(tree.profiles_file)
    if stem not in (data[profile] or {}):
        raise SystemExit(f"chapter: {stem!r} has no entry in {tree.profiles_file.name}")
    params = dict(data[profile][stem] or {})
    unknown = set(overrides) - set(params)
    if unknown:
        raise SystemExit(f"-p: {stem} has no parameter(s) {sorted(unknown)}; it takes {sorted(params)}")
    params.update(overrides)
    params["profile"] = profile if not overrides else f"{profile}+overrides"
    return params


# ---------------------------------------------------------------- what a chapter depends on


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _python_source(cell: str) -> str:
    """A code cell as plain Python (IPython magics and shell escapes turned into calls)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return "\n".join(line for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
    return TransformerManager().transform_cell(cell)


def imported_modules(code: str, module: str | None = None, is_package: bool = False) -> set[str]:
    """Dotted names of the ``lib`` modules that ``code`` may import, with their parent packages.

    ``module`` is the dotted name of the file ``code`` comes from (``lib.attacks``; ``lib`` for
    ``lib/__init__.py`` with ``is_package``), needed to resolve relative imports; None for a
    chapter. ``from lib import a`` yields ``lib`` and ``lib.a`` whether or not ``a`` is a module:
    names that are not modules are dropped when they are looked up as files.
    """
    return set(_imported_modules(code, module, is_package))


@functools.lru_cache(maxsize=1024)
def _imported_modules(code: str, module: str | None, is_package: bool) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                package = module.split(".") if is_package else module.split(".")[:-1]
                if node.level - 1 > len(package) - 1:
                    continue  # above the top of lib
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    out = set()
    for name in found:
        parts = name.split(".")
        if parts[0] == LIB:
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(out)


def module_file(name: str, tree: Tree = REPO) -> Path | None:
    """The file of the ``lib`` module ``name`` (``lib.x`` -> ``lib/x.py`` or ``lib/x/__init__.py``)."""
    path = tree.lib.joinpath(*name.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, tree: Tree) -> tuple[str, bool]:
    rel = path.relative_to(tree.lib).with_suffix("")
    parts = [LIB, *rel.parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def chapter_code(stem: str, tree: Tree = REPO) -> list[str]:
    """The code cells of a chapter source, as Python."""
    return list(_code_cells((tree.sources / f"{stem}.md").read_text()))


@functools.lru_cache(maxsize=64)
def _code_cells(text: str) -> tuple[str, ...]:
    nb = jupytext.reads(text, fmt="md")
    return tuple(_python_source(c.source) for c in nb.cells if c.cell_type == "code")


def lib_dependencies(stem: str, tree: Tree = REPO) -> list[Path]:
    """Every ``lib`` source file the chapter imports, directly or transitively, sorted. When some
    code cannot be parsed, every ``lib`` file counts (the safe side)."""
    everything = sorted(p for p in tree.lib.rglob("*.py") if "__pycache__" not in p.parts)
    names: set[str] = set()
    try:
        for cell in chapter_code(stem, tree):
            names |= imported_modules(cell)
    except SyntaxError:
        return everything
    files: set[Path] = set()
    todo = [f for f in (module_file(n, tree) for n in names) if f]
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        module, is_package = _module_name(path, tree)
        try:
            more = imported_modules(path.read_text(), module, is_package)
        except SyntaxError:
            return everything
        # importing lib.x.y runs the __init__ of every package above it
        more |= {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        todo += [f for f in (module_file(n, tree) for n in more) if f and f not in files]
    return sorted(files)


def inputs(stem: str, params: dict[str, Any], tree: Tree = REPO) -> dict[str, str]:
    """What the chapter's key is made of: a hash per input, named by its path."""
    rel = lambda p: p.relative_to(tree.root).as_posix()  # noqa: E731
    source = tree.sources / f"{stem}.md"
    out = {
        rel(source): _sha256(source.read_bytes()),
        "parameters": _sha256(json.dumps(params, sort_keys=True, default=repr).encode()),
        rel(tree.lock): _sha256(tree.lock.read_bytes()) if tree.lock.exists() else "missing",
    }
    for path in lib_dependencies(stem, tree):
        out[rel(path)] = _sha256(path.read_bytes())
    return out


def key_of(parts: dict[str, str]) -> str:
    return _sha256(json.dumps({"version": KEY_VERSION, "inputs": parts}, sort_keys=True).encode())


# ---------------------------------------------------------------- is a chapter up to date?


def _failed(nb: nbformat.NotebookNode) -> bool:
    if nb.metadata.get("papermill", {}).get("exception"):
        return True
    return any(out.get("output_type") == "error" for cell in nb.cells for out in cell.get("outputs", []))


def up_to_date(stem: str, parts: dict[str, str], tree: Tree = REPO) -> tuple[bool, str]:
    """Whether the executed notebook of ``stem`` is current for the inputs ``parts``, and why not."""
    target = tree.out / f"{stem}.ipynb"
    if not target.exists():
        return False, "not executed yet"
    try:
        nb = nbformat.read(target, as_version=4)
    except Exception:  # a truncated or foreign file is simply out of date
        return False, "executed notebook unreadable"
    if _failed(nb):
        return False, "last run failed"
    record = nb.metadata.get(RECORD)
    if not record or not record.get("key"):
        return False, "no key stored (the last run did not finish)"
    if record["key"] == key_of(parts):
        return True, "up to date"
    old = record.get("inputs") or {}
    changed = sorted(k for k in set(old) | set(parts) if old.get(k) != parts.get(k))
    return False, "changed: " + (", ".join(changed) if changed else "the way keys are computed")


# ---------------------------------------------------------------- times


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def estimate(stem: str, label: str, tree: Tree = REPO) -> float | None:
    """The measured time of the last successful run of ``stem`` under profile ``label``."""
    return _read_json(tree.build / "chapter-times.json").get(label, {}).get(stem)


def _remember_time(stem: str, label: str, seconds: float, tree: Tree) -> None:
    path = tree.build / "chapter-times.json"
    times = _read_json(path)
    times.setdefault(label, {})[stem] = round(seconds, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------- execution


def papermill_executor(source: str, target: str, params: dict[str, Any]) -> None:
    import papermill as pm

    # Progress bars are for people at a terminal; in the rendered book they are noise.
    os.environ.setdefault("TQDM_DISABLE", "1")
    pm.execute_notebook(
        source,
        target,
        parameters=params,
        kernel_name="python3",
        cwd=str(ROOT),
        progress_bar=False,
        log_output=False,
    )


def execute(
    stem: str,
    params: dict[str, Any],
    parts: dict[str, str],
    tree: Tree = REPO,
    executor: Executor = papermill_executor,
    environment: Callable[[], dict[str, Any]] = build_info.probe_environment,
) -> float:
    """Execute one chapter; on success store its key, time and environment in the notebook."""
    tree.out.mkdir(parents=True, exist_ok=True)
    source = tree.out / f"{stem}.source.ipynb"
    target = tree.out / f"{stem}.ipynb"
    nb = jupytext.read(tree.sources / f"{stem}.md")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, source)
    start = time.perf_counter()
    record = None
    try:
        executor(str(source), str(target), params)
        seconds = time.perf_counter() - start
        record = {
            "key": key_of(parts),
            "inputs": parts,
            "profile": params["profile"],
            "parameters": params,
            "seconds": round(seconds, 2),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "environment": environment(),
        }
    finally:
        source.unlink(missing_ok=True)
        _finish_notebook(target, record)
    return seconds


def _finish_notebook(path: Path, record: dict[str, Any] | None) -> None:
    """Hide the cell papermill injects (the chapter's banner states the values) and, after a
    successful run, store the record and drop the autograder's hidden checks: they ran and
    passed, and the notebook a reader downloads from the book must not carry them."""
    if not path.exists():
        return
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nb.metadata.pop(RECORD, None)
    if record is not None and not _failed(nb):
        nb.metadata[RECORD] = record
        nb.cells = [c for c in nb.cells if HIDDEN_TEST not in c.get("metadata", {}).get("tags", [])]
    nbformat.write(nb, path)


@dataclass
class Outcome:
    chapter: str
    status: str  # executed, skipped, failed, not run
    seconds: float = 0.0
    estimated_seconds: float | None = None
    reason: str = ""
    error: str = field(default="", repr=False)


def build(
    names: list[str],
    profile: str,
    overrides: dict[str, Any] | None = None,
    *,
    force: bool = False,
    explicit: bool = False,
    dry_run: bool = False,
    tree: Tree = REPO,
    executor: Executor = papermill_executor,
    environment: Callable[[], dict[str, Any]] | None = None,
    say: Callable[[str], None] = lambda s: print(s, flush=True),
) -> list[Outcome]:
    """Execute the chapters ``names`` that are not up to date (all of them with ``force`` or
    ``explicit``); stop at the first failure. One outcome per chapter, in order."""
    overrides = overrides or {}
    env_cache: dict[str, Any] = {}

    def env() -> dict[str, Any]:  # probed once, when the first chapter finishes
        if "value" not in env_cache:
            env_cache["value"] = (environment or build_info.probe_environment)()
        return env_cache["value"]

    # every chapter's parameters first, so that a bad override fails before anything runs
    plan = [(stem, parameters(stem, profile, overrides, tree)) for stem in names]
    outcomes: list[Outcome] = []
    failed = False
    width = len(str(len(plan)))
    for i, (stem, params) in enumerate(plan, 1):
        tag = f"[{i:>{width}}/{len(plan)} {stem}]"
        if failed:
            outcomes.append(Outcome(stem, "not run", reason="an earlier chapter failed"))
            continue
        parts = inputs(stem, params, tree)
        current, why = up_to_date(stem, parts, tree)
        if force or explicit:
            why = "forced" if force else "named explicitly"
        elif current:
            say(f"{tag} up to date, skipped")
            outcomes.append(Outcome(stem, "skipped", reason=why))
            continue
        guess = estimate(stem, params["profile"], tree)
        guess_text = build_info.format_seconds(guess) if guess is not None else "unknown"
        if dry_run:
            say(f"{tag} would execute with profile {params['profile']} (estimated {guess_text}; {why})")
            outcomes.append(Outcome(stem, "would execute", estimated_seconds=guess, reason=why))
            continue
        shown = {k: v for k, v in params.items() if k != "profile"}
        say(f"{tag} executing with profile {params['profile']} (estimated {guess_text}; {why}): {shown}")
        start = time.perf_counter()
        try:
            seconds = execute(stem, params, parts, tree, executor, env)
        except Exception as exc:  # the partly executed notebook marks the failing cell
            seconds = time.perf_counter() - start
            target = (tree.out / f"{stem}.ipynb").relative_to(tree.root)
            say(
                f"{tag} FAILED after {build_info.format_seconds(seconds)}; see {target}\n"
                f"{type(exc).__name__}: {exc}"
            )
            outcomes.append(Outcome(stem, "failed", seconds, guess, why, f"{type(exc).__name__}: {exc}"))
            failed = True
            continue
        _remember_time(stem, params["profile"], seconds, tree)
        target = (tree.out / f"{stem}.ipynb").relative_to(tree.root)
        say(f"{tag} executed in {build_info.format_seconds(seconds)} -> {target}")
        outcomes.append(Outcome(stem, "executed", seconds, guess, why))
    return outcomes


def report(
    outcomes: list[Outcome],
    profile: str,
    tree: Tree = REPO,
    say: Callable[[str], None] = lambda s: print(s, flush=True),
) -> Path:
    """Print the table of times and write it to ``_build/build-times.json``."""
    total = sum(o.seconds for o in outcomes)
    width = max([len("chapter"), *(len(o.chapter) for o in outcomes)])
    lines = [f"{'chapter':<{width}}  {'status':<8}  {'seconds':>8}", "-" * (width + 20)]
    lines += [f"{o.chapter:<{width}}  {o.status:<8}  {o.seconds:>8.1f}" for o in outcomes]
    lines += ["-" * (width + 20), f"{'total':<{width}}  {'':<8}  {total:>8.1f}"]
    say("\n".join(lines))
    path = tree.build / "build-times.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "profile": profile,
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "chapters": [
                    {
                        "chapter": o.chapter,
                        "status": o.status,
                        "seconds": round(o.seconds, 2),
                        "estimated_seconds": o.estimated_seconds,
                        "reason": o.reason,
                    }
                    for o in outcomes
                ],
                "executed": sum(o.status == "executed" for o in outcomes),
                "skipped": sum(o.status == "skipped" for o in outcomes),
                "total_seconds": round(total, 2),
            },
            indent=1,
        )
        + "\n"
    )
    say(f"Times written to {path.relative_to(tree.root)}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapter", help="chapter number or stem, or 'all'")
    ap.add_argument("--profile", default="full", choices=profiles.PROFILES)
    ap.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override one parameter (value parsed as YAML: 0.5, 100, true, [1, 2])",
    )
    ap.add_argument("--force", action="store_true", help="execute every chapter, up to date or not")
    ap.add_argument("--dry-run", action="store_true", help="say which chapters would be executed, and why")
    args = ap.parse_args(argv)
    overrides = {}
    for name, value in args.p:
        try:
            overrides[name] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            ap.error(f"-p {name}: {value!r} is not a YAML value ({exc})")
    stems = resolve(args.chapter)
    outcomes = build(
        stems, args.profile, overrides, force=args.force, explicit=args.chapter != "all", dry_run=args.dry_run
    )
    if args.dry_run:
        return 0
    report(outcomes, args.profile)
    build_info.write_page(REPO.root)
    failures = [o for o in outcomes if o.status == "failed"]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
