"""Sphinx hooks for the LaTeX build of the book (`make pdf`); the HTML build is left as it is.

The chapters are written for MathJax and the HTML theme, which accept a few things that LaTeX
and Sphinx's LaTeX writer do not. Each function below rewrites one of them in the book's
doctree just before the LaTeX writer sees it; the macros they use are in booklatex.sty.
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.math import wrap_displaymath

TAG = re.compile(r"\\tag\*?\{[^{}]*\}")


def move_tags_out_of_split(doctree: nodes.document, math_number_all: bool) -> None:
    """Sphinx puts every display formula into a `split` environment, where amsmath forbids
    `\\tag` (MathJax allows it). A formula with one `\\tag` is written here as Sphinx would write
    it, with the tag moved after the `split`, where amsmath sets it at the right margin as MathJax
    does. A formula with several tags is left to booklatex.sty's fallback."""
    for node in list(doctree.findall(nodes.math_block)):
        text = node.astext()
        tags = TAG.findall(text)
        if len(tags) != 1 or node.get("nowrap"):
            continue
        label = f"equation:{node['docname']}:{node['label']}" if node.get("label") else None
        wrapped = wrap_displaymath(text.replace(tags[0], ""), label, math_number_all)
        head, sep, end = wrapped.rpartition(r"\end{")
        node.children = [nodes.Text(f"{head}{tags[0]}\n{sep}{end}")]
        node["nowrap"] = True
        node["label"] = None  # written into the formula above, not again before it


def point_references_at_exercises(doctree: nodes.document, exercises: set[str]) -> None:
    """sphinx-exercise labels an exercise `exercise:<label>` in LaTeX, and rewrites references
    to it only within its own page; a reference from another page (the teaching page's table)
    would point at `<page>:<label>`, which does not exist. Such references are pointed at the
    exercise's label, with the text Sphinx gave them ("Exercise 1.1", not LaTeX's counter)."""
    for node in list(doctree.findall(nodes.reference)):
        uri = node.get("refuri", "")
        if not uri.startswith("%") or "#" not in uri:
            continue
        target = uri.split("#", 1)[1]
        if target not in exercises:
            continue
        new = nodes.reference("", "", *node.children, internal=True, refuri=f"%exercise#{target}")
        node.replace_self(new)


def number_only_numbered_parts(doctree: nodes.document, root: nodes.document) -> None:
    """The LaTeX writer numbers every page of the toc as a chapter; the HTML book numbers only
    the pages of numbered parts (the chapters), from 1. The first page of each part is preceded
    by the macro that turns numbering off or on (restarting the chapter counter)."""
    first = {}
    for toctree in root.findall(addnodes.toctree):
        docnames = [doc for _, doc in toctree["entries"] if doc]
        if docnames:
            first[docnames[0]] = r"\booknumbered" if toctree.get("numbered") else r"\bookunnumbered"
    for node in list(doctree.findall(addnodes.start_of_file)):
        if node["docname"] in first:
            macro = first.pop(node["docname"])
            node.parent.insert(node.parent.index(node), nodes.raw("", macro + "\n", format="latex"))


def keep_the_root_page_together(doctree: nodes.document) -> None:
    """The LaTeX writer puts the whole book where the root page has its table of contents, so
    the root page's text after it would come out after the last chapter. It is moved up, to
    before the first chapter."""
    wrappers = [node for node in doctree.findall(nodes.compound) if "toctree-wrapper" in node["classes"]]
    if not wrappers:
        return
    parent = wrappers[0].parent  # the root page's own (the first); a chapter's stay where they are
    wrappers = [wrapper for wrapper in wrappers if wrapper.parent is parent]
    last = max(parent.index(wrapper) for wrapper in wrappers)
    tail = parent.children[last + 1 :]
    del parent.children[last + 1 :]
    first = parent.index(wrappers[0])
    parent.children[first:first] = tail


def latex_only(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if app.builder.format != "latex":
        return
    move_tags_out_of_split(doctree, app.config.math_number_all)
    registry = getattr(app.env, "sphinx_exercise_registry", {})
    exercises = {label for label, entry in registry.items() if entry["type"].startswith("exercise")}
    point_references_at_exercises(doctree, exercises)
    if docname == app.config.root_doc:
        number_only_numbered_parts(doctree, app.env.get_doctree(docname))
        keep_the_root_page_together(doctree)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-resolved", latex_only)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
