"""scripts/code_ratio.py counts code and prose before the heading ``## Exercises`` only, also when
the heading shares a Markdown cell with the prose before it or follows a label."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("code_ratio", ROOT / "scripts" / "code_ratio.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_exercises_are_not_counted_whatever_cell_holds_the_heading(tmp_path):
    src = tmp_path / "01_x.md"
    src.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "    format_version: 0.13\nkernelspec:\n  display_name: Python 3\n  language: python\n"
        "  name: python3\n---\n\n"
        "# T\n\nabcde\n\n```{code-cell} ipython3\nx = 1\n```\n\n"
        "more\n\n(ex-x)=\n## Exercises\n\nlong exercise text\n\n"
        "```{code-cell} ipython3\ny = 22222\n```\n"
    )
    code, prose = _module().ratio(src)
    assert code == len("x = 1")
    assert prose == len("# T\n\nabcde") + len("more\n\n(ex-x)=\n")
