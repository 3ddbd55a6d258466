"""The page "How this book was built" (``book/generated/build_info.md``, git ignores it).

    python scripts/build_info.py                # (re)write the page from the executed chapters
    python scripts/build_info.py --environment  # print this machine and library versions as JSON

``scripts/run_chapter.py`` stores, in the metadata of every notebook it executes without error,
the profile and values the chapter ran with, how long it took, and the machine and library
versions it ran on (:func:`environment`). The page is assembled from those records, so it
describes the executed notebooks the book is rendered from, including those a later build left
as they were because nothing they depend on had changed. ``run_chapter.py`` rewrites the page
after every run and ``make html`` before every render, so it exists for any build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("book") / "generated" / "build_info.md"
# The metadata entry of an executed notebook that run_chapter.py writes when the chapter finishes.
RECORD = "randomized_smoothing_book"
# Distribution names and how the page names them.
PACKAGES = {
    "numpy": "NumPy",
    "scipy": "SciPy",
    "torch": "PyTorch",
    "torchvision": "torchvision",
    "jupyter-book": "Jupyter Book",
    "papermill": "papermill",
}
PROFILE_WORDS = {
    "ci": "small sizes, so that the whole book executes in well under half an hour on two CPU cores",
    "full": "the sizes of the papers",
}


# ---------------------------------------------------------------- the machine and the software


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_bytes() -> int | None:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    # a container may be allowed less than the machine has
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(limit).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < total:
            total = int(value)
    return total


def _gpus() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
    return out


def environment() -> dict[str, Any]:
    """This machine (processor, cores, memory, GPUs, system) and the versions of the main libraries."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    versions = {"Python": platform.python_version()}
    for dist, name in PACKAGES.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {
        "machine": {
            "processor": _cpu_model(),
            "cores": os.cpu_count(),
            "usable_cores": usable,
            "memory_bytes": _memory_bytes(),
            "gpus": _gpus(),
            "system": f"{platform.system()} {platform.release()} ({platform.machine()})",
        },
        "versions": versions,
    }


