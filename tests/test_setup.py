"""The plumbing stays consistent: pins, conda environment, profiles and chapter parameters."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jupytext
import yaml

import lib
from lib import profiles

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_pip_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d for d in deps if isinstance(d, dict))["pip"]
    assert pip_section == ["-r requirements.txt"]


def test_every_requirement_is_pinned_and_direct_ones_are_locked():
    lock = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement: {line}"
            lock[name.lower().replace("_", "-")] = version
    for line in (ROOT / "requirements.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name = re.split(r"[=<>\[ ]", line.strip())[0].lower().replace("_", "-")
            assert name in lock, f"{name} is a direct dependency but not in the lock"
            pin = line.strip().partition("==")[2]
            # the lock holds the version pinned here (local labels such as +cpu aside)
            assert not pin or lock[name].split("+")[0] == pin, f"{name}: {pin} here, {lock[name]} locked"


def test_lib_is_an_installed_package(tmp_path):
    """`pip install -e .` (make's set-up step) makes `import lib` work from any folder."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert importlib.metadata.version(project["name"]) == project["version"] == lib.__version__
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", "import lib; print(lib.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(proc.stdout.strip()) == ROOT / "lib" / "__init__.py"


def _parameters_cell(path: Path) -> dict:
    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    names = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: the parameters cell holds assignments only"
        names[node.targets[0].id] = ast.literal_eval(node.value)
    return names


def test_every_chapter_has_parameters_matching_both_profiles():
    data = profiles.load()
    chapters = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
    assert chapters
    toc = (ROOT / "_toc.yml").read_text()
    defaults = set()
    for path in chapters:
        params = _parameters_cell(path)
        default = params.pop("profile")
        defaults.add(default)
        for prof in profiles.PROFILES:
            assert set(data[prof][path.stem]) == set(params), (path.stem, prof)
        assert f"book/chapters/{path.stem}" in toc, f"{path.stem} is not in _toc.yml"
        # the defaults in the notebook are the values of the profile it names
        assert default in profiles.PROFILES and data[default][path.stem] == params, path.stem
    assert len(defaults) == 1, f"every chapter defaults to the same profile, not {sorted(defaults)}"


def test_profile_banner_names_the_sizes_without_build_commands():
    """The note atop a chapter says which profile and values produced it, for a reader: no
    Makefile syntax, and every value listed."""
    from lib import profiles

    text = profiles.banner("ci", n=10, q_grid=[0.1, 0.2]).data
    assert "**`ci`** profile" in text and "`n = 10`" in text and "`q_grid = [0.1, 0.2]`" in text
    assert "make " not in text and "PROFILE=" not in text and "NB=" not in text
    assert "the papers' sizes" in profiles.banner("full", n=1).data
