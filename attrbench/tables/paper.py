"""Renderers of the paper-style table across runs (``attrbench table``).

The table itself (:class:`attrbench.paper_table.PaperTable`: one row per metric and classifier,
one column per method, the best cell of each row marked) is built by
:func:`attrbench.paper_table.build_table`; this module only writes it as Markdown, LaTeX
(``booktabs``) or CSV (full precision, CI bounds as extra columns with ``ci``, a ``best``
column).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .summary import NOT_APPLICABLE, _finite, tex_escape

if TYPE_CHECKING:
    from ..paper_table import PaperTable

__all__ = ["FORMATS", "render"]

#: The formats :func:`render` writes.
FORMATS = ("md", "csv", "latex")


def _num(v: Any, digits: int) -> str:
    if not _finite(v):
        return "–"
    return f"{float(v):.{digits}f}"


def _half(c: Mapping[str, Any]) -> float | None:
    if _finite(c.get("ci_low")) and _finite(c.get("ci_high")):
        return (float(c["ci_high"]) - float(c["ci_low"])) / 2
    return None


def _arrow(higher: bool, latex: bool = False) -> str:
    if latex:
        return "$\\uparrow$" if higher else "$\\downarrow$"
    return "↑" if higher else "↓"


def _legend(table: PaperTable) -> list[str]:
    lines = [("**bold**: best value of the row (max for ↑, min for ↓; cost metrics unmarked; "
              "sanity rows only when no other method is in the row)")]
    if table.ci:
        lines.append("± h: half-width of the 95 % bootstrap CI over images")
    lines.append("–: undefined, or the method is not in that run")
    return lines + table.notes


def _render_md(table: PaperTable) -> str:
    multi = len(table.classifiers) > 1
    header = ["metric"] + (["classifier"] if multi else []) + table.methods
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i < (2 if multi else 1) else "---:"
                            for i in range(len(header))) + "|"]
    prev = None
    for r in table.rows:
        name = f"{r['metric']} {_arrow(r['higher_is_better'])}" if r["metric"] != prev else ""
        prev = r["metric"]
        cells = [name] + ([r["classifier"]] if multi else [])
        for m in table.methods:
            c = r["cells"][m]
            if c is None:
                cells.append("–")
                continue
            if c["not_applicable"]:
                cells.append(NOT_APPLICABLE)
                continue
            s = _num(c["value"], table.digits)
            if c["best"]:
                s = f"**{s}**"
            h = _half(c) if table.ci else None
            if h is not None and _finite(c["value"]):
                s += f" ± {h:.{table.digits}f}"
            cells.append(s)
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {x}" for x in _legend(table)) + "\n"


def _render_latex(table: PaperTable) -> str:
    multi = len(table.classifiers) > 1
    n_left = 2 if multi else 1
    head = ["Metric"] + (["Classifier"] if multi else []) + [tex_escape(m) for m in table.methods]
    lines = ["% attrbench table; needs \\usepackage{booktabs}",
             "\\begin{table}[t]", "\\centering", "\\small",
             f"\\begin{{tabular}}{{{'l' * n_left}{'c' * len(table.methods)}}}",
             "\\toprule", " & ".join(head) + " \\\\", "\\midrule"]
    prev = None
    for r in table.rows:
        if prev is not None and r["metric"] != prev:
            lines.append("\\midrule")
        name = (f"{tex_escape(r['metric'])} {_arrow(r['higher_is_better'], latex=True)}"
                if r["metric"] != prev else "")
        prev = r["metric"]
        cells = [name] + ([tex_escape(r["classifier"])] if multi else [])
        for m in table.methods:
            c = r["cells"][m]
            if c is None:
                cells.append("--")
                continue
            if c["not_applicable"]:
                cells.append(NOT_APPLICABLE)
                continue
            s = _num(c["value"], table.digits).replace("–", "--")
            if c["best"]:
                s = f"\\textbf{{{s}}}"
            h = _half(c) if table.ci else None
            if h is not None and _finite(c["value"]):
                s += f" {{\\scriptsize $\\pm$ {h:.{table.digits}f}}}"
            cells.append(s)
        lines.append(" & ".join(cells) + " \\\\")
    cap = ("Methods (columns) per metric" + (" and classifier" if multi else "")
           + "; bold: best of the row"
           + ("; $\\pm$: half-width of the 95\\,\\% bootstrap CI" if table.ci else "") + ".")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{cap}}}",
              "\\label{tab:attrbench-paper}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _render_csv(table: PaperTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["metric", "higher_is_better", "classifier"]
    for m in table.methods:
        header += [m] + ([f"{m}_ci_low", f"{m}_ci_high"] if table.ci else [])
    w.writerow(header + ["best"])

    def full(v: Any) -> str:
        return f"{float(v):.10g}" if _finite(v) else ""

    for r in table.rows:
        row = [r["metric"], str(r["higher_is_better"]).lower(), r["classifier"]]
        best = []
        for m in table.methods:
            c = r["cells"][m] or {}
            row.append(NOT_APPLICABLE if c.get("not_applicable") else full(c.get("value")))
            if table.ci:
                row += [full(c.get("ci_low")), full(c.get("ci_high"))]
            if c.get("best"):
                best.append(m)
        w.writerow(row + [";".join(best)])
    return buf.getvalue()


def render(table: PaperTable, fmt: str = "md") -> str:
    """The table as ``md``, ``csv`` or ``latex`` text."""
    renderers = {"md": _render_md, "csv": _render_csv, "latex": _render_latex}
    if fmt not in renderers:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return renderers[fmt](table)
