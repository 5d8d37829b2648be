"""Tables of a run, and across runs: rendering only, from summary dicts and joined tables.

Everything here works from the summary dict that :func:`attrbench.results.summarize` builds (and
``summary.json`` stores), so tables can be rebuilt from a run folder without re-scoring. The
statistics behind the cells (bootstrap CIs, paired comparisons) are computed by
:mod:`attrbench.stats` when the summary is made; these modules only render them. Cost metrics
(``kind = "cost"``, :func:`cost_metrics`) are never tested.

* :mod:`.summary`: the per-run files ``summary.md``, ``summary.tex`` and ``summary.csv`` and
  the report's HTML tables (value and 95 % CI per cell, best value per column in bold, ``†``
  for a significant paired difference from the reference method).
* :mod:`.terminal`: the table ``attrbench run`` prints (:func:`render_text`: the headline
  metrics, declared by ``Metric.headline``, as ``value±half-width``, fitted to 100 columns) and a
  generic plain-text table (:func:`text_table`).
* :mod:`.paper`: the paper-style table across runs of ``attrbench table``
  (built by :mod:`attrbench.paper_table`).
* :mod:`.comparison`: the text of ``attrbench compare`` (the logic is in
  :mod:`attrbench.compare`).
"""

from __future__ import annotations

from .summary import (
    DAGGER,
    NOT_APPLICABLE,
    best_methods,
    cell_text,
    cost_metrics,
    fmt,
    render_csv,
    render_html,
    render_latex,
    render_markdown,
    render_paired_html,
    sanity_methods,
    summary_frame,
    tex_escape,
)
from .terminal import (
    TERMINAL_WIDTH,
    headline_metrics,
    plus_minus,
    render_text,
    select_columns,
    text_table,
)

__all__ = [
    "DAGGER",
    "NOT_APPLICABLE",
    "TERMINAL_WIDTH",
    "best_methods",
    "cell_text",
    "cost_metrics",
    "fmt",
    "headline_metrics",
    "plus_minus",
    "render_csv",
    "render_html",
    "render_latex",
    "render_markdown",
    "render_paired_html",
    "render_text",
    "sanity_methods",
    "select_columns",
    "summary_frame",
    "tex_escape",
    "text_table",
]
