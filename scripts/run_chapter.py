"""Execute chapters of the book with papermill, using the parameters of a profile.

    python scripts/run_chapter.py 01 --profile ci -p mc_samples 500
    python scripts/run_chapter.py all --profile full

A chapter is named by its number or its file stem (``01`` or ``01_smoothing``). Its jupytext
source ``notebooks/<stem>.md`` is converted to a notebook, executed by papermill (kernel
``python3``, the one of this virtual environment) with the profile's values from
``profiles.yml`` plus any ``-p name value`` overrides, and written, with its outputs, to
``book/chapters/<stem>.ipynb``, where jupyter-book picks it up. On a failure the partly
executed notebook is still written there (papermill marks the failing cell), and the command
exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib import profiles  # noqa: E402

SOURCES = ROOT / "notebooks"
OUT = ROOT / "book" / "chapters"


def chapters() -> list[str]:
    """Stems of every chapter source, in order."""
    return sorted(p.stem for p in SOURCES.glob("[0-9][0-9]_*.md"))


def resolve(name: str) -> list[str]:
    if name == "all":
        return chapters()
    hits = [c for c in chapters() if c == name or c.split("_", 1)[0] == name.zfill(2)]
    if len(hits) != 1:
        raise SystemExit(f"no unique chapter {name!r}; chapters are: {', '.join(chapters())}")
    return hits


def run(stem: str, profile: str, overrides: dict[str, object]) -> Path:
    params = profiles.parameters(stem, profile)
    unknown = set(overrides) - set(params)
    if unknown:
        raise SystemExit(f"{stem} has no parameter(s) {sorted(unknown)}; it takes {sorted(params)}")
    params.update(overrides)
    params["profile"] = profile if not overrides else f"{profile}+overrides"
    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / f"{stem}.source.ipynb"
    target = OUT / f"{stem}.ipynb"
    nb = jupytext.read(SOURCES / f"{stem}.md")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, source)
    print(f"[{stem}] profile {profile}: {params}", flush=True)
    # Progress bars are for people at a terminal; in the rendered book they are noise.
    os.environ.setdefault("TQDM_DISABLE", "1")
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(source),
            str(target),
            parameters=params,
            kernel_name="python3",
            cwd=str(ROOT),
            progress_bar=False,
            log_output=False,
        )
    finally:
        source.unlink(missing_ok=True)
        _hide_injected_parameters(target)
    print(f"[{stem}] done in {time.perf_counter() - start:.1f} s -> {target.relative_to(ROOT)}", flush=True)
    return target


def _hide_injected_parameters(path: Path) -> None:
    """The chapter's banner states the values, so the cell papermill injects is not shown."""
    if not path.exists():
        return
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapter", help="chapter number or stem, or 'all'")
    ap.add_argument("--profile", default="full", choices=profiles.PROFILES)
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override one parameter (value parsed as YAML: 0.5, 100, true, [1, 2])")
    args = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, v in args.p}
    for stem in resolve(args.chapter):
        run(stem, args.profile, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
