"""Ruff on the code cells of the chapter sources, with findings at their lines in the ``.md`` file.

    python scripts/lint_notebooks.py                          # every notebooks/*.md
    python scripts/lint_notebooks.py notebooks/03_labelflip.md

Each jupytext MyST source is read as a notebook and handed to ``ruff check`` on standard input
as ``notebooks/<stem>.ipynb``, so ruff lints it as a notebook (imports at the top of any cell,
magics understood) with pyproject.toml's settings, per-file ignores included. Each finding is
printed as ``notebooks/<stem>.md:LINE:COL: CODE message``. Exits 1 when there is any finding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]


def md_line(md_lines: list[str], cell_source: str, after: int) -> int:
    """0-based line of the md file where a cell's source starts (searching from ``after``)."""
    src = cell_source.split("\n")
    for i in range(after, len(md_lines) - len(src) + 1):
        if md_lines[i : i + len(src)] == src:
            return i
    raise LookupError(f"cell source not found in the md file after line {after + 1}:\n{cell_source}")


def lint(path: Path) -> list[str]:
    """Ruff's findings on one chapter source, as ``path:line:col: CODE message`` lines."""
    path = path.resolve()
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    nb = jupytext.read(path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--output-format",
            "json",
            "--exit-zero",
            "--stdin-filename",
            str(path.with_suffix(".ipynb")),
            "-",
        ],
        input=jupytext.writes(nb, fmt="ipynb"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ruff failed on {rel}:\n{proc.stderr}")
    md_lines = path.read_text().split("\n")
    starts, pos = {}, 0  # cell index (1-based, as ruff counts) -> its first line in the md file
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code" and cell.source.strip():
            starts[index] = pos = md_line(md_lines, cell.source, pos)
    out = []
    for f in sorted(json.loads(proc.stdout), key=lambda f: (f["cell"], f["location"]["row"])):
        line = starts[f["cell"]] + f["location"]["row"]
        out.append(f"{rel}:{line}:{f['location']['column']}: {f['code']} {f['message']}")
    return out


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
    findings = [line for p in paths for line in lint(p)]
    print("\n".join(findings) if findings else f"ruff: {len(paths)} chapter source(s), no finding")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
