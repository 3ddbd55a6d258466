"""Characters of code over characters of prose in each chapter, before its exercises.

    python scripts/code_ratio.py            # the table
    python scripts/code_ratio.py --max 1.0  # exit 1 if a chapter is above 1.0

The chapters are read with jupytext, as the build reads them; code is the source of the code
cells (hidden ones included: a reader who opens the notebook sees them), prose the source of
the Markdown cells, both up to the heading ``## Exercises``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parent.parent


def ratio(path: Path) -> tuple[int, int]:
    """(code characters, prose characters) of one chapter source before ``## Exercises``."""
    code = prose = 0
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "code":
            code += len(cell.source)
        elif cell.cell_type == "markdown":
            head, found, _ = cell.source.partition("## Exercises")
            prose += len(head if found else cell.source)
            if found:  # the heading may share a cell with the prose before it, or follow a label
                break
    return code, prose


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=float, default=None, help="fail when a chapter's ratio exceeds this")
    args = ap.parse_args(argv)
    worst = 0.0
    print(f"{'chapter':<22} {'code':>7} {'prose':>7} {'ratio':>6}")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md")):
        code, prose = ratio(path)
        r = code / max(prose, 1)
        worst = max(worst, r)
        print(f"{path.stem:<22} {code:>7} {prose:>7} {r:>6.2f}")
    return 1 if args.max is not None and worst > args.max else 0


if __name__ == "__main__":
    sys.exit(main())
