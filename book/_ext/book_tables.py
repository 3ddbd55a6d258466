"""Glued tables are numbered and referenced as tables.

A chapter shows a table (a glued pandas DataFrame) with the ``{glue:figure}`` directive, the
only way MyST-NB pastes a glued output with a caption and a number; Sphinx would then number it
"Fig. 2.3". Every such directive whose ``:name:`` starts with ``tab-`` is turned, at read time,
into a :class:`table_figure`: a figure node that Sphinx counts among the tables, so its caption
reads "Table 2.3" and ``{numref}`` writes "Table 2.3". It is drawn exactly as a figure.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.writers.html5 import HTML5Translator
from sphinx.writers.latex import LaTeXTranslator


class table_figure(nodes.figure):  # docutils names node classes in lower case
    """A figure that holds a table: numbered with the tables."""


class NumberGluedTablesAsTables(SphinxTransform):
    """Figures named ``tab-...`` become :class:`table_figure` before the numbers are assigned."""

    default_priority = 900

    def apply(self, **kwargs) -> None:
        for node in list(self.document.findall(nodes.figure)):
            if type(node) is nodes.figure and any(i.startswith("tab-") for i in node["ids"]):
                node.__class__ = table_figure


def setup(app):
    app.add_enumerable_node(
        table_figure,
        "table",
        None,
        html=(HTML5Translator.visit_figure, HTML5Translator.depart_figure),
        latex=(LaTeXTranslator.visit_figure, LaTeXTranslator.depart_figure),
    )
    app.add_transform(NumberGluedTablesAsTables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
