"""The ``ci`` / ``full`` parameter profiles of the book (``profiles.yml`` at the repository root).

``profiles.yml`` is the single source of truth: ``scripts/run_chapter.py`` reads a chapter's
parameters from it and papermill injects them into the chapter's ``parameters`` cell;
:func:`banner` prints, in the rendered chapter, which profile and values produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES_FILE = ROOT / "profiles.yml"
PROFILES = ("ci", "full")


def load(path: Path = PROFILES_FILE) -> dict[str, dict[str, dict[str, Any]]]:
    """All profiles: ``{profile: {chapter: {parameter: value}}}``, checked for consistency."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or set(data) != set(PROFILES):
        raise ValueError(f"{path} must define exactly the profiles {PROFILES}")
    chapters = {p: set(data[p] or {}) for p in PROFILES}
    if chapters["ci"] != chapters["full"]:
        raise ValueError(f"{path}: profiles list different chapters: {chapters}")
    for chapter in chapters["ci"]:
        keys = {p: set(data[p][chapter] or {}) for p in PROFILES}
        if keys["ci"] != keys["full"]:
            raise ValueError(f"{path}: chapter {chapter} has different parameters per profile: {keys}")
    return data


def parameters(chapter: str, profile: str) -> dict[str, Any]:
    """The parameters of ``chapter`` (notebook stem, e.g. ``01_smoothing``) under ``profile``."""
    data = load()
    if profile not in data:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    if chapter not in data[profile]:
        raise ValueError(f"chapter {chapter!r} has no entry in {PROFILES_FILE.name}")
    return dict(data[profile][chapter] or {})


def banner(profile: str, **params: Any):
    """A note for the top of a rendered chapter: the profile and the values it ran with."""
    from IPython.display import Markdown

    values = ", ".join(f"`{k} = {v!r}`" for k, v in params.items())
    kind = {"ci": "small sizes, for a quick build", "full": "the papers' sizes"}.get(profile, "custom sizes")
    return Markdown(
        f"```{{note}}\nThis chapter was executed with the **`{profile}`** profile ({kind}): {values}. "
        "The sizes of both profiles, `ci` and `full`, are listed in `profiles.yml`; the README explains "
        "how to rerun a chapter with other values.\n```"
    )
