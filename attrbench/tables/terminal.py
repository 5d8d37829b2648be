"""Plain-text tables for the terminal.

* :func:`render_text`: the table ``attrbench run`` prints, the headline metrics (declared by
  ``Metric.headline``) as ``value±half-width`` of the 95 % CI, fitted to :data:`TERMINAL_WIDTH`
  columns.
* :func:`text_table`: a generic left/right-aligned table with a dashed rule under the header
  (used by ``attrbench compare``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .summary import NOT_APPLICABLE, _arrow, _finite, fmt

__all__ = [
    "TERMINAL_WIDTH",
    "headline_metrics",
    "plus_minus",
    "render_text",
    "select_columns",
    "text_table",
]

#: Width the default terminal table of ``attrbench run`` fits in.
TERMINAL_WIDTH = 100


def headline_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics of ``metrics`` (in their order) whose registered class declares
    ``headline = True`` (:class:`attrbench.interfaces.Metric`); unregistered names are left
    out."""
    from ..catalog import METRICS
    from ..registry import RegistryError

    out = []
    for k in metrics:
        try:
            cls = METRICS.get(k)
        except RegistryError:
            continue
        if getattr(cls, "headline", False):
            out.append(k)
    return out


def select_columns(summary: Mapping[str, Any], columns: str | Sequence[str] | None) -> list[str]:
    """The metric columns of the terminal table.

    ``None`` (default): the headline metrics present in the run (every metric when the run has
    none of them); ``"all"``: every metric of the run; ``"a,b"`` or a list: those metrics, in
    that order (each must be in the run).
    """
    present = list(summary["metrics"])
    if columns is None:
        return headline_metrics(present) or present
    if isinstance(columns, str):
        if columns.strip() == "all":
            return present
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    chosen = list(dict.fromkeys(columns))
    if not chosen:
        raise ValueError("--columns expects 'all' or comma-separated metric names, got nothing")
    missing = [c for c in chosen if c not in present]
    if missing:
        raise ValueError(
            f"--columns: {', '.join(repr(c) for c in missing)} not in this run's metrics "
            f"({', '.join(present)})"
        )
    return chosen


def _decimals(v: float) -> int:
    """Decimals :func:`fmt` writes for ``v``."""
    return 0 if abs(v) >= 1000 else 1 if abs(v) >= 100 else 3


def plus_minus(value: Any, ci_low: Any, ci_high: Any) -> str:
    """``value±h``, ``h`` the half-width of the CI, in the value's decimals (``0.674±0.023``,
    ``366.9±6.1``); the value alone when the CI is undefined, ``–`` when the value is."""
    if not _finite(value):
        return fmt(value)
    if not (_finite(ci_low) and _finite(ci_high)):
        return fmt(value)
    d = _decimals(float(value))
    return f"{fmt(value)}±{(float(ci_high) - float(ci_low)) / 2:.{d}f}"


def _wrap_label(label: str, width: int) -> list[str]:
    """``label`` broken after underscores into lines of at most ``width`` characters where
    possible (a single piece longer than ``width`` stays whole)."""
    pieces = label.replace("_", "_\0").split("\0")
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + len(piece) <= width:
            lines[-1] += piece
        else:
            lines.append(piece)
    return lines