def probe_environment(python: str = sys.executable, timeout: float = 300) -> dict[str, Any]:
    """:func:`environment` as seen by ``python``, in a child process, so that the caller never holds
    a GPU context while a chapter's kernel runs. Empty when the probe fails."""
    try:
        done = subprocess.run(
            [python, str(Path(__file__).resolve()), "--environment"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, IndexError):
        return {}


# ---------------------------------------------------------------- the page


def format_seconds(seconds: float | None) -> str:
    """``8.3 s``, ``2 min 05 s``, ``1 h 03 min``."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _numbers(root: Path) -> dict[str, str]:
    """stem -> the chapter's number in the book ('6.1' for a section), from _toc.yml."""
    import yaml

    try:
        toc = yaml.safe_load((root / "_toc.yml").read_text()) or {}
    except OSError:
        return {}
    out: dict[str, str] = {}
    chapter = 0
    for part in toc.get("parts", []):
        if not part.get("numbered"):
            continue
        for entry in part.get("chapters", []):
            chapter += 1
            out[Path(entry["file"]).name] = str(chapter)
            for j, section in enumerate(entry.get("sections", []), 1):
                out[Path(section["file"]).name] = f"{chapter}.{j}"
    return out


def _title(source: Path) -> str:
    for line in source.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return source.stem


def records(root: Path = ROOT) -> list[tuple[str, dict[str, Any] | None]]:
    """(stem, record) for every chapter source, in order; None where the chapter has no executed
    notebook that finished without error."""
    import nbformat  # imported here: ``--environment`` needs nothing beyond the standard library and torch

    out = []
    for source in sorted((root / "notebooks").glob("[0-9][0-9]_*.md")):
        target = root / "book" / "chapters" / f"{source.stem}.ipynb"
        record = None
        if target.exists():
            try:
                record = nbformat.read(target, as_version=4).metadata.get(RECORD)
            except Exception:  # an unreadable notebook counts as not executed
                record = None
        out.append((source.stem, dict(record) if record else None))
    return out


def _profile_sentence(label: str) -> str:
    base, _, custom = label.partition("+")
    words = PROFILE_WORDS.get(base, "")
    text = f"the **`{base}`** profile" + (f" ({words})" if words else "")
    if custom:
        text += ", with some of its values changed for that run"
    return text


def _machine_lines(env: dict[str, Any]) -> list[str]:
    m = env.get("machine") or {}
    if not m:
        return ["- Not recorded."]
    cores = m.get("usable_cores") or m.get("cores")
    cores_text = f"{cores}" if cores else "unknown"
    if m.get("cores") and m.get("usable_cores") and m["usable_cores"] < m["cores"]:
        cores_text += f" (of the {m['cores']} of the host)"
    memory = f"{m['memory_bytes'] / 2**30:.1f} GiB" if m.get("memory_bytes") else "unknown"
    gpus = ", ".join(m.get("gpus") or []) or "none (everything ran on the CPU)"
    return [
        f"- **Processor:** {m.get('processor', 'unknown')}",
        f"- **CPU cores available:** {cores_text}",
        f"- **Memory:** {memory}",
        f"- **GPU:** {gpus}",
        f"- **Operating system:** {m.get('system', 'unknown')}",
    ]


def _version_lines(env: dict[str, Any]) -> list[str]:
    versions = env.get("versions") or {}
    if not versions:
        return ["Not recorded."]
    order = ["Python", *PACKAGES.values()]
    names = sorted(versions, key=lambda n: (order.index(n) if n in order else len(order), n))
    lines = ["| software | version |", "| --- | --- |"]
    lines += [f"| {name} | {versions[name]} |" for name in names]
    return lines


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render(root: Path = ROOT) -> str:
    """The page's Markdown."""
    numbers = _numbers(root)
    rows = records(root)
    done = [(stem, rec) for stem, rec in rows if rec]
    labels = sorted({rec.get("profile", "?") for _, rec in done})

    def name(stem: str) -> str:
        number = numbers.get(stem, "")
        return f"{number} {_title(root / 'notebooks' / f'{stem}.md')}".strip()

    lines = [
        "# How this book was built",
        "",
        "Every number, table and figure in the chapters was computed when the chapter's code was "
        "executed to produce the book; none is copied from the papers. This page records how: "
        "with which sizes, on which machine, with which software, and how long each chapter took. "
        "The note at the top of each chapter lists the exact values it ran with; "
        "`profiles.yml` holds them all.",
        "",
        "## Profile",
        "",
    ]
    if not done:
        lines.append("No chapter has been executed yet.")
    elif len(labels) == 1:
        lines.append(f"The chapters were executed with {_profile_sentence(labels[0])}.")
    else:
        lines.append(
            "The chapters were executed with different profiles; the table below gives the profile "
            "of each. " + " ".join(f"`{b}` stands for {PROFILE_WORDS[b]}." for b in PROFILE_WORDS)
        )

    # chapters that ran on the same machine with the same software are described together
    groups: dict[str, list[str]] = {}
    envs: dict[str, dict[str, Any]] = {}
    for stem, rec in done:
        env = rec.get("environment") or {}
        k = json.dumps(env, sort_keys=True)
        groups.setdefault(k, []).append(stem)
        envs[k] = env
    lines += ["", "## Machine and software", ""]
    if not groups:
        lines.append("Not recorded: no chapter has been executed yet.")
    for k, stems in groups.items():
        if len(groups) > 1:
            which = ", ".join(numbers.get(s, s) for s in stems)
            lines += [f"Chapters {which} were executed on this machine:", ""]
        else:
            lines += ["The chapters were executed on this machine:", ""]
        lines += _machine_lines(envs[k]) + ["", "with this software:", ""] + _version_lines(envs[k]) + [""]

    lines += [
        "## Time per chapter",
        "",
        "The time to execute each chapter's code from start to finish, loading the data included. "
        "Trained networks and sentence embeddings are kept in a cache between runs, so a time "
        "includes training them only when the cache was empty.",
        "",
    ]
    multi = len(labels) > 1
    header = "| chapter | " + ("profile | " if multi else "") + "date | time |"
    lines += [header, "| --- | " + ("--- | " if multi else "") + "--- | ---: |"]
    total = 0.0
    for stem, rec in rows:
        target = f"/book/chapters/{stem}"
        cell = (
            f"{{doc}}`{_escape(name(stem))} <{target}>`"
            if (root / "book" / "chapters" / f"{stem}.ipynb").exists()
            else _escape(name(stem))
        )
        if rec is None:
            lines.append(f"| {cell} | " + ("| " if multi else "") + "not executed | |")
            continue
        seconds = rec.get("seconds")
        total += seconds or 0.0
        when = (rec.get("finished") or "")[:10] or "unknown"
        profile = f"`{rec.get('profile', '?')}` | " if multi else ""
        lines.append(f"| {cell} | {profile}{when} | {format_seconds(seconds)} |")
    lines.append("| **total** | " + ("| " if multi else "") + f"| **{format_seconds(total)}** |")
    lines.append("")
    return "\n".join(lines)


def write_page(root: Path = ROOT) -> Path:
    """Write the page (only when its text changed, so an unchanged page is not rendered again)."""
    path = root / PAGE
    text = render(root)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--environment",
        action="store_true",
        help="print this machine and the library versions as JSON instead of writing the page",
    )
    args = ap.parse_args(argv)
    if args.environment:
        print(json.dumps(environment()))
        return 0
    path = write_page()
    print(f"Wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