def render_text(
    summary: Mapping[str, Any],
    columns: str | Sequence[str] | None = None,
    width: int | None = TERMINAL_WIDTH,
) -> str:
    """The plain-text table ``attrbench run`` prints: method, ``n`` (and ``failed`` when a method
    failed on some image), then one column per metric with ``value±half-width of the 95 % CI``.

    ``columns``: see :func:`select_columns`. With the default (headline) columns the table is
    made to fit ``width`` characters: long metric names wrap after underscores onto several
    header lines, metric columns are separated by one space instead of two when needed, and as
    a last resort trailing columns are left out with a note that names them. An explicit
    ``columns`` choice is printed whole, however wide.
    """
    metrics = select_columns(summary, columns)
    limit = width if columns is None else None
    left_header, left_rows, cells = _text_cells(summary, metrics)
    left_w = [max(len(h), *(len(row[i]) for row in left_rows)) if left_rows else len(h)
              for i, h in enumerate(left_header)]
    heads, col_w = _metric_heads(summary, metrics, cells)
    shown, sep = _fit_columns(metrics, left_w, col_w, limit)
    dropped = [k for k in metrics if k not in shown]
    n_head = max([len(heads[k]) for k in shown] + [1])

    def line(left: list[str], right: list[str]) -> str:
        s = "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(left, left_w)))
        s += "".join(" " * sep + c.rjust(col_w[k]) for c, k in zip(right, shown))
        return s.rstrip()

    out = []
    for i in range(n_head):
        last = i == n_head - 1
        left = left_header if last else [""] * len(left_header)
        right = []
        for k in shown:
            h = heads[k]
            j = i - (n_head - len(h))  # header lines sit right above the rule
            right.append(h[j] if j >= 0 else "")
        out.append(line(left, right))
    out.append(line(["-" * w for w in left_w], ["-" * col_w[k] for k in shown]))
    for ri, row in enumerate(left_rows):
        out.append(line(row, [cells[k][ri] for k in shown]))
    notes = ["±: half-width of the 95 % bootstrap CI"]
    if len(metrics) < len(summary["metrics"]) or dropped:
        notes.append("more metrics: --columns all, or the run folder's summary.md")
    if dropped:
        notes.append(f"left out to fit {limit} columns: {', '.join(dropped)}")
    out.append("")
    for note in notes:
        out += textwrap.wrap(note, limit or TERMINAL_WIDTH, break_on_hyphens=False)
    return "\n".join(out)


def _text_cells(summary: Mapping[str, Any], metrics: list[str]
                ) -> tuple[list[str], list[list[str]], dict[str, list[str]]]:
    """The left header (``method``, ``n``, and ``failed`` when a method failed on some image),
    its rows, and per metric the cells ``value±h`` (or ``n/a``), one per method."""
    any_failed = any(summary["results"][m]["n_failed"] for m in summary["methods"])
    left_header = ["method", "n"] + (["failed"] if any_failed else [])
    left_rows = []
    cells: dict[str, list[str]] = {k: [] for k in metrics}
    for m in summary["methods"]:
        r = summary["results"][m]
        left_rows.append([m, str(r["n_images"])] + ([str(r["n_failed"])] if any_failed else []))
        for k in metrics:
            c = r["metrics"].get(k, {})
            cells[k].append(
                NOT_APPLICABLE
                if c.get("not_applicable")
                else plus_minus(c.get("value"), c.get("ci_low"), c.get("ci_high"))
            )
    return left_header, left_rows, cells


def _metric_heads(summary: Mapping[str, Any], metrics: list[str], cells: dict[str, list[str]]
                  ) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Per metric its header lines (``name ↑`` wrapped after underscores to the width of its
    widest cell) and its column width."""
    labels = {k: f"{k} {_arrow(summary['metrics'][k])}" for k in metrics}
    col_w = {}
    heads = {}
    for k in metrics:
        w = max([len(c) for c in cells[k]] + [max(len(p) for p in _wrap_label(labels[k], 1))])
        heads[k] = _wrap_label(labels[k], w)
        col_w[k] = max([w] + [len(p) for p in heads[k]])
    return heads, col_w


def _fit_columns(metrics: list[str], left_w: list[int], col_w: dict[str, int],
                 limit: int | None) -> tuple[list[str], int]:
    """The metric columns shown and their separator width: all with two spaces when they fit
    in ``limit`` (or there is none), else one space and trailing columns left out until they
    fit."""

    def total(keys: list[str], sep: int) -> int:
        return sum(left_w) + 2 * (len(left_w) - 1) + sum(col_w[k] + sep for k in keys)

    shown, sep = list(metrics), 2
    if limit is not None and total(shown, 2) > limit:
        sep = 1
        while shown and total(shown, sep) > limit:
            shown.pop()
    return shown, sep


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]],
               right: Collection[int] = frozenset()) -> str:
    """A plain-text table: the header, a rule of dashes, one line per row.

    Each column is as wide as its widest cell (header included) and separated by two spaces;
    the columns whose index is in ``right`` are right-aligned, the others left-aligned; trailing
    spaces are stripped from every line.
    """
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
